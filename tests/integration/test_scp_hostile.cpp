#define BOOST_TEST_MODULE scp_hostile
// Hostile peers on the DICOM port (issue #9, section 4): malformed first PDUs, malformed P-DATA
// after an association, a data set with an absurd element length, hostile UIDs, and 5,000 tiny
// instances on one association. Each ends with the daemon alive and serving C-ECHO and a good
// C-STORE, one log line per peer and reason, and status.json counting what was turned away.
// The peer is tests/scripts/raw_pdu.py.
#include <boost/test/unit_test.hpp>

#include "support/raw_pdu.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  fs::path dir = make_temp_dir("hostile");
  ~Fixture() { fs::remove_all(dir); }
};

const fs::path& good_instance() {
  static const fs::path p = test_data("dcmqi/data/segmentations/ct-3slice/01.dcm");
  return p;
}

void serves_good_traffic(const Daemon& d) {
  BOOST_TEST(echo_ms(d) >= 0);
  const auto r = d.store({good_instance().string()});
  BOOST_TEST(r.exit_code == 0, r.output);
  BOOST_TEST(acknowledged_files(r.output).size() == 1u, r.output);
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(first_pdus_that_are_not_a_usable_request_are_closed_at_once, Fixture) {
  Daemon d(dir, fast_timeouts());
  d.start();
  // Not an A-ASSOCIATE-RQ, a PDU length of 4 GB, one too short to be a request: closed by the
  // acceptor with an A-ABORT, DCMTK never sees them.
  for (const std::string kind : {"p-data", "http", "length-4g", "too-short"}) {
    const auto r = raw_pdu(d, {"first-pdu", "--kind", kind, "--wait", "10"});
    BOOST_TEST(r["closed_after"].is_number(), kind << ": " << r.dump());
    if (r["closed_after"].is_number()) BOOST_TEST(r["closed_after"].get<double>() < 1.0, kind << ": " << r.dump());
    BOOST_TEST(r["answer"] == nlohmann::json::array({"abort"}), kind << ": " << r.dump());
  }
  // Complete requests whose items are 64 KB long, or claim to be: DCMTK refuses them.
  for (const std::string kind : {"item-64k", "item-claims-64k"}) {
    const auto r = raw_pdu(d, {"first-pdu", "--kind", kind, "--wait", "10"});
    BOOST_TEST(r["closed_after"].is_number(), kind << ": " << r.dump());
    if (r["closed_after"].is_number()) BOOST_TEST(r["closed_after"].get<double>() < 1.0, kind << ": " << r.dump());
  }
  serves_good_traffic(d);
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(rejections(st, "not_associate_rq") == 2u);
  BOOST_TEST(rejections(st, "associate_rq_too_large") == 1u);
  BOOST_TEST(rejections(st, "associate_rq_too_short") == 1u);
  BOOST_TEST(rejections(st, "associate_rq_invalid") == 2u);
  BOOST_TEST(st["associations"] == 3);  // the readiness echo, and the good echo and store
  const auto log = d.log();
  BOOST_TEST(accounted(log, "not an A-ASSOCIATE-RQ") == 2u, log);
  BOOST_TEST(count_lines(log, "A-ASSOCIATE-RQ of 4294967295 bytes announced, more than the 262138 accepted") == 1u, log);
  BOOST_TEST(count_lines(log, "A-ASSOCIATE-RQ of 10 bytes announced, too short") == 1u, log);
  BOOST_TEST(accounted(log, "its A-ASSOCIATE-RQ was not understood") == 2u, log);
}

BOOST_FIXTURE_TEST_CASE(malformed_p_data_and_absurd_lengths_end_only_their_own_association, Fixture) {
  Daemon d(dir, fast_timeouts());
  d.start();
  // All at once: zero, odd and overrunning PDV lengths, a P-DATA PDU of 4 GB, and a C-STORE of a
  // 1 KB data set with an element that declares 0xFFFFFFF0 bytes.
  const std::vector<std::string> kinds{"pdv-zero", "pdv-odd", "pdv-overrun", "pdu-4g", "big-element"};
  std::vector<std::unique_ptr<Child>> peers;
  for (const auto& k : kinds)
    peers.push_back(std::make_unique<Child>(raw_pdu_argv(d, {"after-association", "--kind", k, "--wait", "15"}), dir / (k + ".log")));
  for (std::size_t i = 0; i < kinds.size(); ++i) {
    BOOST_TEST(peers[i]->wait(30s) == 0, kinds[i]);
    const auto r = last_json(read_text(dir / (kinds[i] + ".log")));
    if (kinds[i] == "big-element") {
      BOOST_TEST(r["dataset_bytes"] == 1024);
      BOOST_TEST(r["status"].is_number(), r.dump());  // answered, not dropped
      BOOST_TEST(r["status"] != 0, r.dump());         // and not acknowledged
      BOOST_TEST((r["status"].get<int>() & 0xF000) == 0xC000, r.dump());
    } else {
      BOOST_TEST(r["answer"].size() >= 1u, kinds[i] << ": " << r.dump());
      if (!r["answer"].empty()) BOOST_TEST(r["answer"][0] == "abort", kinds[i] << ": " << r.dump());
      BOOST_TEST(r["closed_after"].is_number(), kinds[i] << ": " << r.dump());
    }
  }
  BOOST_TEST(d.running());
  serves_good_traffic(d);
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(aborted(st, "protocol_error") == 4u);
  BOOST_TEST(st["instances_refused"] == 1);
  BOOST_TEST(st["instances_stored"] == 1);
  BOOST_TEST(stored_files(d.incoming()).size() == 1u);
  BOOST_TEST(count_files(d.incoming() / ".tmp") == 0u);
  const auto log = d.log();
  BOOST_TEST(accounted(log, "association from 'RAWPDU' 127.0.0.1: 0 instances stored, 0 failed") == 4u, log);
  BOOST_TEST(count_lines(log, "association from 'RAWPDU' 127.0.0.1: 0 instances stored, 1 failed") == 1u, log);
}

BOOST_FIXTURE_TEST_CASE(hostile_uids_never_write_outside_the_spool, Fixture) {
  Daemon d(dir, fast_timeouts());
  d.start();
  const auto tmp_before = count_files(d.incoming() / ".tmp");
  const auto r = raw_pdu(d, {"hostile-uids"});
  BOOST_TEST_REQUIRE(r["statuses"].size() == 6u, r.dump());
  std::size_t stored = 0;
  for (const auto& s : r["statuses"]) {
    BOOST_TEST(s.is_number(), r.dump());  // every one answered
    stored += s == 0;
  }
  serves_good_traffic(d);
  BOOST_TEST(d.stop() == 0);
  // Every file the daemon wrote is inside the storage root, and below incoming/ each path
  // component is a well-formed UID or a hash (x + 16 hex digits): no "/", "..", NUL, no long name.
  static const std::regex safe(R"(^([0-9]+(\.[0-9]+)*|x[0-9a-f]{16})(\.dcm)?$)");
  const auto root = fs::canonical(d.root());
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    const auto p = fs::weakly_canonical(it->path());
    BOOST_TEST(!it->is_symlink(), p);
    const auto rel = p.lexically_relative(d.incoming());
    if (rel.empty() || rel == "." || *rel.begin() == ".." || *rel.begin() == ".tmp") continue;
    for (const auto& part : rel) BOOST_TEST(std::regex_match(part.string(), safe), p);
  }
  // Where the UIDs point if they were taken as paths: nothing there.
  for (const char* escape : {"/tmp/pacsnode-escape", "/etc/pacsnode-escape", "/pacsnode-escape", "/etc/pacsnode-escape.dcm"})
    BOOST_TEST(!fs::exists(escape), escape);
  for (const auto& e : fs::directory_iterator(dir)) {  // next to the storage root only what the test put there
    const auto name = e.path().filename().string();
    BOOST_TEST((name == "storage" || name == "pacsnode.toml" || name == "daemon.log"), name);
  }
  // Stored and indexed under those names, nothing left in .tmp.
  BOOST_TEST(stored_files(d.incoming()).size() == stored + 1);
  BOOST_TEST(count_files(d.incoming() / ".tmp") == tmp_before);
  scp::Index index(testsupport::index_settings_for(d.root()));
  for (const auto& [sop, path] : index.instance_paths())
    BOOST_TEST(fs::weakly_canonical(path).string().rfind((root / "incoming").string() + "/", 0) == 0u, path);
  BOOST_TEST(index.instance_paths().size() == stored + 1);
}

