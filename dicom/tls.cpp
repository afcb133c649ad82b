#include "dicom/tls.h"

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <system_error>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <dcmtk/dcmtls/tlsciphr.h>

namespace dicom {
namespace {

void require_readable(const std::string& key, const std::string& path, bool directory_allowed) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) throw TlsError(fmt::format("{}: {} does not exist", key, path));
  if (std::filesystem::is_directory(st) && !directory_allowed) throw TlsError(fmt::format("{}: {} is a directory, not a PEM file", key, path));
}

// "$CREDENTIALS_DIRECTORY/NAME" (or "${CREDENTIALS_DIRECTORY}/NAME"): a file systemd's
// LoadCredential= handed to the service, readable by it alone.
std::string resolve(const std::string& key, const std::string& path) {
  for (const std::string var : {"$CREDENTIALS_DIRECTORY/", "${CREDENTIALS_DIRECTORY}/"}) {
    if (path.rfind(var, 0) != 0) continue;
    const char* dir = std::getenv("CREDENTIALS_DIRECTORY");
    if (!dir || !*dir)
      throw TlsError(fmt::format("{}: {} names $CREDENTIALS_DIRECTORY, which is not set (systemd sets it for a unit with "
                                 "LoadCredential=)",
                                 key, path));
    return std::string(dir) + "/" + path.substr(var.size());
  }
  return path;
}

// Why the last certificate verification on this thread failed, for a requestor's message: DCMTK
// owns its TLS session, so SSL_get_verify_result is out of reach there.
thread_local std::string last_verify_error;

int remember_verify_error(int ok, X509_STORE_CTX* store) {
  if (!ok) last_verify_error = X509_verify_cert_error_string(X509_STORE_CTX_get_error(store));
  return ok;
}

std::string condition_text(const OFCondition& c) {
  std::string t = c.text();
  const std::string queue = tls_error_text(nullptr);
  return queue.empty() ? t : t + ": " + queue;
}

}  // namespace

