#include "scp/retention.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <map>
#include <set>
#include <system_error>
#include <unordered_map>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dicom/log.h"
#include "scp/study_assembler.h"

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace scp {
namespace {

constexpr std::size_t idx(Area a) { return static_cast<std::size_t>(a); }
constexpr std::size_t idx(Hold h) { return static_cast<std::size_t>(h); }

// A job folder name: "s-" + 12 hex digits + "-g" + generation (see JobRunner::run).
bool is_job_folder_name(const std::string& n) {
  if (n.size() < 17 || n.compare(0, 2, "s-") != 0 || n.compare(14, 2, "-g") != 0) return false;
  for (std::size_t i = 2; i < 14; ++i)
    if (!std::isxdigit(static_cast<unsigned char>(n[i])) || std::isupper(static_cast<unsigned char>(n[i]))) return false;
  for (std::size_t i = 16; i < n.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(n[i]))) return false;
  return true;
}

// An error for the log: a file system error names its paths, and incoming paths are UIDs, so
// only its cause is kept.
std::string why(const std::exception& e) {
  if (const auto* f = dynamic_cast<const fs::filesystem_error*>(&e)) return f->code().message();
  return e.what();
}

std::int64_t mtime_ms(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return 0;
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
}

// Files and bytes below `dir` (regular files only).
AreaTally measure(const fs::path& dir) {
  AreaTally t;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code e2;
    if (it->is_regular_file(e2)) {
      ++t.files;
      t.bytes += it->file_size(e2);
    }
  }
  return t;
}

std::uint64_t trash_counter() {
  static std::atomic<std::uint64_t> n{0};
  return n.fetch_add(1);
}

// Where an area's deleted folders wait for their unlinking: on the area's own file system, under
// a name no other part of the node reads. incoming's goes to incoming/.tmp, which the spool
// empties at start and reconcile never indexes.
fs::path trash_path(const fs::path& root, Area a) {
  const auto name = fmt::format("retention-{}-{}", ::getpid(), trash_counter());
  return a == Area::incoming ? root / "incoming" / ".tmp" / name : root / kAreaNames[idx(a)] / ("." + name);
}

// What an earlier run could not unlink (it failed or the process ended mid-way).
void remove_leftovers(const fs::path& root) {
  std::error_code ec;
  for (const auto& [dir, prefix] : {std::pair{root / "incoming" / ".tmp", "retention-"}, std::pair{root / "outbound", ".retention-"},
                                    std::pair{root / "results", ".retention-"}, std::pair{root / "quarantine", ".retention-"}})
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().filename().string().rfind(prefix, 0) == 0) fs::remove_all(e.path(), ec);
}

void fsync_quietly(const fs::path& dir) {
  try {
    fsync_path(dir, true);
  } catch (const std::exception&) {  // durability of a deletion is best effort: a rerun finishes it
  }
}

// mkdir -p of `dir` below `base`, fsync'ing the parent of every directory it creates.
void make_dirs(const fs::path& dir) {
  if (fs::exists(dir)) return;
  make_dirs(dir.parent_path());
  std::error_code ec;
  if (!fs::create_directory(dir, ec) && ec) throw std::system_error(ec, "create a spool folder");
  fsync_quietly(dir.parent_path());
}

// Moves `from` to `to` unless `to` exists (then a newer file is in place and `from` is dropped).
bool put_back(const fs::path& from, const fs::path& to) {
  make_dirs(to.parent_path());
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) {
    fsync_quietly(to.parent_path());
    return true;
  }
  if (errno == EEXIST) return false;
  throw std::system_error(errno, std::generic_category(), "put a file back");
}

// Takes a study's files out of the spool: its folder incoming/<study>/ moves to `trash` in one
// rename; rows whose file lies elsewhere move one by one. Runs with the index lock held.
class StudyMove {
 public:
  StudyMove(fs::path dir, fs::path trash) : dir_(std::move(dir)), trash_(std::move(trash)) {}

