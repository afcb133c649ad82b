#define BOOST_TEST_MODULE scp_loops
// Results never loop: with Orthanc auto-routing every stable study back to pacsnode (the usual
// OnStableStudy recipe), the study with our own SEG and SR inside comes back again and again, and
// the PACS still ends up with exactly one SEG and one SR.
#include <boost/test/unit_test.hpp>

#include <map>

#include <fmt/format.h>

#include "scp/index.h"
#include "support/orthanc.h"
#include "support/seg_sources.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

// Modality of every instance Orthanc holds -> how many.
std::map<std::string, int> modalities(const Orthanc& pacs) {
  std::map<std::string, int> out;
  for (const auto& id : pacs.instances()) ++out[pacs.instance_tag(id, "Modality").value_or("?")];
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(auto_routing_every_stable_study_back_gives_one_seg_and_one_sr) {
  const auto dir = make_temp_dir("loops");
  const int slices = 24;
  const auto ct = ct_phantom(dir, slices, 64, 11);
  const std::uint16_t node_port = free_port();
  OrthancOptions po;
  po.lua_script = source_dir() / "tests/scripts/orthanc_route_stable_studies.lua";
  po.modalities_json = fmt::format(R"({{"pacsnode": ["PACSNODE", "127.0.0.1", {}]}})", node_port);
  po.extra_json = R"("StableAge": 2)";
  Orthanc pacs(po);
  DaemonOptions opt;
  opt.port = node_port;
  opt.extra = fmt::format("[[destination]]\nname = \"pacs\"\nae_title = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
                          pacs.aet(), pacs.dicom_port());
  Daemon node(dir, opt);
  node.start();

  // The modality sends the study to the PACS; the PACS routes it to pacsnode once stable.
  BOOST_TEST_REQUIRE(run({"storescu", "-aet", "MODALITY", "-aec", pacs.aet(), "+sd", "+r", "-nh", "127.0.0.1",
                          std::to_string(pacs.dicom_port()), ct.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(pacs.wait_for([&] { return pacs.count_instances() == std::size_t(slices) + 2; }, 180s),
                     node.log() << pacs.log());
  // The PACS sends the study back with our results inside (it is stable again): that reopens the
  // study on our side, the series is unchanged, no new object is made.
  BOOST_TEST_REQUIRE(eventually([&] { return node.log().find("instances unchanged since generation 1") != std::string::npos; },
                                120s),
                     node.log());
  // Watch for three minutes: with quiet time and StableAge of 2 s a loop would cycle every few
  // seconds.
  std::size_t most = 0;
  const auto end = std::chrono::steady_clock::now() + 180s;
  while (std::chrono::steady_clock::now() < end) {
    most = std::max(most, pacs.count_instances());
    std::this_thread::sleep_for(2s);  // sampling a count over a fixed observation window
  }
  BOOST_TEST(most == std::size_t(slices) + 2);
  const auto m = modalities(pacs);
  BOOST_TEST(m.at("CT") == slices);
  BOOST_TEST(m.count("SEG") == 1u);
  BOOST_TEST(m.count("SR") == 1u);
  if (m.count("SEG")) BOOST_TEST(m.at("SEG") == 1);
  if (m.count("SR")) BOOST_TEST(m.at("SR") == 1);

  // Our own results came back and were stored without reopening anything.
  BOOST_TEST(node.stop() == 0);
  scp::Index index(testsupport::index_settings_for(node.root()));
  const auto results = index.results();
  BOOST_TEST(results.size() == 2u);
  const auto studies = index.studies();
  BOOST_TEST_REQUIRE(studies.size() == 1u);
  int unchanged = 0;
  for (const auto& r : index.series_runs(studies.front().study_uid)) unchanged += r.state == "unchanged";
  BOOST_TEST(unchanged >= 1);
  BOOST_TEST_MESSAGE(studies.front().generation << " generation(s) of the study, " << unchanged
                                                << " analysis run(s) that found the series unchanged");
  fs::remove_all(dir);
}
