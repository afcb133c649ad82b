#define BOOST_TEST_MODULE scp_concurrency
// Many modalities at once: 8 concurrent associations x 50 instances, none lost.
#include <boost/test/unit_test.hpp>

#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(eight_concurrent_associations_of_fifty_instances_none_lost) {
  const auto dir = make_temp_dir("concurrency");
  std::vector<fs::path> series;
  for (int i = 0; i < 8; ++i) series.push_back(ct_phantom(dir, 50, 128, 100 + i));  // 8 studies
  Daemon d(dir);
  d.start();
  std::vector<std::unique_ptr<Child>> senders;
  for (int i = 0; i < 8; ++i)
    senders.push_back(std::make_unique<Child>(d.store_argv({series[i].string()}, "MODALITY" + std::to_string(i)),
                                              dir / ("storescu" + std::to_string(i) + ".log")));
  for (auto& s : senders) BOOST_TEST(s->wait(300s) == 0);
  std::vector<std::string> sent;
  for (const auto& s : series) sent.push_back(s.string());
  BOOST_TEST(stored_files(d.incoming()).size() == 400u);
  const auto cmp = compare_stored(d.incoming(), sent);
  BOOST_TEST(cmp.exit_code == 0, cmp.output);
  BOOST_TEST(cmp.output.find("compared 400 missing 0 different 0") != std::string::npos, cmp.output);
  BOOST_TEST(eventually([&] { return count_lines(d.log(), "complete (quiet time): 50 instances") == 8; }, 60s), d.log());
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(completed_jobs(d.root()) == 8u);
  BOOST_TEST(count_lines(d.log(), "50 instances stored, 0 failed") == 8u);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(associations_beyond_the_limit_are_rejected_as_transient) {
  const auto dir = make_temp_dir("limit");
  const auto ct = ct_phantom(dir, 150, 256);
  DaemonOptions opt;
  opt.max_associations = 1;
  Daemon d(dir, opt);
  d.start();
  Child busy(d.store_argv({ct.string()}), dir / "busy.log");
  BOOST_TEST_REQUIRE(eventually([&] { return stored_files(d.incoming()).size() >= 5; }, 60s));
  const auto second = d.echo("SECOND");
  BOOST_TEST(second.exit_code != 0);
  BOOST_TEST(second.output.find("Rejected Transient") != std::string::npos, second.output);
  BOOST_TEST(second.output.find("Local Limit Exceeded") != std::string::npos, second.output);
  BOOST_TEST(busy.wait(120s) == 0);
  BOOST_TEST(d.echo("THIRD").exit_code == 0);  // free again
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}
