#define BOOST_TEST_MODULE scp_tls
// DICOM over TLS (issue #15): storescu/echoscu +tls as the modality, a test CA made here with
// openssl (tests/scripts/make_test_pki.sh), and a real Orthanc with DicomTlsEnabled as the PACS.
// What the TLS port must refuse (no client certificate, another CA's, an expired one, a plain
// DICOM client) is refused before the association and counted; the node keeps serving. Results
// go back to Orthanc over TLS with pacsnode's client certificate.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "support/daemon_fixture.h"
#include "support/orthanc.h"
#include "support/raw_pdu.h"
#include "support/storage_checks.h"

namespace fs = std::filesystem;
using namespace testsupport;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  fs::path dir = make_temp_dir("tls");
  fs::path pki = dir / "pki";
  std::uint16_t tls_port = 0;
  Fixture() {
    const auto r = run({(source_dir() / "tests/scripts/make_test_pki.sh").string(), pki.string()});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
  }
  ~Fixture() { fs::remove_all(dir); }

  std::string file(const std::string& name) const { return (pki / name).string(); }

  // A node with [tls] on a free port (beside plain DICOM unless `tls_extra` says plain = false).
  DaemonOptions options(const std::string& tls_extra = "", const std::string& more = "[analysis]\nenabled = false\n") {
    DaemonOptions opt = fast_timeouts();
    do {
      tls_port = free_port();
    } while (tls_port == 0);
    opt.extra = "[tls]\nenabled = true\nport = " + std::to_string(tls_port) + "\ncertificate = \"" + file("node.pem") +
                "\"\nprivate_key = \"" + file("node.key") + "\"\nca_certificates = \"" + file("ca.pem") + "\"\n" + tls_extra + more;
    return opt;
  }
  // echoscu/storescu options of a TLS client with the certificate `who` (.pem/.key) of the test PKI.
  std::vector<std::string> client(const std::string& who) const {
    return {"+tls", file(who + ".key"), file(who + ".pem"), "+cf", file("ca.pem")};
  }
  RunResult echo(const std::vector<std::string>& options, std::uint16_t port, const std::string& calling_ae = "ECHOSCU") const {
    std::vector<std::string> argv{"echoscu", "-aet", calling_ae, "-aec", "PACSNODE"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.push_back("127.0.0.1");
    argv.push_back(std::to_string(port));
    return run(argv);
  }
  RunResult store_tls(const std::string& who, const std::vector<std::string>& files, const std::string& calling_ae = "STORESCU") const {
    std::vector<std::string> argv{"storescu", "-v", "-aet", calling_ae, "-aec", "PACSNODE", "+sd", "+r", "-nh"};
    for (const auto& o : client(who)) argv.push_back(o);
    argv.push_back("127.0.0.1");
    argv.push_back(std::to_string(tls_port));
    argv.insert(argv.end(), files.begin(), files.end());
    return run(argv);
  }
  // The subject of a test certificate as an administrator reads it off with openssl.
  std::string subject(const std::string& who) const {
    auto out = run({"openssl", "x509", "-in", file(who + ".pem"), "-noout", "-subject", "-nameopt", "RFC2253"}).output;
    out = out.substr(out.find('=') + 1);
    return out.substr(0, out.find_last_not_of("\r\n") + 1);
  }
};

