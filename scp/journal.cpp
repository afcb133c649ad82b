#include "scp/journal.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>
#include <system_error>

#include <fmt/format.h>
#include <xxhash.h>

#include "dicom/log.h"

namespace fs = std::filesystem;

namespace scp {

static_assert(std::endian::native == std::endian::little, "the journal's integers are written in host order");

namespace {

constexpr std::uint64_t kBlock = 4096;         // segment header; records start on these boundaries
constexpr std::size_t kRecordHeader = 64;
constexpr char kSegmentMagic[8] = {'P', 'N', 'J', 'R', 'N', 'L', '0', '1'};
constexpr char kRecordMagic[4] = {'P', 'N', 'J', 'R'};

std::uint64_t align_up(std::uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

template <class T>
void put(char* at, T v) { std::memcpy(at, &v, sizeof v); }
template <class T>
T get(const char* at) {
  T v;
  std::memcpy(&v, at, sizeof v);
  return v;
}

[[noreturn]] void fail(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

// pwritev until everything is written.
void write_all(int fd, std::vector<iovec> iov, off_t offset, const std::string& what) {
  std::size_t first = 0;
  while (first < iov.size()) {
    const ssize_t n = ::pwritev(fd, iov.data() + first, static_cast<int>(iov.size() - first), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write " + what);
    if (n == 0) {
      errno = EIO;
      fail("write " + what);
    }
    offset += n;
    auto left = static_cast<std::size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < iov.size()) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
}

void read_all(int fd, char* buf, std::size_t n, off_t offset, const std::string& what) {
  while (n > 0) {
    const ssize_t got = ::pread(fd, buf, n, offset);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail("read " + what);
    if (got == 0) {
      errno = EIO;
      fail("read " + what + ": unexpected end");
    }
    buf += got;
    n -= static_cast<std::size_t>(got);
    offset += got;
  }
}

std::uint64_t body_hash(std::uint64_t generation, std::string_view meta, std::string_view payload) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset_withSeed(st, generation);
  XXH3_64bits_update(st, meta.data(), meta.size());
  XXH3_64bits_update(st, payload.data(), payload.size());
  const std::uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

std::string meta_text(const Journal::Meta& m) {
  return m.study_uid + '\n' + m.series_uid + '\n' + m.sop_instance_uid + '\n' + m.calling_ae + '\n';
}

std::optional<Journal::Meta> parse_meta(std::string_view text, std::int64_t received_ms) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string_view::npos; start = nl + 1)
    parts.emplace_back(text.substr(start, nl - start));
  if (parts.size() != 4 || start != text.size()) return std::nullopt;
  return Journal::Meta{parts[0], parts[1], parts[2], parts[3], received_ms};
}

// Real zeros over [0, size) (not fallocate): appends then change no file metadata, so their
// fdatasync flushes the data blocks and nothing else.
void write_zeros(int fd, std::uint64_t size, const std::string& what) {
  const std::vector<char> zeros(1 << 20, 0);
  for (std::uint64_t off = 0; off < size; off += zeros.size())
    write_all(fd, {{const_cast<char*>(zeros.data()), std::min<std::uint64_t>(zeros.size(), size - off)}}, static_cast<off_t>(off), what);
}

void write_segment_header(int fd, std::uint64_t generation, std::uint64_t size, const std::string& what) {
  char h[32] = {};
  std::memcpy(h, kSegmentMagic, 8);
  put<std::uint64_t>(h + 8, generation);
  put<std::uint64_t>(h + 16, size);
  put<std::uint64_t>(h + 24, XXH3_64bits(h, 24));
  write_all(fd, {{h, sizeof h}}, 0, what);
  if (::fdatasync(fd) != 0) fail("fdatasync " + what);
}

// The generation a segment header names, or nullopt when it is not one of ours.
std::optional<std::uint64_t> read_segment_header(int fd, std::uint64_t file_size) {
  if (file_size < kBlock) return std::nullopt;
  char h[32];
  if (::pread(fd, h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return std::nullopt;
  if (std::memcmp(h, kSegmentMagic, 8) != 0 || get<std::uint64_t>(h + 24) != XXH3_64bits(h, 24)) return std::nullopt;
  return get<std::uint64_t>(h + 8);
}

bool on_tmpfs(const fs::path& p) {
  struct statfs st {};
  return ::statfs(p.c_str(), &st) == 0 && st.f_type == TMPFS_MAGIC;
}

std::uint64_t free_bytes(const fs::path& p) {
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

bool same_content(const fs::path& file, std::string_view payload) {
  std::error_code ec;
  if (fs::file_size(file, ec) != payload.size() || ec) return false;
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::vector<char> buf(1 << 20);
  std::size_t off = 0;
  bool same = true;
  while (same && off < payload.size()) {
    const ssize_t n = ::pread(fd, buf.data(), std::min(buf.size(), payload.size() - off), static_cast<off_t>(off));
    if (n <= 0) {
      same = false;
      break;
    }
    same = std::memcmp(buf.data(), payload.data() + off, static_cast<std::size_t>(n)) == 0;
    off += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return same;
}

}  // namespace

struct Journal::Segment {
  fs::path path;
  int fd = -1;
  std::uint64_t generation = 1;
  std::uint64_t end = kBlock;     // where the next record goes; everything before it is written
  std::uint64_t synced = kBlock;  // everything before it is durable
  bool syncing = false;           // an fdatasync of it is under way
  std::size_t pending = 0;        // records appended whose spool files are not durable yet
  bool recycling = false;         // the checkpointer rewrites its header
  bool broken = false;            // a write or flush failed: not used again until the next start
  ~Segment() {
    if (fd >= 0) ::close(fd);
  }
};

Journal::Journal(Spool& spool, JournalOptions options)
    : spool_(spool), options_(options), dir_(options.node.empty() ? spool.root() / "journal" : spool.root() / "journal" / options.node) {
  auto log = pacsnode::component_logger("journal");
  bool want = options_.max_segments > 0 && options_.segment_bytes >= 4 * kBlock;
  if (want && on_tmpfs(spool_.root())) {
    want = false;
    log->info("storage is a tmpfs, where an fsync costs nothing: instances are committed straight into the spool");
  }
  std::error_code ec;
  if (want) fs::create_directories(dir_);
  // Every segment left by an earlier run is replayed, whatever the journal is set to now.
  std::vector<fs::path> found;
  if (fs::is_directory(dir_, ec))
    for (const auto& e : fs::directory_iterator(dir_)) {
      const auto name = e.path().filename().string();
      if (name.rfind("seg-", 0) == 0 && e.path().extension() == ".wal") found.push_back(e.path());
      else if (e.path().extension() == ".new") fs::remove(e.path(), ec);  // a segment being made when the run ended
    }
  std::sort(found.begin(), found.end());
  for (const auto& path : found) {
    auto s = std::make_unique<Segment>();
    s->path = path;
    s->fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (s->fd < 0) fail("open " + path.string());
    ++replay_.segments;
    replay_segment(*s);
    struct stat st {};
    ::fstat(s->fd, &st);
    if (want && static_cast<std::uint64_t>(st.st_size) == options_.segment_bytes && segments_.size() < options_.max_segments) {
      recycle(*s);
      segments_.push_back(std::move(s));
    } else {
      s.reset();
      fs::remove(path);
    }
  }
  if (!found.empty()) fsync_path(dir_, true);
  if (replay_.records > 0 || replay_.segments > 0)
    log->info("journal: {} segment(s), {} record(s) replayed, {} spool file(s) written back", replay_.segments, replay_.records,
              replay_.restored);
  if (!want) return;
  if (segments_.empty()) {
    try {
      if (!make_segment())
        log->warn("journal: no room for a {} MB segment beside storage.min_free_mb: instances are committed straight into the spool",
                  options_.segment_bytes >> 20);
    } catch (const std::exception& e) {
      log->warn("journal: cannot make a segment ({}): instances are committed straight into the spool", e.what());
    }
    if (segments_.empty()) return;
  }
  enabled_ = true;
  checkpointer_ = std::thread([this] { run_checkpointer(); });
}

Journal::~Journal() {
  if (checkpointer_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    checkpointer_.join();
  }
  {
    std::lock_guard lock(mutex_);
    active_ = nullptr;  // no append after this: the last checkpoint may recycle it too
  }
  try {
    checkpoint();
  } catch (const std::exception& e) {
    pacsnode::component_logger("journal")->error("journal: last checkpoint: {} (the next start replays it)", e.what());
  }
}

std::uint64_t Journal::max_payload() const {
  // At most half a segment, so that a lane does not leave most of one unused.
  return enabled_ ? options_.segment_bytes / 2 : 0;
}

void Journal::replay_segment(Segment& s) {
  struct stat st {};
  if (::fstat(s.fd, &st) != 0) fail("stat " + s.path.string());
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const auto gen = read_segment_header(s.fd, size);
  if (!gen) {
    s.generation = 0;  // not a segment of ours (or its header was cut): nothing in it counts
    return;
  }
  s.generation = *gen;
  std::vector<char> body;
  for (std::uint64_t pos = kBlock; pos + kRecordHeader <= size;) {
    char h[kRecordHeader];
    read_all(s.fd, h, sizeof h, static_cast<off_t>(pos), s.path.string());
    if (std::memcmp(h, kRecordMagic, 4) != 0 || get<std::uint64_t>(h + 56) != XXH3_64bits(h, 56) ||
        get<std::uint64_t>(h + 8) != s.generation)
      break;
    const auto meta_len = get<std::uint32_t>(h + 4);
    const auto payload_len = get<std::uint64_t>(h + 16);
    if (meta_len > 4096 || payload_len > size || pos + kRecordHeader + meta_len + payload_len > size) break;
    body.resize(meta_len + payload_len);
    read_all(s.fd, body.data(), body.size(), static_cast<off_t>(pos + kRecordHeader), s.path.string());
    const std::string_view meta(body.data(), meta_len), payload(body.data() + meta_len, payload_len);
    if (body_hash(s.generation, meta, payload) != get<std::uint64_t>(h + 32)) break;
    const auto m = parse_meta(meta, get<std::int64_t>(h + 24));
    if (!m) break;
    ++replay_.records;
    restore(*m, payload);
    pos = align_up(pos + kRecordHeader + meta_len + payload_len);
  }
}

void Journal::restore(const Meta& meta, std::string_view payload) {
  dicom::InstanceHeader h;
  h.study_uid = meta.study_uid;
  h.series_uid = meta.series_uid;
  h.sop_instance_uid = meta.sop_instance_uid;
  const fs::path path = spool_.instance_path(h);
  if (same_content(path, payload)) {
    fsync_path(path, false);  // it may be in the page cache only
    fsync_path(path.parent_path(), true);
    return;
  }
  const fs::path tmp = spool_.temp_path();
  spool_.write_file(tmp, payload);
  spool_.place(tmp, path, true);  // fsyncs the file and its directories
  ++replay_.restored;
}

bool Journal::make_segment() {
  std::lock_guard one(make_mutex_);
  std::set<std::string> used;
  {
    std::lock_guard lock(mutex_);
    if (segments_.size() >= options_.max_segments) return false;
    for (const auto& s : segments_) used.insert(s->path.filename().string());
  }
  if (free_bytes(spool_.root()) < options_.segment_bytes + options_.keep_free_bytes) return false;
  std::string name;
  for (std::size_t k = 0;; ++k)
    if (!used.count(name = fmt::format("seg-{:04d}.wal", k))) break;
  const fs::path path = dir_ / name, tmp = dir_ / (name + ".new");
  auto s = std::make_unique<Segment>();
  s->path = path;
  s->fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (s->fd < 0) fail("create " + tmp.string());
  try {
    write_zeros(s->fd, options_.segment_bytes, tmp.string());
    write_segment_header(s->fd, 1, options_.segment_bytes, tmp.string());  // fdatasync: the zeros too
    if (::fsync(s->fd) != 0) fail("fsync " + tmp.string());
    fs::rename(tmp, path);
    fsync_path(dir_, true);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::lock_guard lock(mutex_);
  segments_.push_back(std::move(s));
  return true;
}

bool Journal::usable(const Segment& s) const { return &s != active_ && !s.recycling && !s.broken; }

Journal::Segment* Journal::free_segment() {
  for (auto& s : segments_)
    if (usable(*s) && s->pending == 0 && s->end == kBlock) return s.get();
  return nullptr;
}

std::optional<Journal::Ticket> Journal::append(const Meta& meta, std::string_view payload) {
  if (!enabled_ || payload.size() > max_payload()) return std::nullopt;
  const std::string m = meta_text(meta);
  if (m.size() > 4096) return std::nullopt;
  const std::uint64_t need = align_up(kRecordHeader + m.size() + payload.size());
  Segment* s = nullptr;
  std::uint64_t offset = 0;
  {
    std::lock_guard write(write_mutex_);
    for (bool made = false;;) {
      std::unique_lock lock(mutex_);
      s = active_;
      if (!s || s->broken || options_.segment_bytes - s->end < need) {
        // The active segment is full: the next empty one takes over, and the checkpointer frees
        // the full ones when fewer than two are left empty.
        s = free_segment();
        if (s) active_ = s;
        std::size_t empty = 0, used = 0;
        for (auto& x : segments_) {
          if (!usable(*x)) continue;
          empty += x->pending == 0 && x->end == kBlock;
          used += x->end > kBlock;
        }
        const std::size_t makeable = options_.max_segments - std::min(options_.max_segments, segments_.size());
        if (empty + makeable < 2 && used > 0) {  // short of segments: free the used ones
          hurry_ = true;
          wake_.notify_all();
        }
      }
      if (s) break;
      if (made) return std::nullopt;
      // None empty: make one here (the checkpointer usually has one ready before this happens).
      lock.unlock();
      try {
        made = make_segment();
      } catch (const std::exception& e) {
        pacsnode::component_logger("journal")->warn("journal: cannot make a segment: {}", e.what());
      }
      if (!made) return std::nullopt;
    }
    offset = s->end;
    char h[kRecordHeader] = {};
    std::memcpy(h, kRecordMagic, 4);
    put<std::uint32_t>(h + 4, static_cast<std::uint32_t>(m.size()));
    put<std::uint64_t>(h + 8, s->generation);
    put<std::uint64_t>(h + 16, payload.size());
    put<std::int64_t>(h + 24, meta.received_ms);
    put<std::uint64_t>(h + 32, body_hash(s->generation, m, payload));
    put<std::uint64_t>(h + 56, XXH3_64bits(h, 56));
    try {
      write_all(s->fd, {{h, sizeof h}, {const_cast<char*>(m.data()), m.size()}, {const_cast<char*>(payload.data()), payload.size()}},
                static_cast<off_t>(offset), s->path.string());
    } catch (const std::system_error& e) {
      std::lock_guard lock(mutex_);
      s->broken = true;  // what reached it is replayed at the next start; nothing more goes there
      throw StoreFailure(StoreFailure::Kind::out_of_resources, std::string("journal: ") + e.what());
    }
    std::lock_guard lock(mutex_);
    s->end = offset + need;
    ++s->pending;
    // Half full and no empty segment after it: the checkpointer makes one ahead of need.
    if (s->end > options_.segment_bytes / 2 && !free_segment() && segments_.size() < options_.max_segments) {
      want_spare_ = true;
      wake_.notify_all();
    }
  }
  sync_through(*s, offset + need);
  return Ticket{s};
}

void Journal::sync_through(Segment& s, std::uint64_t end) {
  std::unique_lock lock(mutex_);
  while (s.synced < end) {
    if (s.broken) throw StoreFailure(StoreFailure::Kind::out_of_resources, "journal: " + s.path.string() + " cannot be written");
    if (s.syncing) {  // the fdatasync under way may have started before this record was written
      synced_.wait(lock);
      continue;
    }
    s.syncing = true;
    const std::uint64_t upto = s.end;  // every record written so far
    lock.unlock();
    const int rc = ::fdatasync(s.fd);
    const int err = errno;
    lock.lock();
    s.syncing = false;
    if (rc != 0) {
      s.broken = true;
      synced_.notify_all();
      throw StoreFailure(StoreFailure::Kind::out_of_resources,
                         fmt::format("journal: fdatasync {}: {}", s.path.string(), std::strerror(err)));
    }
    s.synced = std::max(s.synced, upto);
    synced_.notify_all();
  }
}

void Journal::laid_out(const Ticket& t, const fs::path& file) {
  std::lock_guard lock(mutex_);
  laid_out_.emplace_back(t.segment, file);
}

std::size_t Journal::pending() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const auto& s : segments_) n += s->pending;
  return n;
}

void Journal::recycle(Segment& s) {
  // A new generation voids every record in it. A header that was not ours: all of it zeroed
  // first, since records of any generation might be in there.
  if (s.generation == 0) {
    struct stat st {};
    ::fstat(s.fd, &st);
    write_zeros(s.fd, static_cast<std::uint64_t>(st.st_size), s.path.string());
  }
  write_segment_header(s.fd, s.generation + 1, options_.segment_bytes, s.path.string());
  std::lock_guard lock(mutex_);
  s.generation += 1;
  s.end = s.synced = kBlock;
}

void Journal::checkpoint() {
  std::lock_guard one(checkpoint_mutex_);
  std::vector<std::pair<Segment*, fs::path>> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(laid_out_);
  }
  auto log = pacsnode::component_logger("journal");
  std::set<fs::path> dirs;
  std::vector<std::pair<Segment*, fs::path>> done, retry;
  for (auto& [seg, file] : batch) {
    try {
      fsync_path(file, false);
    } catch (const std::system_error& e) {
      if (e.code() == std::errc::no_such_file_or_directory) {  // deleted since (retention, a re-send): nothing to keep
        done.emplace_back(seg, file);
        continue;
      }
      log->error("journal: cannot make a spool file durable ({}); its record is kept", e.what());
      retry.emplace_back(seg, file);
      continue;
    }
    // The file's directory has its name; the two above it may have been made for it.
    dirs.insert(file.parent_path());
    dirs.insert(file.parent_path().parent_path());
    dirs.insert(file.parent_path().parent_path().parent_path());
    done.emplace_back(seg, file);
  }
  bool dirs_ok = true;
  for (const auto& d : dirs) {
    try {
      fsync_path(d, true);
    } catch (const std::system_error& e) {
      if (e.code() == std::errc::no_such_file_or_directory) continue;
      log->error("journal: cannot fsync {} ({}); the records are kept", d.string(), e.what());
      dirs_ok = false;
    }
  }
  if (!dirs_ok) {
    retry.insert(retry.end(), done.begin(), done.end());
    done.clear();
  }
  std::vector<Segment*> to_recycle;
  {
    std::lock_guard lock(mutex_);
    for (auto& [seg, file] : done) --seg->pending;
    laid_out_.insert(laid_out_.end(), retry.begin(), retry.end());
    for (auto& s : segments_)
      if (usable(*s) && s->pending == 0 && s->end > kBlock) {
        s->recycling = true;  // nobody appends while its header is rewritten
        to_recycle.push_back(s.get());
      }
    hurry_ = false;
  }
  for (Segment* s : to_recycle) {
    try {
      recycle(*s);
    } catch (const std::exception& e) {
      log->error("journal: cannot recycle {}: {}", s->path.filename().string(), e.what());
      std::lock_guard lock(mutex_);
      s->broken = true;
    }
    std::lock_guard lock(mutex_);
    s->recycling = false;
  }
}

void Journal::run_checkpointer() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    const bool woken = wake_.wait_for(lock, options_.checkpoint_interval, [this] { return stopping_ || hurry_ || want_spare_; });
    if (stopping_) break;
    const bool spare = want_spare_, due = !woken || hurry_;  // the interval is over, or segments run short
    want_spare_ = false;
    lock.unlock();
    try {
      // A spare first: an append that finds no empty segment goes the slow way. Making one is no
      // reason to checkpoint (more disk work in the middle of a burst).
      if (spare) make_segment();
      if (due) checkpoint();
    } catch (const std::exception& e) {
      pacsnode::component_logger("journal")->error("journal: checkpoint: {}", e.what());
    }
    lock.lock();
  }
}

}  // namespace scp
