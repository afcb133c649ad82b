#define BOOST_TEST_MODULE scp_rules
// Rules decide what the daemon analyses: with the default config a chest CT is analysed and an MR
// series of the same study is stored only (generic is off); `pacsnode explain` shows the same
// decisions, and why, without analysing; a [[rule]] on the calling AE ignores what one sender sends.
#include <boost/test/unit_test.hpp>

#include <fmt/format.h>

#include "support/daemon_fixture.h"
#include "support/files.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

std::size_t dcm_files(const fs::path& dir) {
  std::size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file() && e.path().extension() == ".dcm";
  return n;
}

// Copies of the CT's slices as an abdominal MR series of the same study (new series and instance UIDs).
fs::path mr_series(const fs::path& ct, const fs::path& out, int slices) {
  fs::create_directories(out);
  for (int z = 0; z < slices; ++z) {
    const auto f = out / fmt::format("mr_{:04d}.dcm", z);
    fs::copy_file(ct / fmt::format("ct_{:04d}.dcm", z), f, fs::copy_options::overwrite_existing);
    const auto r = run({"dcmodify", "-nb", "-gin", "-i", "(0008,0060)=MR", "-i", "(0018,0015)=ABDOMEN", "-i",
                        "(0008,103e)=t2_haste_cor", "-i", "(0020,000e)=1.2.826.0.1.3680043.10.543.88", "-i",
                        "(0020,0011)=7", f.string()});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(chest_ct_is_analysed_an_mr_of_the_same_study_is_stored_only_and_explain_agrees) {
  const auto dir = make_temp_dir("rules");
  const auto ct = ct_phantom(dir, 24, 64);
  const auto study = dir / "study";
  fs::create_directories(study / "ct");
  for (const auto& e : fs::directory_iterator(ct)) fs::copy_file(e.path(), study / "ct" / e.path().filename());
  mr_series(ct, study / "mr", 12);

  // explain, on the embedded default config: nothing is decoded, one line of decision per series.
  const auto ex = run({daemon_binary().string(), "explain", study.string()});
  BOOST_TEST_REQUIRE(ex.exit_code == 0, ex.output);
  BOOST_TEST(ex.output.find("-> analyse with profile ct-chest") != std::string::npos, ex.output);
  BOOST_TEST(ex.output.find("modality MR") != std::string::npos, ex.output);
  BOOST_TEST(ex.output.find("-> not analysed: rule 'default' analyses it; but no enabled profile matches the series") !=
                 std::string::npos,
             ex.output);

  // A rule on the calling AE: explain --calling-ae shows it ignoring the research scanner's series.
  const auto cfg = dir / "rules.toml";
  std::ofstream(cfg) << "[[rule]]\nname = \"research-scanner\"\naction = \"ignore\"\ncalling_ae = [\"RESEARCH\"]\n"
                        "[[rule]]\nname = \"chest\"\nmodalities = [\"CT\"]\nmin_slices = 10\n";
  const auto ex2 = run({daemon_binary().string(), "explain", (study / "ct").string(), "--config", cfg.string(),
                        "--calling-ae", "RESEARCH"});
  BOOST_TEST_REQUIRE(ex2.exit_code == 0, ex2.output);
  BOOST_TEST(ex2.output.find("-> not analysed: rule 'research-scanner' ignores it") != std::string::npos, ex2.output);

  // The daemon decides the same: one study, two series; only the CT gets a SEG and an SR.
  Daemon d(dir);
  d.start();
  BOOST_TEST_REQUIRE(d.store({study.string()}).exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 1 analysed") != std::string::npos; }, 120s), d.log());
  const std::string log = d.log();
  BOOST_TEST(log.find("1 series with results") != std::string::npos, log);
  BOOST_TEST(log.find("1 not analysed by the rules") != std::string::npos, log);
  BOOST_TEST(dcm_files(d.root() / "outbound") == 2u, log);
  BOOST_TEST(stored_files(d.incoming()).size() == 36u);  // the MR is stored all the same
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(a_rule_on_the_calling_ae_keeps_one_senders_series_out_of_analysis) {
  const auto dir = make_temp_dir("rules-ae");
  const auto ct = ct_phantom(dir, 24, 64, 3);
  DaemonOptions opt;
  opt.extra = "[[rule]]\nname = \"research-scanner\"\naction = \"ignore\"\ncalling_ae = [\"RESEARCH\"]\n"
              "[[rule]]\nname = \"chest\"\nmodalities = [\"CT\"]\n";
  Daemon d(dir, opt);
  d.start();
  BOOST_TEST_REQUIRE(d.store({ct.string()}, "RESEARCH").exit_code == 0);
  BOOST_TEST_REQUIRE(eventually([&] { return d.log().find("generation 1 analysed") != std::string::npos; }, 120s), d.log());
  BOOST_TEST(d.log().find("0 series with results") != std::string::npos, d.log());
  BOOST_TEST(d.log().find("1 not analysed by the rules") != std::string::npos, d.log());
  BOOST_TEST(dcm_files(d.root() / "outbound") == 0u);
  BOOST_TEST(stored_files(d.incoming()).size() == 24u);
  BOOST_TEST(d.stop() == 0);
  fs::remove_all(dir);
}