  void move(const std::vector<InstanceFile>& rows) {
    fs::create_directories(trash_);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const fs::path p(rows[i].path);
      const fs::path rel = p.lexically_relative(dir_);
      if (!rel.empty() && *rel.begin() != "..") {
        expected_[rel.string()] = rows[i].received_ms;
      } else if (fs::exists(p)) {
        const fs::path to = trash_ / "elsewhere" / std::to_string(i);
        fs::create_directories(to.parent_path());
        fs::rename(p, to);
        elsewhere_.emplace_back(to, rows[i]);
      }
    }
    if (fs::exists(dir_)) fs::rename(dir_, trash_ / "study");
    fsync_quietly(dir_.parent_path());
    fsync_quietly(trash_);
  }

  // Puts back every file the forgotten rows do not account for: not listed, or written after its
  // row (re-sent under the same SOP Instance UID). Such a file was renamed into the spool after
  // the rows were read, and its sender is acknowledged once the index lock is released.
  std::uint64_t put_back_late() {
    std::uint64_t n = 0;
    const fs::path moved = trash_ / "study";
    std::vector<std::pair<fs::path, fs::path>> late;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(moved, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code e2;
      if (!it->is_regular_file(e2)) continue;
      const std::string rel = it->path().lexically_relative(moved).string();
      const auto e = expected_.find(rel);
      if (e == expected_.end() || mtime_ms(it->path()) > e->second) late.emplace_back(it->path(), dir_ / rel);
    }
    for (const auto& [from, to] : late) n += put_back(from, to);
    for (const auto& [from, row] : elsewhere_)
      if (mtime_ms(from) > row.received_ms) n += put_back(from, row.path);
    return n;
  }

  // The transaction did not commit: everything goes back.
  void undo() noexcept {
    try {
      const fs::path moved = trash_ / "study";
      std::vector<fs::path> files;
      std::error_code ec;
      for (auto it = fs::recursive_directory_iterator(moved, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
        if (std::error_code e2; it->is_regular_file(e2)) files.push_back(it->path());
      for (const auto& f : files) put_back(f, dir_ / f.lexically_relative(moved));
      for (const auto& [from, row] : elsewhere_) put_back(from, row.path);
    } catch (const std::exception& e) {
      pacsnode::component_logger("retention")->error("cannot put a study's files back after a failed commit: {}; they are in {}",
                                                     why(e), trash_.string());
    }
  }

 private:
  fs::path dir_, trash_;
  std::unordered_map<std::string, std::int64_t> expected_;  // path below dir_ -> received_ms of its row
  std::vector<std::pair<fs::path, InstanceFile>> elsewhere_;
};

struct Folder {
  fs::path path;
  std::int64_t mtime_ms = 0;
};

// Something a run may delete.
struct Item {
  Area area = Area::incoming;
  std::string study_uid;  // empty: an output folder that matches no job of the index
  int generation = 0;
  std::int64_t since_ms = 0;  // what its age counts from
  std::int64_t last_instance_ms = 0;  // incoming: the study as selected
  fs::path path;
  bool done = false;
};

class Run {
 public:
  Run(Index& index, fs::path root, const RetentionPolicy& p, const std::atomic<bool>* stop)
      : index_(index), root_(std::move(root)), p_(p), stop_(stop), log_(pacsnode::component_logger("retention")) {}

  RetentionReport operator()(std::int64_t now_ms) {
    const auto started = std::chrono::steady_clock::now();
    remove_leftovers(root_);
    select();
    const bool measured = p_.high_water_percent > 0 && p_.use_percent;
    if (measured) report_.use_before = p_.use_percent(root_);
    // 1. Age: each area by its own limit.
    for (auto& it : items_) {
      const auto keep = p_.keep[idx(it.area)].count();
      if (keep > 0 && it.since_ms <= now_ms - keep && !stopped()) remove(it);
    }
    // 2. High water: the oldest settled items of any area until use is below the mark.
    if (measured) {
      double use = p_.use_percent(root_);
      if (use >= p_.high_water_percent) {
        std::stable_sort(items_.begin(), items_.end(), [](const Item& a, const Item& b) { return a.since_ms < b.since_ms; });
        for (auto& it : items_) {
          if (use < p_.high_water_percent || stopped()) break;
          if (!it.done && remove(it)) use = p_.use_percent(root_);
        }
      }
      report_.use_after = use;
      report_.above_high_water = use >= p_.high_water_percent;
    } else if (p_.use_percent) {
      report_.use_after = p_.use_percent(root_);
    }
    // 3. Studies of which nothing is left on disk leave the index.
    if (!stopped()) forget_emptied();
    report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return report_;
  }

 private:
  bool stopped() const { return stop_ && stop_->load(); }
  bool settled(const RetentionStudy& s) const { return hold_of(s, p_.analysis_enabled) == Hold::none; }
  std::string tag(const std::string& study_uid, int generation) const {
    return fmt::format("{}-g{}", study_hash(index_.log_key(), study_uid), generation);
  }

  void select() {
    // Folders first, then the index: a job's row is written before its folders, so every folder
    // listed here whose job exists is matched below, and only true orphans are left over.
    std::array<std::map<std::string, Folder>, 4> folders;
    for (Area a : {Area::outbound, Area::results, Area::quarantine}) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(root_ / kAreaNames[idx(a)], ec)) {
        const std::string name = e.path().filename().string();
        if (std::error_code e2; e.is_directory(e2) && is_job_folder_name(name)) folders[idx(a)][name] = {e.path(), mtime_ms(e.path())};
      }
    }
    std::map<std::string, const RetentionStudy*> by_uid;
    studies_ = index_.retention_studies();
    for (const auto& s : studies_) {
      by_uid[s.study_uid] = &s;
      const Hold h = hold_of(s, p_.analysis_enabled);
      ++report_.held[idx(h)];
      if (h == Hold::none && s.instances > 0)
        items_.push_back({Area::incoming, s.study_uid, s.generation, s.last_instance_ms, s.last_instance_ms,
                          root_ / "incoming" / path_component(s.study_uid)});
    }
    for (const auto& j : index_.retention_jobs()) {
      const auto s = by_uid.find(j.study_uid);
      const bool ok = s != by_uid.end() && settled(*s->second);
      const std::string t = tag(j.study_uid, j.generation);
      for (Area a : {Area::outbound, Area::results, Area::quarantine}) {
        auto f = folders[idx(a)].find(t);
        if (f == folders[idx(a)].end()) continue;
        if (ok) items_.push_back({a, j.study_uid, j.generation, j.updated_ms, 0, f->second.path});
        folders[idx(a)].erase(f);  // matched: not an orphan, whether it may go or not
      }
    }
    for (Area a : {Area::outbound, Area::results, Area::quarantine})
      for (const auto& [name, f] : folders[idx(a)]) items_.push_back({a, {}, 0, f.mtime_ms, 0, f.path});
  }

  bool remove(Item& it) {
    try {
      it.done = it.area == Area::incoming ? remove_study_files(it) : remove_folder(it);
      return it.done;
    } catch (const std::exception& e) {
      it.done = true;  // not again in this run
      log_->error("cannot delete {} {}: {}", kAreaNames[idx(it.area)], label(it), why(e));
      return false;
    }
  }

  std::string label(const Item& it) const { return it.study_uid.empty() ? it.path.filename().string() : tag(it.study_uid, it.generation); }

  bool remove_study_files(const Item& it) {
    const fs::path trash = trash_path(root_, Area::incoming);
    StudyMove move(it.path, trash);
    std::uint64_t late = 0;
    const auto rows = index_.forget_instances(
        it.study_uid,
        [&](const RetentionStudy& s) { return settled(s) && s.last_instance_ms == it.last_instance_ms; },
        [&](const std::vector<InstanceFile>& r) {
          move.move(r);
          late = move.put_back_late();
        },
        [&](const std::vector<InstanceFile>&) { move.undo(); });
    if (!rows) {
      std::error_code ec;
      fs::remove_all(trash, ec);
      log_->debug("study {} changed since it was selected: kept", study_hash(index_.log_key(), it.study_uid));
      return false;
    }
    if (late) log_->warn("{} file(s) arrived while their study was being deleted: put back in the spool", late);
    report_.files_put_back += late;
    const AreaTally t = measure(trash);
    fs::remove_all(trash);
    count(Area::incoming, t);
    log_->debug("deleted incoming study {}: {} instance row(s), {} file(s), {} bytes", study_hash(index_.log_key(), it.study_uid),
                rows->size(), t.files, t.bytes);
    return true;
  }

  bool remove_folder(const Item& it) {
    if (it.area == Area::outbound && !it.study_uid.empty() &&
        !index_.forget_outputs(it.study_uid, it.generation, [&](const RetentionStudy& s) { return settled(s); }))
      return false;
    const fs::path trash = trash_path(root_, it.area);
    fs::rename(it.path, trash);
    const AreaTally t = measure(trash);
    fs::remove_all(trash);
    count(it.area, t);
    log_->debug("deleted {} {}: {} file(s), {} bytes", kAreaNames[idx(it.area)], label(it), t.files, t.bytes);
    return true;
  }

  void count(Area a, const AreaTally& t) {
    auto& d = report_.deleted[idx(a)];
    ++d.items;
    d.files += t.files;
    d.bytes += t.bytes;
  }

  void forget_emptied() {
    std::map<std::string, std::vector<int>> generations;
    for (const auto& j : index_.retention_jobs()) generations[j.study_uid].push_back(j.generation);
    for (const auto& s : index_.retention_studies()) {
      if (s.instances > 0 || !settled(s)) continue;
      bool left = false;
      for (int g : generations[s.study_uid])
        for (Area a : {Area::outbound, Area::results, Area::quarantine})
          left = left || fs::exists(root_ / kAreaNames[idx(a)] / tag(s.study_uid, g));
      if (left) continue;
      try {
        if (index_.forget_study(s.study_uid, [&](const RetentionStudy& now) { return settled(now); })) {
          ++report_.studies_forgotten;
          log_->debug("study {} forgotten: nothing of it is left on disk", study_hash(index_.log_key(), s.study_uid));
        }
      } catch (const std::exception& e) {
        log_->error("cannot forget study {}: {}", study_hash(index_.log_key(), s.study_uid), why(e));
      }
    }
  }

  Index& index_;
  fs::path root_;
  const RetentionPolicy& p_;
  const std::atomic<bool>* stop_;
  std::shared_ptr<spdlog::logger> log_;
  std::vector<RetentionStudy> studies_;
  std::vector<Item> items_;
  RetentionReport report_;
};

