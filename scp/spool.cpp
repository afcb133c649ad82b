#include "scp/spool.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <chrono>
#include <cstdlib>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>
#include <random>
#include <string_view>
#include <system_error>

#include <fmt/format.h>
#include <xxhash.h>

#include "dicom/check.h"
#include "dicom/log.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

// mkdir -p that fsyncs the parent of every directory it creates, so a new study folder survives
// a crash as well as the file in it.
void make_dirs_durable(const fs::path& dir) {
  if (fs::exists(dir)) return;
  make_dirs_durable(dir.parent_path());
  std::error_code ec;
  if (!fs::create_directory(dir, ec) && ec) throw std::system_error(ec, "create " + dir.string());
  fsync_path(dir.parent_path(), true);
}

}  // namespace

fs::path storage_root(const fs::path& configured) { return storage_root(configured, std::getenv("STATE_DIRECTORY")); }

fs::path storage_root(const fs::path& configured, const char* state_directory) {
  fs::path root = configured;
  if (state_directory && *state_directory && root.is_relative()) {
    const std::string_view dirs(state_directory);
    root = fs::path(dirs.substr(0, dirs.find(':'))) / root;  // systemd lists several with ':'
  }
  return fs::absolute(root);
}

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string path_component(const std::string& uid) {
  bool ok = !uid.empty() && uid.size() <= 64 && uid.front() != '.';
  for (char c : uid) ok = ok && ((c >= '0' && c <= '9') || c == '.');
  return ok ? uid : fmt::format("x{:016x}", fnv1a(uid));
}

namespace {

// Where a Part 10 file's data set starts: after the preamble, "DICM" and the meta group, whose
// length is the value of its first element (0002,0000) UL, bytes 140..143. Without a preamble: 0.
std::uint64_t data_set_offset(const unsigned char* head, std::size_t n) {
  if (n >= 144 && std::memcmp(head + 128, "DICM", 4) == 0 && head[132] == 0x02 && head[133] == 0 && head[134] == 0 &&
      head[135] == 0 && head[136] == 'U' && head[137] == 'L')
    return 144 + (std::uint64_t(head[140]) | std::uint64_t(head[141]) << 8 | std::uint64_t(head[142]) << 16 |
                  std::uint64_t(head[143]) << 24);
  return 0;
}

std::string hex128(const XXH128_hash_t& h) { return fmt::format("{:016x}{:016x}", h.high64, h.low64); }

}  // namespace

std::string content_hash(std::string_view part10) {
  const auto skip = std::min<std::uint64_t>(
      data_set_offset(reinterpret_cast<const unsigned char*>(part10.data()), part10.size()), part10.size());
  return hex128(XXH3_128bits(part10.data() + skip, part10.size() - skip));
}

std::string content_hash(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + file.string());
  XXH3_state_t* state = XXH3_createState();
  XXH3_128bits_reset(state);
  unsigned char head[144];
  const ssize_t got = ::pread(fd, head, sizeof head, 0);
  const std::uint64_t skip = data_set_offset(head, got > 0 ? static_cast<std::size_t>(got) : 0);
  std::vector<char> buf(1 << 20);
  off_t off = static_cast<off_t>(skip);
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      XXH3_freeState(state);
      ::close(fd);
      throw std::system_error(err, std::generic_category(), "read " + file.string());
    }
    if (n == 0) break;
    XXH3_128bits_update(state, buf.data(), static_cast<std::size_t>(n));
    off += n;
  }
  const XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  ::close(fd);
  return hex128(h);
}

void fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + p.string());
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "fsync " + p.string());
  }
  ::close(fd);
}

Spool::Spool(fs::path root, SpoolOptions options)
    : root_(std::move(root)),
      tmp_dir_(options.node.empty() ? root_ / "incoming" / ".tmp" : root_ / "incoming" / ".tmp" / options.node),
      options_(options) {
  fs::create_directories(tmp_dir_);
  std::size_t purged = 0;
  for (const auto& e : fs::directory_iterator(tmp_dir_)) {
    fs::remove_all(e.path());
    ++purged;
  }
  if (purged) pacsnode::component_logger("spool")->warn("removed {} partial file(s) left by an interrupted run", purged);
}