BOOST_FIXTURE_TEST_CASE(five_thousand_one_pixel_instances_on_one_association, Fixture) {
  Daemon d(dir, fast_timeouts());
  d.start();
  BOOST_TEST_REQUIRE(echo_ms(d) >= 0);
  const auto pid = d.pid();
  // 5,000 records of a block each fill the first journal segment past half, so the next one is
  // made: journal segments are not counted.
  const auto fds = proc_fds_outside(pid, fs::canonical(d.root()) / "journal");
  const auto rss = rss_kb(pid);
  const auto r = raw_pdu(d, {"store-many", "--count", "5000", "--wait", "600"});
  BOOST_TEST(r["success"] == 5000, r.dump());
  BOOST_TEST_MESSAGE("5,000 one-pixel instances on one association in " << r["seconds"].get<double>() << " s");
  BOOST_TEST(echo_ms(d) >= 0);
  // Descriptors do not grow with the instance count; memory stays within a few MB of where it was.
  const auto fds_after = proc_fds_outside(pid, fs::canonical(d.root()) / "journal");
  const auto rss_after = rss_kb(pid);
  BOOST_TEST_MESSAGE("descriptors " << fds << " -> " << fds_after << ", RSS " << rss << " -> " << rss_after << " kB");
  BOOST_TEST(fds_after <= fds + 2);
  BOOST_TEST(rss_after - rss < 32 * 1024);
  BOOST_TEST(stored_files(d.incoming()).size() == 5000u);
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(status_of(d)["instances_stored"] == 5000);
  scp::Index index(testsupport::index_settings_for(d.root()));
  BOOST_TEST(index.instance_paths().size() == 5000u);
  BOOST_TEST(count_lines(d.log(), "association from 'MANYSTORE' 127.0.0.1: 5000 instances stored, 0 failed") == 1u);
}