std::string megabytes(std::uint64_t bytes) { return fmt::format("{:.2f} MB", bytes / 1e6); }

}  // namespace

Hold hold_of(const RetentionStudy& s, bool analysis_enabled) {
  if (!s.complete) return Hold::open;
  // With analysis off, queued jobs never run: they do not hold the study.
  if (s.jobs_running > 0 || (analysis_enabled && s.jobs_pending > 0)) return Hold::analysing;
  if (analysis_enabled && (s.latest_job_state.empty() || s.latest_job_state == "pending" || s.latest_job_state == "running"))
    return Hold::not_analysed;
  if (s.outbox_pending > 0) return Hold::delivering;
  return Hold::none;
}

double file_system_use_percent(const fs::path& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return -1;
  const double used = static_cast<double>(st.f_blocks - st.f_bfree), avail = static_cast<double>(st.f_bavail);
  return used + avail > 0 ? 100.0 * used / (used + avail) : 0;
}

RetentionPolicy RetentionPolicy::from(const config::Config& cfg) {
  const auto& r = cfg.retention;
  RetentionPolicy p;
  const double days[] = {r.incoming_days, r.outbound_days, r.results_days, r.quarantine_days};
  for (std::size_t i = 0; i < 4; ++i) p.keep[i] = std::chrono::milliseconds(std::llround(days[i] * 86400e3));
  p.high_water_percent = r.high_water_percent;
  p.analysis_enabled = cfg.analysis.enabled;
  p.use_percent = file_system_use_percent;
  return p;
}

