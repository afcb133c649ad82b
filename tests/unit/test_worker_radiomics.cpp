// The daemon's worker (a job with require_dicom) writes the SEG and SR before it measures the IBSI
// features, which its SR does not use, and still reports them in the series summary; `analyze`'s
// worker measures them in the features stage as before.
#define BOOST_TEST_MODULE worker_radiomics
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/pipeline.h"
#include "analysis/worker.h"
#include "analysis/worker_client.h"
#include "support/paths.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using namespace analysis;

namespace {

struct Events {
  std::vector<std::string> kinds;
  nlohmann::json summary;
};

Events run_job(const fs::path& series, const fs::path& out, bool daemon) {
  worker::Job job;
  job.files = files_below(series);
  job.out_dir = out;
  job.write_dicom = true;
  job.require_dicom = daemon;
  Events ev;
  const WorkerLimits limits{4096, 120, 120};
  const WorkerExit exit = run_worker(start_worker(testsupport::daemon_binary(), limits, {}), worker::to_json(job), limits,
                                     [&](const nlohmann::json& e) {
                                       ev.kinds.push_back(e.value("event", ""));
                                       if (ev.kinds.back() == "series") ev.summary = e.at("summary");
                                     });
  BOOST_TEST_REQUIRE(exit.ok(), exit.reason);
  return ev;
}

}  // namespace

BOOST_AUTO_TEST_CASE(daemon_job_measures_ibsi_after_the_objects) {
  testsupport::TempDir tmp;
  const auto r = testsupport::run({testsupport::python(), testsupport::phantom_script().string(),
                                   (tmp.path / "ct").string(), "--slices", "24", "--size", "96"});
  BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  for (const bool daemon : {true, false}) {
    const fs::path out = tmp.path / (daemon ? "daemon" : "analyze");
    const Events ev = run_job(tmp.path / "ct", out, daemon);
    BOOST_TEST_REQUIRE(ev.summary.is_object());
    const auto err = ev.summary.find("error");
    BOOST_TEST((err == ev.summary.end() || err->is_null() || *err == ""), ev.summary.dump());
    const auto& timings = ev.summary.at("timings_ms");
    BOOST_TEST(timings.contains("radiomics") == daemon, "deferred only for the daemon's job");
    // The IBSI features of a lung are in the summary either way.
    bool lung = false;
    for (const auto& g : ev.summary.at("segments"))
      if (g.value("name", "") == "right_lung") {
        lung = true;
        BOOST_TEST(g.at("features").contains("cm_joint_max_3D_comb"));
        BOOST_TEST(g.at("features").contains("morph_volume"));
        BOOST_TEST(g.at("features").contains("laa950_percent"));
      }
    BOOST_TEST(lung);
    // SEG and SR were announced before the series was summarised.
    const auto objects = std::find(ev.kinds.begin(), ev.kinds.end(), "objects");
    const auto series = std::find(ev.kinds.begin(), ev.kinds.end(), "series");
    BOOST_TEST((objects != ev.kinds.end() && objects < series));
  }
}