fs::path Spool::temp_path() {
  static std::atomic<std::uint64_t> counter{0};
  static const std::uint64_t salt = std::random_device{}();
  return tmp_dir_ / fmt::format("{}-{:x}-{}.part", ::getpid(), salt, counter.fetch_add(1));
}

fs::path Spool::instance_path(const dicom::InstanceHeader& h) const {
  return incoming() / path_component(h.study_uid) / path_component(h.series_uid) / (path_component(h.sop_instance_uid) + ".dcm");
}

void Spool::discard(const fs::path& tmp) noexcept {
  std::error_code ec;
  fs::remove(tmp, ec);
}

bool Spool::has_free_space(std::uint64_t bytes) const {
  struct statvfs st {};
  if (::statvfs(root_.c_str(), &st) != 0) return true;  // cannot tell: let the write decide
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize >= bytes;
}

StoredInstance Spool::inspect(const fs::path& tmp, std::uintmax_t min_expected_size, const std::string& origin) {
  using K = StoreFailure::Kind;
  StoredInstance out;
  try {
    std::error_code ec;
    out.size = fs::file_size(tmp, ec);
    if (ec) throw StoreFailure(K::out_of_resources, "received file is missing: " + ec.message());
    // A short file despite a good stream means the last buffered write failed (disk full).
    if (out.size < min_expected_size)
      throw StoreFailure(K::out_of_resources, fmt::format("only {} of {} bytes reached the disk", out.size, min_expected_size));
    try {
      // The structural scan first (inside read_instance_header): nothing reaches DCMTK's
      // recursive reader that could overflow its stack or make it allocate without bound.
      out.header = dicom::read_instance_header(tmp, options_.scan);
    } catch (const dicom::DicomError& e) {
      if (!has_free_space(1 << 20)) throw StoreFailure(K::out_of_resources, std::string("disk full: ") + e.what());
      reject(tmp, e.what(), origin);
      throw StoreFailure(K::bad_data, e.what());
    }
    out.path = instance_path(out.header);
  } catch (...) {
    discard(tmp);
    throw;
  }
  return out;
}

StoredInstance Spool::inspect(std::string_view part10, const std::string& origin) {
  StoredInstance out;
  out.size = part10.size();
  try {
    out.header = dicom::read_instance_header(reinterpret_cast<const std::uint8_t*>(part10.data()), part10.size(), options_.scan);
  } catch (const dicom::DicomError& e) {
    const fs::path tmp = temp_path();
    try {
      write_file(tmp, part10);
    } catch (const StoreFailure&) {  // cannot keep it: refused all the same
      throw StoreFailure(StoreFailure::Kind::bad_data, e.what());
    }
    reject(tmp, e.what(), origin);
    throw StoreFailure(StoreFailure::Kind::bad_data, e.what());
  }
  out.path = instance_path(out.header);
  return out;
}

void Spool::write_file(const fs::path& tmp, std::string_view bytes) {
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw StoreFailure(StoreFailure::Kind::out_of_resources, fmt::format("create {}: {}", tmp.string(), std::strerror(errno)));
  std::size_t done = 0;
  int err = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    discard(tmp);
    throw StoreFailure(StoreFailure::Kind::out_of_resources, fmt::format("write {}: {}", tmp.string(), std::strerror(err)));
  }
}

void Spool::place(const fs::path& tmp, const fs::path& path, bool durable) {
  try {
    if (durable) fsync_path(tmp, false);
    if (durable) make_dirs_durable(path.parent_path());
    else fs::create_directories(path.parent_path());
    fs::rename(tmp, path);
    if (durable) fsync_path(path.parent_path(), true);
  } catch (const std::system_error& e) {  // filesystem_error too: any failure here is the store's
    discard(tmp);
    throw StoreFailure(StoreFailure::Kind::out_of_resources, e.what());
  }
}