const std::string& instance(int k) {
  static const std::vector<std::string> files{test_data("dcmqi/data/segmentations/ct-3slice/01.dcm").string(),
                                              test_data("dcmqi/data/segmentations/ct-3slice/02.dcm").string()};
  return files.at(static_cast<std::size_t>(k));
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(storescu_over_tls_is_stored_beside_plain_dicom, Fixture) {
  Daemon d(dir, options());
  d.start();
  const auto tls = store_tls("modality", {instance(0)});
  BOOST_TEST_REQUIRE(tls.exit_code == 0, tls.output);
  BOOST_TEST(acknowledged_files(tls.output).size() == 1u, tls.output);
  const auto plain = d.store({instance(1)});
  BOOST_TEST_REQUIRE(plain.exit_code == 0, plain.output);
  BOOST_TEST(compare_stored(d.incoming(), {instance(0), instance(1)}).exit_code == 0);
  const auto log = d.log();
  BOOST_TEST(log.find("(DICOM over TLS)") != std::string::npos, log);
  BOOST_TEST(log.find("127.0.0.1 over TLS: 1 instances stored, 0 failed") != std::string::npos, log);
  BOOST_TEST(log.find("127.0.0.1: 1 instances stored, 0 failed") != std::string::npos, log);
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(st["port"].get<int>() == d.port());
  BOOST_TEST(st["tls_port"].get<int>() == tls_port);
  BOOST_TEST(rejections(st, "tls_handshake_failed") == 0u);
}

// One node per case, so that each refusal's log line is its own (the log says a peer's reason
// once per 10 s).
BOOST_FIXTURE_TEST_CASE(clients_the_tls_port_must_refuse_are_refused_before_the_association, Fixture) {
  struct Case {
    std::string name;
    std::vector<std::string> options;
    std::string reason;  // in the node's log
  };
  const std::vector<Case> cases{
      {"no client certificate", {"+tla", "+cf", file("ca.pem")}, "peer did not return a certificate"},
      {"another CA's certificate", client("stranger"), "unable to get local issuer certificate"},
      {"an expired certificate", client("expired"), "certificate has expired"},
      {"a plain DICOM client", {}, "TLS handshake failed (this port is for DICOM over TLS)"},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.name) {
      const auto sub = dir / ("node-" + std::to_string(&c - cases.data()));
      fs::create_directories(sub);
      Daemon d(sub, options());
      d.start();
      const auto refused = echo(c.options, tls_port);
      BOOST_TEST(refused.exit_code != 0, refused.output);
      BOOST_TEST(refused.output.find("Association Request Failed") != std::string::npos, refused.output);
      // Nothing of it reached DCMTK, and the node serves the next client.
      const auto good = echo(client("modality"), tls_port);
      BOOST_TEST(good.exit_code == 0, good.output);
      BOOST_TEST(d.stop() == 0);
      const auto log = d.log();
      BOOST_TEST(log.find("connection from 127.0.0.1 closed: TLS handshake failed") != std::string::npos, log);
      BOOST_TEST(log.find(c.reason) != std::string::npos, log);
      const auto st = status_of(d);
      BOOST_TEST(rejections(st, "tls_handshake_failed") == 1u);
      BOOST_TEST(st["associations"].get<int>() == 2);  // start()'s echo and the good one
    }
  }
}

BOOST_FIXTURE_TEST_CASE(without_require_client_certificate_an_anonymous_client_is_served, Fixture) {
  Daemon d(dir, options("require_client_certificate = false\n"));
  d.start();
  const auto anonymous = echo({"+tla", "+cf", file("ca.pem")}, tls_port);
  BOOST_TEST(anonymous.exit_code == 0, anonymous.output);
  // A certificate that is presented must still verify.
  BOOST_TEST(echo(client("stranger"), tls_port).exit_code != 0);
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(rejections(status_of(d), "tls_handshake_failed") == 1u);
}

