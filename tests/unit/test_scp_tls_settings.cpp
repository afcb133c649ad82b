#define BOOST_TEST_MODULE scp_tls_settings
// What the node makes of its TLS settings before any peer connects: the TLS context refuses
// material it cannot use with a message naming the key, and [[calling_ae]] bindings judge a
// connection by its source address, its transport and its certificate subject.
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

#include "dicom/tls.h"
#include "scp/check_config.h"
#include "scp/store_provider.h"
#include "support/paths.h"
#include "support/process.h"

namespace fs = std::filesystem;
using namespace testsupport;

namespace {

bool pki_made = false;

// The test PKI of tests/scripts/make_test_pki.sh, made once per run.
const fs::path& pki() {
  static const fs::path dir = [] {
    const auto d = fs::temp_directory_path() / ("pacsnode-pki-" + std::to_string(::getpid()));
    const auto r = run({(source_dir() / "tests/scripts/make_test_pki.sh").string(), d.string()});
    BOOST_TEST_REQUIRE(r.exit_code == 0, r.output);
    pki_made = true;
    return d;
  }();
  return dir;
}
std::string file(const std::string& name) { return (pki() / name).string(); }

std::string error_of(bool acceptor, const dicom::TlsSettings& s) {
  try {
    dicom::make_tls_layer(acceptor, s, "tls.");
  } catch (const dicom::TlsError& e) {
    return e.what();
  }
  return {};
}

struct RemovePki {
  ~RemovePki() {
    if (pki_made) fs::remove_all(pki());
  }
};
BOOST_TEST_GLOBAL_FIXTURE(RemovePki);

}  // namespace

BOOST_AUTO_TEST_CASE(usable_material_makes_a_context_on_both_sides) {
  BOOST_TEST(error_of(true, {file("node.pem"), file("node.key"), file("ca.pem"), true, "bcp195-nd", ""}) == "");
  BOOST_TEST(error_of(true, {file("node.pem"), file("node.key"), "", false, "bcp195-extended", ""}) == "");
  // A requestor needs only the CAs it trusts; its own certificate is for servers that ask for one.
  BOOST_TEST(error_of(false, {"", "", file("ca.pem"), true, "bcp195-nd", ""}) == "");
  BOOST_TEST(error_of(false, {file("node.pem"), file("node.key"), file("ca.pem"), true, "bcp195-nd", ""}) == "");
  // A directory of CA certificates named by hash.
  const auto dir = pki() / "cas";
  fs::create_directories(dir);
  fs::copy_file(file("ca.pem"), dir / "ca.pem");
  BOOST_TEST(run({"openssl", "rehash", dir.string()}).exit_code == 0);
  BOOST_TEST(error_of(true, {file("node.pem"), file("node.key"), dir.string(), true, "bcp195-nd", ""}) == "");
}

BOOST_AUTO_TEST_CASE(unusable_material_is_refused_naming_the_key) {
  BOOST_TEST(error_of(true, {"/nonexistent.pem", file("node.key"), file("ca.pem"), true, "bcp195-nd", ""}) ==
             "tls.certificate: /nonexistent.pem does not exist");
  BOOST_TEST(error_of(true, {"", "", file("ca.pem"), true, "bcp195-nd", ""}) == "tls.certificate: is required");
  // The key of another certificate.
  BOOST_TEST(error_of(true, {file("node.pem"), file("modality.key"), file("ca.pem"), true, "bcp195-nd", ""})
                 .find("tls.private_key: " + file("modality.key") + " is not the key of the certificate") == 0u);
  // Not PEM at all.
  std::ofstream(pki() / "junk.pem") << "not a certificate\n";
  BOOST_TEST(error_of(true, {file("junk.pem"), file("node.key"), file("ca.pem"), true, "bcp195-nd", ""}).find("tls.certificate: cannot load") == 0u);
  BOOST_TEST(error_of(true, {file("node.pem"), file("node.key"), file("junk.pem"), true, "bcp195-nd", ""}).find("tls.ca_certificates: cannot load") == 0u);
  BOOST_TEST(error_of(true, {file("node.pem"), file("node.key"), "", true, "bcp195-nd", ""}).find("tls.ca_certificates: is required") == 0u);
  BOOST_TEST(error_of(false, {"", "", "", true, "bcp195-nd", ""}).find("tls.ca_certificates: is required") == 0u);
  BOOST_TEST(error_of(true, {file("node.pem"), file("node.key"), file("ca.pem"), true, "tls1", ""}) ==
             "tls.profile: \"tls1\" is not bcp195-nd or bcp195-extended");
}