std::unique_ptr<DcmTLSTransportLayer> make_tls_layer(bool acceptor, const TlsSettings& given, const std::string& prefix) {
  TlsSettings s = given;
  s.certificate = resolve(prefix + "certificate", s.certificate);
  s.private_key = resolve(prefix + "private_key", s.private_key);
  s.ca_certificates = resolve(prefix + "ca_certificates", s.ca_certificates);
  static std::once_flag once;
  std::call_once(once, [] { DcmTLSTransportLayer::initializeOpenSSL(); });
  ERR_clear_error();

  auto layer = std::make_unique<DcmTLSTransportLayer>(acceptor ? NET_ACCEPTOR : NET_REQUESTOR, nullptr, OFFalse);
  if (!*layer) throw TlsError("cannot create a TLS context: " + tls_error_text(nullptr));
  DcmTLSSecurityProfile profile = TSP_Profile_BCP195_ND;
  if (s.profile == "bcp195-extended") profile = TSP_Profile_BCP195_Extended;
  else if (s.profile != "bcp195-nd") throw TlsError(fmt::format("{}profile: \"{}\" is not bcp195-nd or bcp195-extended", prefix, s.profile));
  if (OFCondition c = layer->setTLSProfile(profile); c.bad())
    throw TlsError(fmt::format("{}profile: {}", prefix, condition_text(c)));
  if (OFCondition c = layer->activateCipherSuites(); c.bad())
    throw TlsError(fmt::format("{}profile: cannot activate its cipher suites: {}", prefix, condition_text(c)));

  const bool own_certificate = acceptor || !s.certificate.empty() || !s.private_key.empty();
  if (own_certificate) {
    const std::string cert_key = prefix + "certificate", key_key = prefix + "private_key";
    if (s.certificate.empty()) throw TlsError(fmt::format("{}: is required{}", cert_key, acceptor ? "" : " with a private key"));
    if (s.private_key.empty()) throw TlsError(fmt::format("{}: is required{}", key_key, acceptor ? "" : " with a certificate"));
    require_readable(cert_key, s.certificate, false);
    require_readable(key_key, s.private_key, false);
    // The key first: loaded after a certificate, OpenSSL refuses a key of another certificate
    // with an error of its own; loaded before, the comparison below says so in our words.
    if (OFCondition c = layer->setPrivateKeyFile(s.private_key.c_str(), DCF_Filetype_PEM); c.bad())
      throw TlsError(fmt::format("{}: cannot load {} (an unencrypted PEM key is needed): {}", key_key, s.private_key, condition_text(c)));
    if (OFCondition c = layer->setCertificateFile(s.certificate.c_str(), DCF_Filetype_PEM); c.bad())
      throw TlsError(fmt::format("{}: cannot load {}: {}", cert_key, s.certificate, condition_text(c)));
    ERR_clear_error();  // a mismatching key is dropped with a queued error; the check below reports it
    if (!layer->checkPrivateKeyMatchesCertificate())
      throw TlsError(fmt::format("{}: {} is not the key of the certificate {}", key_key, s.private_key, s.certificate));
  }

  const std::string ca_key = prefix + "ca_certificates";
  const bool verify = !acceptor || s.require_peer_certificate || !s.ca_certificates.empty();
  if (verify) {
    if (s.ca_certificates.empty()) throw TlsError(fmt::format("{}: is required (the CA certificates that peers' certificates must chain to)", ca_key));
    require_readable(ca_key, s.ca_certificates, true);
    const OFCondition c = std::filesystem::is_directory(s.ca_certificates)
                              ? layer->addTrustedCertificateDir(s.ca_certificates.c_str(), DCF_Filetype_PEM)
                              : layer->addTrustedCertificateFile(s.ca_certificates.c_str(), DCF_Filetype_PEM);
    if (c.bad()) throw TlsError(fmt::format("{}: cannot load {}: {}", ca_key, s.ca_certificates, condition_text(c)));
  }
  if (!acceptor && !s.server_name.empty()) {  // and carry this name
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(layer->getNativeHandle());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const bool ip = X509_VERIFY_PARAM_set1_ip_asc(param, s.server_name.c_str()) == 1;
    if (!ip && X509_VERIFY_PARAM_set1_host(param, s.server_name.c_str(), 0) != 1)
      throw TlsError(fmt::format("{}server_name: \"{}\" is not a host name or an IP address", prefix, s.server_name));
  }
  // Acceptor: require (or, when one is presented, check) the client's certificate. Requestor: the
  // server's certificate must verify.
  layer->setCertificateVerification(!verify ? DCV_ignoreCertificate
                                    : acceptor && !s.require_peer_certificate ? DCV_checkCertificate
                                                                              : DCV_requireCertificate);
  if (!acceptor) {  // same mode, but remember why a verification failed ("hostname mismatch", "certificate has expired")
    SSL_CTX* ctx = layer->getNativeHandle();
    SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx), remember_verify_error);
  }
  return layer;
}

std::string peer_subject(ssl_st* ssl) {
  X509* cert = SSL_get_peer_certificate(ssl);
  if (!cert) return {};
  std::string out;
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
      char* data = nullptr;
      const long n = BIO_get_mem_data(bio, &data);
      if (n > 0) out.assign(data, static_cast<std::size_t>(n));
    }
    BIO_free(bio);
  }
  X509_free(cert);
  return out;
}

std::string tls_error_text(ssl_st* ssl) {
  std::string out;
  if (ssl) {
    const long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) out = fmt::format("certificate verification failed: {}", X509_verify_cert_error_string(v));
  } else if (!last_verify_error.empty()) {
    out = "certificate verification failed: " + last_verify_error;
  }
  last_verify_error.clear();
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    // "error:0A000086:SSL routines::certificate verify failed": keep the reason after the last "::" or ":".
    std::string text = buf;
    if (const auto at = text.rfind(':'); at != std::string::npos && at + 1 < text.size()) text = text.substr(at + 1);
    if (out.find(text) == std::string::npos) out += (out.empty() ? "" : "; ") + text;
  }
  return out;
}

}  // namespace dicom