StoredInstance Spool::commit(const fs::path& tmp, std::uintmax_t min_expected_size, const std::string& origin) {
  StoredInstance out = inspect(tmp, min_expected_size, origin);
  place(tmp, out.path, true);
  return out;
}

namespace {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

void Spool::load_rejected() {
  if (rejected_loaded_) return;
  rejected_loaded_ = true;
  std::error_code ec;
  fs::create_directories(rejected_dir(), ec);
  std::vector<RejectedEntry> found;
  for (fs::directory_iterator it(rejected_dir(), ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".dcm") continue;
    std::error_code size_ec;
    const auto bytes = fs::file_size(it->path(), size_ec);
    found.push_back({it->path().stem().string(), size_ec ? 0 : static_cast<std::uint64_t>(bytes)});
  }
  // Names start with the time in milliseconds, zero-padded: name order is age order.
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.stem < b.stem; });
  for (auto& e : found) {
    rejected_bytes_ += e.bytes;
    rejected_.push_back(std::move(e));
  }
}

void Spool::evict_rejected() {
  std::size_t removed = 0;
  std::uint64_t removed_bytes = 0;
  while (!rejected_.empty() &&
         (rejected_.size() > options_.rejected_max_files || rejected_bytes_ > options_.rejected_max_bytes)) {
    const RejectedEntry& e = rejected_.front();
    std::error_code ec;
    fs::remove(rejected_dir() / (e.stem + ".dcm"), ec);
    fs::remove(rejected_dir() / (e.stem + ".reason.txt"), ec);
    rejected_bytes_ -= e.bytes;
    removed_bytes += e.bytes;
    ++removed;
    rejected_.pop_front();
  }
  if (removed > 0)
    pacsnode::component_logger("spool")
        ->warn("quarantine/rejected: removed the {} oldest file(s) ({:.1f} MB) to stay within {} files and {} MB "
               "(storage.rejected_max_files, rejected_max_mb)",
               removed, removed_bytes / 1e6, options_.rejected_max_files, options_.rejected_max_bytes >> 20);
}

void Spool::reject(const fs::path& file, const std::string& reason, const std::string& origin) noexcept {
  std::error_code ec;
  try {
    std::lock_guard lock(rejected_mutex_);
    load_rejected();
    const auto bytes = fs::file_size(file, ec);
    if (ec || options_.rejected_max_files == 0 || bytes > options_.rejected_max_bytes) {
      fs::remove(file, ec);  // cannot be kept within the budget
    } else {
      static std::atomic<std::uint64_t> counter{0};
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
      // Zero-padded time, then a counter: name order is arrival order.
      const std::string stem = fmt::format("{:013d}-{:010d}-{}", ms, counter.fetch_add(1), ::getpid());
      fs::rename(file, rejected_dir() / (stem + ".dcm"));
      std::ofstream(rejected_dir() / (stem + ".reason.txt"))
          << "reason: " << reason << "\nreceived: " << utc_now() << "\nfrom: " << (origin.empty() ? "-" : origin)
          << "\nbytes: " << bytes << "\n";
      rejected_.push_back({stem, static_cast<std::uint64_t>(bytes)});
      rejected_bytes_ += bytes;
    }
    evict_rejected();
  } catch (const std::exception& e) {
    pacsnode::component_logger("spool")->error("cannot keep a refused instance in quarantine/rejected: {}", e.what());
    fs::remove(file, ec);
  }
}

std::vector<fs::path> Spool::list_instances() const {
  std::vector<fs::path> files;
  const fs::path in = incoming();
  for (auto it = fs::recursive_directory_iterator(in); it != fs::recursive_directory_iterator(); ++it) {
    if (it->is_directory() && it->path() == in / ".tmp") {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && it->path().extension() == ".dcm") files.push_back(it->path());
  }
  return files;
}

}  // namespace scp