BOOST_AUTO_TEST_CASE(a_path_in_the_credentials_directory_is_found_there) {
  const dicom::TlsSettings s{file("node.pem"), "$CREDENTIALS_DIRECTORY/node.key", "${CREDENTIALS_DIRECTORY}/ca.pem", true, "bcp195-nd", ""};
  ::unsetenv("CREDENTIALS_DIRECTORY");
  BOOST_TEST(error_of(true, s) ==
             "tls.private_key: $CREDENTIALS_DIRECTORY/node.key names $CREDENTIALS_DIRECTORY, which is not set (systemd sets it for "
             "a unit with LoadCredential=)");
  ::setenv("CREDENTIALS_DIRECTORY", pki().c_str(), 1);
  BOOST_TEST(error_of(true, s) == "");
  ::setenv("CREDENTIALS_DIRECTORY", "/nonexistent", 1);
  BOOST_TEST(error_of(true, s) == "tls.private_key: /nonexistent/node.key does not exist");
  ::unsetenv("CREDENTIALS_DIRECTORY");
}

BOOST_AUTO_TEST_CASE(calling_ae_bindings_judge_host_transport_and_subject) {
  const std::vector<config::CallingAe> bindings{{"CT1", {"10.0.0.1"}, {}}, {"MR1", {}, {"CN=mr1,O=Hospital"}},
                                                {"US1", {"10.0.0.3"}, {"CN=us1"}}};
  using scp::calling_ae_binding_problem;
  BOOST_TEST(!calling_ae_binding_problem(bindings, "CT1", {"10.0.0.1", false, ""}));
  BOOST_TEST(*calling_ae_binding_problem(bindings, "CT1", {"10.0.0.9", false, ""}) ==
             "calling AE title 'CT1' connected from 10.0.0.9, not from its [[calling_ae]] hosts ('10.0.0.1')");
  BOOST_TEST(!calling_ae_binding_problem(bindings, "MR1", {"10.0.0.7", true, "CN=mr1,O=Hospital"}));
  BOOST_TEST(*calling_ae_binding_problem(bindings, "MR1", {"10.0.0.7", false, ""}) ==
             "calling AE title 'MR1' must use DICOM over TLS ([[calling_ae]] tls_subjects)");
  BOOST_TEST(*calling_ae_binding_problem(bindings, "MR1", {"10.0.0.7", true, "CN=mr2,O=Hospital"}) ==
             "calling AE title 'MR1' presented the certificate of 'CN=mr2,O=Hospital', not one of its [[calling_ae]] tls_subjects "
             "('CN=mr1,O=Hospital')");
  BOOST_TEST(calling_ae_binding_problem(bindings, "MR1", {"10.0.0.7", true, ""})->find("certificate of '(none)'") != std::string::npos);
  // Both bindings must hold.
  BOOST_TEST(calling_ae_binding_problem(bindings, "US1", {"10.0.0.4", true, "CN=us1"}).has_value());
  BOOST_TEST(calling_ae_binding_problem(bindings, "US1", {"10.0.0.3", true, "CN=x"}).has_value());
  BOOST_TEST(!calling_ae_binding_problem(bindings, "US1", {"10.0.0.3", true, "CN=us1"}));
  // A title without a binding is not constrained here.
  BOOST_TEST(!calling_ae_binding_problem(bindings, "OTHER", {"10.0.0.9", false, ""}));
}

BOOST_AUTO_TEST_CASE(check_config_says_which_tls_material_cannot_be_used) {
  config::Config cfg = config::parse("[tls]\nenabled = true\ncertificate = \"" + file("node.pem") + "\"\nprivate_key = \"" +
                                         file("node.key") + "\"\nca_certificates = \"" + file("ca.pem") +
                                         "\"\n[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = 2762\n"
                                         "tls = true\ntls_ca_certificates = \"" + file("ca.pem") + "\"\n",
                                     "t.toml");
  scp::CheckContext ctx;
  ctx.storage_root = pki();
  auto tls_warnings = [&] {
    std::vector<std::string> out;
    for (const auto& w : scp::config_warnings(cfg, ctx))
      if (w.find("tls") != std::string::npos) out.push_back(w);
    return out;
  };
  BOOST_TEST(tls_warnings().empty());
  cfg.tls.private_key = file("modality.key");
  cfg.destinations[0].tls_ca_certificates = (pki() / "missing.pem").string();
  const auto w = tls_warnings();
  BOOST_TEST_REQUIRE(w.size() == 2u);
  BOOST_TEST(w[0] == "tls.private_key: " + file("modality.key") + " is not the key of the certificate " + file("node.pem") +
                         " (the node will not start)");
  BOOST_TEST(w[1] == "destination 'pacs': tls_ca_certificates: " + file("missing.pem") + " does not exist (nothing can be sent there)");
}
