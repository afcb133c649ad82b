#pragma once
// DICOM over TLS (PS3.15 Annex B secure transport connection profiles), with DCMTK's dcmtls on
// the system's OpenSSL: the settings of one end of a connection and the TLS context made of them.
//
// Profiles (`profile` in [tls] and [[destination]]), both without any fallback below TLS 1.2:
//   "bcp195-nd"        the Non-Downgrading BCP 195 profile: TLS 1.2 and 1.3, the four
//                      (EC)DHE-RSA AES-GCM suites for 1.2.
//   "bcp195-extended"  the Extended BCP 195 profile: TLS 1.2 only, those suites plus ECDSA ones.
// The peer's certificate is verified against `ca_certificates` (chain, validity period, purpose).
// A requestor also checks the server's name when `server_name` is given ([[destination]]
// tls_server_name); the acceptor identifies clients by their certificates' subjects
// ([[calling_ae]] tls_subjects).
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmtls/tlslayer.h>

struct ssl_st;

namespace dicom {

// A path that starts with "$CREDENTIALS_DIRECTORY/" is taken from the directory systemd hands a
// service for its LoadCredential= files (a private key that stays readable by root only).
struct TlsSettings {
  std::string certificate;      // PEM: this end's certificate (optionally followed by its chain)
  std::string private_key;      // PEM, not encrypted
  std::string ca_certificates;  // PEM file, or a directory of PEM files named by hash (c_rehash)
  bool require_peer_certificate = true;  // acceptor: the client must present one (a requestor always requires the server's)
  std::string profile = "bcp195-nd";
  // Requestor: the DNS name or IP address the server's certificate must carry (subjectAltName, or
  // the common name without one); empty: any certificate of a trusted CA.
  std::string server_name;
};

// A setting that cannot be used: "<key>: <what is wrong>".
class TlsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A DCMTK TLS transport layer (an OpenSSL context) for the acceptor or the requestor side, with
// the profile, certificate, key and trusted CAs loaded and checked. `key_prefix` names the config
// table in messages ("tls", "destination[0].tls_"). Throws TlsError.
std::unique_ptr<DcmTLSTransportLayer> make_tls_layer(bool acceptor, const TlsSettings& settings, const std::string& key_prefix);

// The subject of the peer's verified certificate in RFC 2253 form ("CN=ct1,O=Hospital"), or ""
// when it presented none.
std::string peer_subject(ssl_st* ssl);

// OpenSSL's error queue as one line (emptied), and the certificate verification result of `ssl`
// when it failed ("certificate has expired"); without `ssl`, that of the last verification a
// requestor's context made on this thread.
std::string tls_error_text(ssl_st* ssl);

}  // namespace dicom
