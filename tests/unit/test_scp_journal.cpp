#define BOOST_TEST_MODULE journal
// The ingest journal (scp/journal.h): what was appended survives the loss of every spool file
// that was not checkpointed (a power cut: renamed but not fsync'ed), a torn record at the tail
// is not replayed, and a checkpoint empties the journal.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "scp/journal.h"
#include "scp/spool.h"

namespace fs = std::filesystem;
using scp::Journal;
using scp::JournalOptions;
using scp::Spool;

namespace {

// The journal is off on a tmpfs: the test's storage is made in the working directory (the build
// tree, on the disk CI runs on) rather than in a /tmp that may be a tmpfs.
struct TempRoot {
  fs::path dir = fs::current_path() / ("journal-test-" + std::to_string(std::random_device{}()));
  TempRoot() { fs::create_directories(dir); }
  ~TempRoot() { fs::remove_all(dir); }
};

JournalOptions small(std::size_t segments = 2) {
  JournalOptions o;
  o.segment_bytes = 4ull << 20;
  o.max_segments = segments;
  o.keep_free_bytes = 0;
  o.checkpoint_interval = std::chrono::hours(1);  // only when asked
  return o;
}

std::string payload_of(int i, std::size_t size) {
  std::string p(size, '\0');
  std::mt19937 rng(static_cast<unsigned>(i));
  for (auto& c : p) c = static_cast<char>(rng());
  return p;
}

Journal::Meta meta_of(int i) {
  return {"1.2.3." + std::to_string(i / 10), "1.2.3.4." + std::to_string(i / 5), "1.2.3.4.5." + std::to_string(i), "MODALITY",
          1000 + i};
}

fs::path path_of(const Spool& spool, int i) {
  dicom::InstanceHeader h;
  const auto m = meta_of(i);
  h.study_uid = m.study_uid;
  h.series_uid = m.series_uid;
  h.sop_instance_uid = m.sop_instance_uid;
  return spool.instance_path(h);
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// As the receiver does: append (durable), then the spool file by rename, no fsync.
void receive(Spool& spool, Journal& journal, int i, std::size_t size) {
  const std::string p = payload_of(i, size);
  const auto ticket = journal.append(meta_of(i), p);
  BOOST_REQUIRE(ticket.has_value());
  const auto tmp = spool.temp_path();
  std::ofstream(tmp, std::ios::binary) << p;
  spool.place(tmp, path_of(spool, i), false);
  journal.laid_out(*ticket, path_of(spool, i));
}

// In a child process: receive n instances on `threads` threads at once (as many associations
// do), then die by SIGKILL (no destructor, no checkpoint).
void receive_and_die(const fs::path& root, int n, std::size_t size, int threads = 1) {
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    try {
      Spool spool(root);
      Journal journal(spool, small(4));  // room to move on without a checkpoint
      std::atomic<bool> failed{false};
      std::vector<std::thread> all;
      for (int t = 0; t < threads; ++t)
        all.emplace_back([&, t] {
          try {
            for (int i = t; i < n; i += threads) receive(spool, journal, i, size);
          } catch (...) {
            failed = true;
          }
        });
      for (auto& t : all) t.join();
      if (failed) ::_exit(5);
      ::kill(::getpid(), SIGKILL);  // before the journal's destructor could checkpoint
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(4);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  BOOST_REQUIRE_MESSAGE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the child did not get to its SIGKILL");
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(every_appended_instance_comes_back_after_the_spool_files_are_lost, TempRoot) {
  const int n = 20;
  receive_and_die(dir, n, 300'000);  // ~6 MB: the appends move on to a second segment
  // The power cut: none of the spool files was checkpointed, so the disk may hold none of them,
  // or a part of one.
  {
    Spool spool(dir);
    for (int i = 0; i < n; ++i) BOOST_REQUIRE(fs::exists(path_of(spool, i)));
    for (int i = 0; i < n; ++i)
      if (i != 7) fs::remove(path_of(spool, i));
    fs::resize_file(path_of(spool, 7), 1000);
  }
  Spool spool(dir);
  Journal journal(spool, small());
  BOOST_TEST(journal.enabled());
  BOOST_TEST(journal.replayed().records == static_cast<std::size_t>(n));
  BOOST_TEST(journal.replayed().restored == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) BOOST_TEST(slurp(path_of(spool, i)) == payload_of(i, 300'000), "instance " << i);
  BOOST_TEST(journal.pending() == 0u);
}

BOOST_FIXTURE_TEST_CASE(a_torn_record_at_the_tail_is_not_replayed_and_the_rest_is, TempRoot) {
  const int n = 5;
  receive_and_die(dir, n, 100'000);
  Spool first(dir);
  for (int i = 0; i < n; ++i) fs::remove(path_of(first, i));
  // Tear the last record: a byte of its payload changed, as if its write had not completed.
  // Records start on 4096-byte boundaries after the 4096-byte segment header.
  const fs::path seg = dir / "journal" / "seg-0000.wal";
  const std::uint64_t record = 4096 + 4 * ((64 + 200 + 100'000 + 4095) / 4096 * 4096);
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(record + 64 + 120 + 5000));
    f.put('\x5a');
  }
  Spool spool(dir);
  Journal journal(spool, small());
  BOOST_TEST(journal.replayed().records == 4u);
  for (int i = 0; i < 4; ++i) BOOST_TEST(slurp(path_of(spool, i)) == payload_of(i, 100'000), "instance " << i);
  BOOST_TEST(!fs::exists(path_of(spool, 4)));
}

BOOST_FIXTURE_TEST_CASE(a_checkpoint_makes_the_files_durable_and_empties_the_journal, TempRoot) {
  {
    Spool spool(dir);
    Journal journal(spool, small());
    for (int i = 0; i < 6; ++i) receive(spool, journal, i, 50'000);
    BOOST_TEST(journal.pending() == 6u);
    journal.checkpoint();
    BOOST_TEST(journal.pending() == 0u);  // the active segment is not recycled: appends go on there
  }
  // After a clean stop nothing is left to replay, and the files are there.
  Spool spool(dir);
  Journal journal(spool, small());
  BOOST_TEST(journal.replayed().records == 0u);
  BOOST_TEST(journal.replayed().restored == 0u);
  for (int i = 0; i < 6; ++i) BOOST_TEST(slurp(path_of(spool, i)) == payload_of(i, 50'000));
}

BOOST_FIXTURE_TEST_CASE(too_large_or_no_free_segment_means_commit_directly, TempRoot) {
  Spool spool(dir);
  Journal journal(spool, small(1));
  BOOST_TEST(journal.max_payload() == (2ull << 20));
  BOOST_TEST(!journal.append(meta_of(0), payload_of(0, (2u << 20) + 1)).has_value());
  BOOST_TEST(journal.append(meta_of(1), payload_of(1, 1'500'000)).has_value());
  BOOST_TEST(journal.append(meta_of(2), payload_of(2, 1'500'000)).has_value());
  // The only segment (4 MiB) is full, its records not checkpointed, and no other may be made:
  // the caller commits directly.
  BOOST_TEST(!journal.append(meta_of(3), payload_of(3, 1'500'000)).has_value());
}

BOOST_FIXTURE_TEST_CASE(appends_from_many_threads_at_once_all_come_back, TempRoot) {
  // Four associations appending together (group commit: one fdatasync may cover several), over
  // more than one segment; SIGKILL, every spool file lost, and all of them are replayed.
  const int n = 40;
  receive_and_die(dir, n, 150'000, 4);
  {
    Spool spool(dir);
    for (int i = 0; i < n; ++i) fs::remove(path_of(spool, i));
  }
  Spool spool(dir);
  Journal journal(spool, small());
  BOOST_TEST(journal.replayed().records == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) BOOST_TEST(slurp(path_of(spool, i)) == payload_of(i, 150'000), "instance " << i);
}

BOOST_FIXTURE_TEST_CASE(a_spare_segment_is_made_ahead_of_need, TempRoot) {
  Spool spool(dir);
  Journal journal(spool, small(3));
  BOOST_TEST(fs::exists(dir / "journal" / "seg-0000.wal"));
  BOOST_TEST(!fs::exists(dir / "journal" / "seg-0001.wal"));
  // Past half of the first segment with no empty one left: the checkpointer makes the next.
  for (int i = 0; i < 5; ++i) receive(spool, journal, i, 500'000);
  bool made = false;
  for (int k = 0; k < 500 && !made; ++k) {
    made = fs::exists(dir / "journal" / "seg-0001.wal");
    if (!made) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  BOOST_TEST(made);
  BOOST_TEST(!fs::exists(dir / "journal" / "seg-0002.wal"));  // one ahead, not all of them
}

BOOST_FIXTURE_TEST_CASE(a_segment_left_by_a_run_with_the_journal_on_is_replayed_with_it_off, TempRoot) {
  receive_and_die(dir, 3, 10'000);
  Spool first(dir);
  for (int i = 0; i < 3; ++i) fs::remove(path_of(first, i));
  Spool spool(dir);
  Journal journal(spool, small(0));  // storage.journal_mb = 0 now
  BOOST_TEST(!journal.enabled());
  BOOST_TEST(journal.replayed().restored == 3u);
  for (int i = 0; i < 3; ++i) BOOST_TEST(slurp(path_of(spool, i)) == payload_of(i, 10'000));
  BOOST_TEST(!fs::exists(dir / "journal" / "seg-0000.wal"));
}