BOOST_FIXTURE_TEST_CASE(a_tls_only_node_does_not_listen_for_plain_dicom, Fixture) {
  DaemonOptions opt = options("plain = false\n");
  opt.ready_echo_options = client("modality");
  opt.ready_echo_port = tls_port;
  Daemon d(dir, opt);
  d.start();
  const auto plain = d.echo("ECHOSCU");
  BOOST_TEST(plain.exit_code != 0);
  BOOST_TEST(plain.output.find("Connection refused") != std::string::npos, plain.output);
  const auto tls = store_tls("modality", {instance(0)});
  BOOST_TEST(tls.exit_code == 0, tls.output);
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(st["port"].get<int>() == 0);
  BOOST_TEST(st["tls_port"].get<int>() == tls_port);
  BOOST_TEST(d.log().find("listening on 127.0.0.1:" + std::to_string(tls_port) + " (DICOM over TLS)") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(a_calling_ae_is_tied_to_its_host_and_its_certificate_subject, Fixture) {
  const std::string bindings = "[[calling_ae]]\nae_title = \"MODALITY1\"\ntls_subjects = [\"" + subject("modality") +
                               "\"]\n[[calling_ae]]\nae_title = \"CT2\"\nhosts = [\"10.9.9.9\"]\n"
                               "[[calling_ae]]\nae_title = \"CT3\"\nhosts = [\"127.0.0.1\"]\n";
  Daemon d(dir, options("", "[analysis]\nenabled = false\n" + bindings));
  d.start();
  BOOST_TEST(echo(client("modality"), tls_port, "MODALITY1").exit_code == 0);  // its certificate
  BOOST_TEST(echo(client("node"), tls_port, "MODALITY1").exit_code != 0);      // another valid certificate
  BOOST_TEST(echo({}, d.port(), "MODALITY1").exit_code != 0);                  // not over TLS
  BOOST_TEST(echo({}, d.port(), "CT2").exit_code != 0);                        // not from its host
  BOOST_TEST(echo({}, d.port(), "CT3").exit_code == 0);                        // from its host
  BOOST_TEST(echo(client("node"), tls_port, "UNBOUND").exit_code == 0);        // no binding: allowed_calling_ae decides
  BOOST_TEST(d.stop() == 0);
  const auto st = status_of(d);
  BOOST_TEST(rejections(st, "calling_ae_title") == 3u);
  BOOST_TEST(accounted(d.log(), "rejected: calling AE title 'MODALITY1'") >= 1u, d.log());
}

BOOST_FIXTURE_TEST_CASE(a_client_stalled_in_the_tls_handshake_holds_only_its_own_slot, Fixture) {
  Daemon d(dir, options());
  d.start();
  // Three connections to the TLS port that never send a ClientHello.
  RawPeer silent(d, {"hold", "--count", "3", "--wait", "20"}, dir / "hold.log", tls_port);
  const auto t0 = std::chrono::steady_clock::now();
  BOOST_TEST(echo(client("modality"), tls_port).exit_code == 0);
  const double served_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto r = silent.result();
  BOOST_TEST_REQUIRE(r["closed_later"] == 3, r.dump());
  // Served while they were still waiting (they were opened before t0), not once their deadline freed the acceptor.
  BOOST_TEST(served_after < r["later_min"].get<double>(), r.dump());
  BOOST_TEST(d.stop() == 0);
  BOOST_TEST(rejections(status_of(d), "preassociation_timeout") == 3u);
  BOOST_TEST(d.log().find("TLS handshake not completed within 2 s") != std::string::npos, d.log());
}

BOOST_FIXTURE_TEST_CASE(results_reach_an_orthanc_over_tls_with_the_node_client_certificate, Fixture) {
  OrthancOptions po;
  po.extra_json = "\"DicomTlsEnabled\": true, \"DicomTlsCertificate\": " + Orthanc::quote(file("pacs.pem")) +
                  ", \"DicomTlsPrivateKey\": " + Orthanc::quote(file("pacs.key")) +
                  ", \"DicomTlsTrustedCertificates\": " + Orthanc::quote(file("ca.pem")) +
                  ", \"DicomTlsRemoteCertificateRequired\": true";
  Orthanc pacs(po);
  const std::string port = std::to_string(pacs.dicom_port());
  // The PACS as a [[destination]]; `tls` is the rest of its table (empty: plain DICOM).
  auto destination = [&](const std::string& name, const std::string& tls) {
    return "[[destination]]\nname = \"" + name + "\"\nae_title = \"ORTHANC\"\nhost = \"127.0.0.1\"\nport = " + port + "\n" + tls;
  };
  // Over TLS, trusting `ca`, with pacsnode's client certificate.
  auto over_tls = [&](const std::string& ca, const std::string& more = "") {
    return "tls = true\ntls_ca_certificates = \"" + file(ca) + "\"\ntls_certificate = \"" + file("node.pem") +
           "\"\ntls_private_key = \"" + file("node.key") + "\"\n" + more;
  };
  const std::string destinations =
      destination("pacs", over_tls("ca.pem")) +
      // the same PACS, but trusting another CA: its certificate does not verify
      destination("wrong-ca", over_tls("other-ca.pem")) +
      // the same PACS, checked by name: its certificate says 127.0.0.1 and localhost, not pacs.example.org
      destination("by-name", over_tls("ca.pem", "tls_server_name = \"localhost\"\n")) +
      destination("wrong-name", over_tls("ca.pem", "tls_server_name = \"pacs.example.org\"\n")) +
      // and once without TLS
      destination("plain", "") +
      "[[profile]]\nname = \"chest\"\nbase = \"ct-chest\"\ndestinations = [\"pacs\"]\n"
      "[outbound]\ninitial_backoff_seconds = 1\nmax_backoff_seconds = 2\nconnect_timeout_seconds = 5\n";
  Daemon d(dir, options("", destinations));
  d.start();
  const std::string config = (dir / "pacsnode.toml").string();
  auto echo_destination = [&](const std::string& name) {
    return run({daemon_binary().string(), "echo", "--config", config, name});
  };
  const auto ok = echo_destination("pacs");
  BOOST_TEST(ok.exit_code == 0, ok.output);
  BOOST_TEST(ok.output.find("DICOM over TLS") != std::string::npos, ok.output);
  const auto wrong = echo_destination("wrong-ca");
  BOOST_TEST(wrong.exit_code != 0, wrong.output);
  BOOST_TEST(wrong.output.find("certificate") != std::string::npos, wrong.output);
  BOOST_TEST(echo_destination("plain").exit_code != 0);  // Orthanc's DICOM port speaks TLS only
  const auto by_name = echo_destination("by-name");
  BOOST_TEST(by_name.exit_code == 0, by_name.output);
  const auto wrong_name = echo_destination("wrong-name");
  BOOST_TEST(wrong_name.exit_code != 0, wrong_name.output);
  BOOST_TEST(wrong_name.output.find("hostname mismatch") != std::string::npos, wrong_name.output);

  // The modality sends a chest CT over TLS; SEG and SR come back to the PACS over TLS.
  const auto ct = ct_phantom(dir, 40, 128);
  const auto sent = store_tls("modality", {ct.string()});
  BOOST_TEST_REQUIRE(sent.exit_code == 0, sent.output);
  auto results = [&] {
    std::set<std::string> modalities;
    for (const auto& id : pacs.instances())
      if (auto m = pacs.instance_tag(id, "Modality")) modalities.insert(*m);
    return modalities;
  };
  const bool arrived = eventually([&] { return results().count("SEG") && results().count("SR"); }, 300s, 500ms);
  BOOST_TEST_REQUIRE(arrived, d.log());
  BOOST_TEST(pacs.instances().size() == 2u);
  BOOST_TEST(d.log().find("destination 'pacs' (ORTHANC@127.0.0.1:" + port + "): 2 object(s) sent") != std::string::npos, d.log());
  BOOST_TEST(d.stop() == 0);
}

// What docs/conformance-statement.md section 6 says of the two profiles, checked with openssl
// s_client (at security level 0, so that it is the node that refuses, not the client).
BOOST_FIXTURE_TEST_CASE(the_profiles_negotiate_what_the_conformance_statement_says, Fixture) {
  auto handshake = [&](const std::vector<std::string>& options) {
    std::vector<std::string> argv{"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(tls_port), "-cert", file("modality.pem"),
                                  "-key", file("modality.key"), "-CAfile", file("ca.pem")};
    argv.insert(argv.end(), options.begin(), options.end());
    std::string cmd;
    for (const auto& a : argv) cmd += shell_quote(a) + " ";
    return run({"/bin/sh", "-c", "echo | timeout 20 " + cmd + "2>&1"}).output;
  };
  auto cipher = [](const std::string& out) {
    const auto p = out.find("Cipher is ");
    return p == std::string::npos ? std::string() : out.substr(p + 10, out.find('\n', p) - p - 10);
  };
  const std::set<std::string> bcp195_tls12{"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256",
                                           "DHE-RSA-AES256-GCM-SHA384"};
  {
    Daemon d(dir / "nd", (fs::create_directories(dir / "nd"), options()));
    d.start();
    BOOST_TEST(handshake({"-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"}).find("alert protocol version") != std::string::npos);
    BOOST_TEST(handshake({"-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"}).find("alert protocol version") != std::string::npos);
    const auto tls12 = handshake({"-tls1_2"});
    BOOST_TEST(bcp195_tls12.count(cipher(tls12)) == 1u, tls12);
    // A TLS 1.2 suite outside the profile (RSA key exchange, CBC; ChaCha20) is refused.
    for (const std::string suite : {"AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"})
      BOOST_TEST(handshake({"-tls1_2", "-cipher", suite + ":@SECLEVEL=0"}).find("handshake failure") != std::string::npos, suite);
    BOOST_TEST(handshake({"-tls1_3"}).find("New, TLSv1.3, Cipher is") != std::string::npos);
    BOOST_TEST(d.stop() == 0);
  }
  {
    Daemon d(dir / "ext", (fs::create_directories(dir / "ext"), options("profile = \"bcp195-extended\"\n")));
    d.start();
    const auto tls12 = handshake({"-tls1_2"});
    BOOST_TEST(bcp195_tls12.count(cipher(tls12)) == 1u, tls12);
    BOOST_TEST(handshake({"-tls1_3"}).find("alert protocol version") != std::string::npos);
    BOOST_TEST(d.stop() == 0);
  }
}
