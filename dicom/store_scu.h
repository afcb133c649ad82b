#pragma once
// C-STORE SCU (and a C-ECHO, see echo() below): sends result files (SEG, SR, ...) to the PACS over one association and classifies
// every file as sent, transient failure (retry later) or permanent failure (dead letter).
//
// Association (DCMTK ASC_* / DIMSE_* directly, because DcmSCU 3.6.7 does not expose the
// A-ASSOCIATE-RJ result that separates transient from permanent rejections):
//   * Per distinct SOP class of the readable files, one presentation context per distinct
//     "own" transfer syntax of those files (unless it is explicit/implicit VR little endian) and
//     one with [explicit VR LE, implicit VR LE]. At most 128 contexts (DICOM limit); a file whose
//     context did not fit is a permanent failure.
//   * Per file: the accepted context of its SOP class with the file's own transfer syntax; else,
//     for a file with native (not encapsulated) pixel data, any accepted context of its SOP class
//     with a native syntax (DCMTK converts between uncompressed syntaxes on the fly). Compressed
//     data is never decompressed or recompressed.
//   * Timeouts: connect_timeout_seconds (TCP connect; sets DCMTK's process-wide
//     dcmConnectionTimeout, so concurrent calls with different values race: last one wins),
//     acse_timeout_seconds (A-ASSOCIATE-AC/RJ and release), dimse_timeout_seconds (each
//     C-STORE-RSP). Nagle is disabled (setenv TCP_NODELAY=1, once per process) before the
//     first association.
//
// Classification (SendResult::outcome), every file gets exactly one result, in input order:
//   transient_failure: connection refused / unreachable, connect, ACSE or DIMSE timeout,
//     association aborted or dropped by the peer, A-ASSOCIATE-RJ with result
//     "rejected-transient"; all files not yet answered get it. C-STORE-RSP 0xA7xx (Refused: out
//     of resources).
//   permanent_failure: A-ASSOCIATE-RJ "rejected-permanent" (e.g. called AE title not recognized)
//     for every file; no accepted presentation context for the file's SOP class ("SOP class not
//     accepted by the destination") or for its (compressed) transfer syntax; a file that cannot
//     be read or has no SOP Class/Instance UID; C-STORE-RSP 0xA9xx (data set does not match SOP
//     class), 0xCxxx (cannot understand), 0x0122 (SOP class not supported), 0x0124 (not
//     authorized), 0x0210 (duplicate invocation), 0x0211 (unrecognized operation), 0x0110
//     (processing failure) and any other status that is neither success nor warning.
//   sent: C-STORE-RSP 0x0000 and the warnings 0xB000 (coercion of data elements), 0xB006
//     (elements discarded), 0xB007 (data set does not match SOP class); other DICOM warning
//     statuses (0x0001, 0x0107, 0x0116, 0xBxxx) also mean "stored" and count as sent.
//   A failure of the association itself after some files were answered (e.g. the peer aborts
//   while file k is in flight) leaves the earlier results as they are: file k is transient with
//   the reason, the later files are transient with "not sent: the association ended ...". A
//   failing A-RELEASE after all files were answered changes no result. A file that cannot be
//   encoded on the wire also ends the association (DCMTK cannot tell it from a network error):
//   transient, so the outbound queue's attempt limit decides.
//
// Known peer behaviour (Orthanc 1.10.1, see tests/integration/test_store_scu.cpp): a Lua
// ReceivedInstanceFilter returning false answers 0x0000 and silently drops the instance (we
// cannot tell: "sent"); a filter raising an error answers 0xA700 (transient); a wrong called AE
// title with DicomCheckCalledAet is an A-ASSOCIATE-RJ rejected-permanent, "Called AE Title Not
// Recognized" (permanent).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dicom/tls.h"

namespace dicom {

struct StoreTarget {
  std::string calling_ae = "PACSNODE";
  std::string called_ae;
  std::string host;
  std::uint16_t port = 0;
  // DICOM over TLS (dicom/tls.h), with the config key prefix its problems are reported under
  // ("destination 'pacs': tls_"). A TLS problem (a file that cannot be loaded, a handshake that
  // fails: unknown CA, expired certificate) is a transient failure: the admin can fix it.
  std::optional<TlsSettings> tls;
  std::string tls_key_prefix = "tls_";
  int connect_timeout_seconds = 10;
  int acse_timeout_seconds = 30;
  int dimse_timeout_seconds = 60;
};

enum class SendOutcome { sent, transient_failure, permanent_failure };

struct SendResult {
  std::filesystem::path file;
  SendOutcome outcome = SendOutcome::transient_failure;
  std::optional<std::uint16_t> status;  // DIMSE status when a C-STORE-RSP came
  std::string detail;                   // human-readable reason (for logs and the outbox); no UIDs
};

// Sends every file over ONE association (see the header comment). Never throws for network or
// peer problems: each file gets a result. An empty list opens no association.
std::vector<SendResult> store_files(const StoreTarget& target, const std::vector<std::filesystem::path>& files);

// The outcome a C-STORE-RSP status implies (the table above). Pure; no I/O.
SendOutcome classify_store_status(std::uint16_t status);

// "sent", "transient_failure", "permanent_failure".
const char* to_string(SendOutcome outcome);

// The transfer syntaxes of the context proposed for every SOP class (beside one per compressed
// syntax a file has) and of the Verification context of echo(): explicit VR little endian, then
// implicit VR little endian. Stated in docs/conformance-statement.md (tests/unit/
// test_conformance_statement.cpp keeps the two in step).
const std::vector<std::string>& native_transfer_syntaxes();

// A C-ECHO: what happened and how long each step took (`pacsnode echo`).
struct EchoResult {
  bool associated = false;               // A-ASSOCIATE-AC received
  bool rejected = false;                 // A-ASSOCIATE-RJ received (detail: result, source, reason)
  bool rejected_permanent = false;       //   ... with result "rejected-permanent"
  std::optional<std::uint16_t> status;   // C-ECHO-RSP status when one came
  std::string detail;                    // what went wrong, or the status text
  double associate_ms = 0;               // TCP connect and association negotiation
  double echo_ms = 0;                    // C-ECHO-RQ to C-ECHO-RSP
  double total_ms = 0;                   // everything, release included
  bool ok() const { return status && *status == 0x0000; }
};

// One association proposing the Verification SOP class (native_transfer_syntaxes()),
// one C-ECHO, A-RELEASE. Same timeouts (connect, ACSE, DIMSE from `target`) and Nagle handling as
// store_files. Never throws for network or peer problems.
EchoResult echo(const StoreTarget& target);

}  // namespace dicom