RetentionReport run_retention(Index& index, const fs::path& root, const RetentionPolicy& policy, std::int64_t now_ms,
                              const std::atomic<bool>* stop) {
  return Run(index, root, policy, stop)(now_ms);
}

std::string summary(const RetentionReport& r, const RetentionPolicy& p) {
  std::string areas;
  for (std::size_t a = 0; a < 4; ++a) {
    const auto& d = r.deleted[a];
    const char* unit = a == idx(Area::incoming) ? (d.items == 1 ? "study" : "studies") : (d.items == 1 ? "folder" : "folders");
    areas += fmt::format("{}{} {} {} ({} {}, {})", a ? ", " : "", kAreaNames[a], d.items, unit, d.files,
                         d.files == 1 ? "file" : "files", megabytes(d.bytes));
  }
  const std::string use = r.use_after < 0 ? std::string("storage use unknown")
                                          : fmt::format("storage {:.1f}% used", r.use_after);
  const std::string mark = p.high_water_percent > 0 ? fmt::format("high-water {}%", p.high_water_percent) : "high-water off";
  return fmt::format("retention run: deleted {}; {} study(ies) forgotten; held {} open, {} not analysed, {} delivery pending; "
                     "{} ({}) in {:.2f} s",
                     areas, r.studies_forgotten, r.held[idx(Hold::open)],
                     r.held[idx(Hold::analysing)] + r.held[idx(Hold::not_analysed)], r.held[idx(Hold::delivering)], use, mark,
                     r.seconds);
}

std::string to_json(const RetentionStats& s) {
  nlohmann::ordered_json areas = nlohmann::ordered_json::object();
  for (std::size_t a = 0; a < kAreaNames.size(); ++a)
    areas[kAreaNames[a]] = {{"items", s.deleted[a].items}, {"files", s.deleted[a].files}, {"bytes", s.deleted[a].bytes}};
  const nlohmann::ordered_json j{{"runs", s.runs},
                                 {"failed_runs", s.failed_runs},
                                 {"last_run_ms", s.last_run_ms},
                                 {"last_run_seconds", std::round(s.last_run_seconds * 1000) / 1000},
                                 {"use_percent", std::round(s.use_percent * 10) / 10},
                                 {"above_high_water", s.above_high_water},
                                 {"held_not_analysed", s.held_not_analysed},
                                 {"held_delivering", s.held_delivering},
                                 {"studies_forgotten", s.studies_forgotten},
                                 {"deleted", areas},
                                 {"last_error", s.last_error}};
  // Invalid UTF-8 in an OS error text is replaced, not thrown.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

Retention::Retention(asio::io_context& io, Index& index, fs::path root, RetentionPolicy policy, std::chrono::seconds interval)
    : strand_(asio::make_strand(io)),
      timer_(strand_),
      index_(index),
      root_(std::move(root)),
      policy_(std::move(policy)),
      interval_(interval) {}

Retention::~Retention() { stop(); }

void Retention::start() {
  asio::post(strand_, [this] { launch(); });
}

void Retention::stop() {
  if (stopping_.exchange(true)) return;
  asio::post(strand_, [this] { timer_.cancel(); });
  pool_.join();
}

void Retention::update(RetentionPolicy policy, std::chrono::seconds interval) {
  {
    std::lock_guard lock(mutex_);
    policy_ = std::move(policy);
    interval_ = interval;
  }
  asio::post(strand_, [this] {
    if (waiting_) arm();  // a new interval counts from now; a run in progress arms the timer itself
  });
}

RetentionStats Retention::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Retention::launch() {
  waiting_ = false;
  if (stopping_) return;
  asio::post(pool_, [this] {
    run_once();
    asio::post(strand_, [this] { arm(); });
  });
}

void Retention::arm() {
  if (stopping_) return;
  std::chrono::seconds every;
  {
    std::lock_guard lock(mutex_);
    every = interval_;
  }
  waiting_ = true;
  timer_.expires_after(every);  // cancels a wait already armed
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) launch();
  });
}

void Retention::run_once() {
  auto log = pacsnode::component_logger("retention");
  RetentionPolicy policy;
  std::chrono::seconds every;
  {
    std::lock_guard lock(mutex_);
    policy = policy_;
    every = interval_;
  }
  try {
    // A cluster runs retention on one node at a time: the holder of the "retention" lease, which
    // it renews at each run; when it dies another node takes the lease after it expires.
    if (index_.shared() && !index_.hold_lease("retention", wall_ms(), (2 * every.count() + 60) * 1000)) {
      log->debug("retention: another node of the cluster runs it");
      return;
    }
    const RetentionReport r = run_retention(index_, root_, policy, wall_ms(), &stopping_);
    log->info("{}", summary(r, policy));
    if (r.above_high_water)
      log->warn("retention: storage still {:.1f}% used, above the high-water mark of {}%: nothing settled is left to delete "
                "({} study(ies) not yet analysed, {} with deliveries pending, {} open)",
                r.use_after, policy.high_water_percent, r.held[idx(Hold::analysing)] + r.held[idx(Hold::not_analysed)],
                r.held[idx(Hold::delivering)], r.held[idx(Hold::open)]);
    std::lock_guard lock(mutex_);
    for (std::size_t a = 0; a < 4; ++a) {
      stats_.deleted[a].items += r.deleted[a].items;
      stats_.deleted[a].files += r.deleted[a].files;
      stats_.deleted[a].bytes += r.deleted[a].bytes;
    }
    ++stats_.runs;
    stats_.studies_forgotten += r.studies_forgotten;
    stats_.last_run_ms = wall_ms();
    stats_.last_run_seconds = r.seconds;
    stats_.use_percent = r.use_after;
    stats_.above_high_water = r.above_high_water;
    stats_.held_not_analysed = r.held[idx(Hold::analysing)] + r.held[idx(Hold::not_analysed)];
    stats_.held_delivering = r.held[idx(Hold::delivering)];
  } catch (const std::exception& e) {
    log->error("retention run failed: {}", why(e));
    std::lock_guard lock(mutex_);
    ++stats_.runs;
    ++stats_.failed_runs;
    stats_.last_run_ms = wall_ms();
    stats_.last_error = why(e);
  }
}

}  // namespace scp
