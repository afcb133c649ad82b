#pragma once
// Why connections and associations were turned away or cut off, counted for status.json. The
// names are status.json's keys: keep them stable.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace scp {

enum class Rejection {
  // Before association (the acceptor closes the connection; DCMTK never sees it).
  pending_limit,               // node.max_pending_connections reached
  pending_per_source_limit,    // node.max_pending_per_source reached
  preassociation_timeout,      // no complete A-ASSOCIATE-RQ within node.preassociation_timeout_seconds
  closed_before_associate_rq,  // the peer closed or reset first (port scanners, health checks)
  not_associate_rq,            // the first PDU is of another type (or not DICOM at all)
  associate_rq_too_large,      // announced length above the acceptor's bound
  associate_rq_too_short,      // announced length below the fixed part of an A-ASSOCIATE-RQ
  tls_handshake_failed,        // TLS port: no certificate, one that does not verify, no common protocol, not TLS at all
  // The request was read whole and given to DCMTK.
  associate_rq_invalid,        // DCMTK could not make sense of it
  association_limit,           // node.max_associations reached
  called_ae_title,             // not our AE title
  calling_ae_title,            // not in node.allowed_calling_ae
  no_presentation_context,     // nothing proposed that we accept
  refused_other,               // application context name, implementation class UID, ...
  node_failing,                // health is failing (storage or index cannot be written): try later
  count_
};

enum class Abort {
  timeout,            // DIMSE or ACSE timeout: an idle or too slow peer
  peer_abort,         // A-ABORT from the peer
  connection_closed,  // the peer closed the connection without a release
  protocol_error,     // malformed PDU, PDV or DIMSE message
  shutdown,           // node.drain_seconds ran out at SIGTERM
  count_
};

// Why a C-STORE was answered with a failure status (the instance was not stored).
enum class Refusal {
  free_space_reserve,  // storage.min_free_mb reached: 0xA700
  storage_error,       // the file could not be written or synced: 0xA700
  too_large,           // above storage.max_instance_mb: 0xC000
  malformed,           // failed the structural scan or the header read: 0xC000
  index_unavailable,   // a cluster's shared index could not record it: 0xA700
  count_
};

constexpr std::string_view name(Refusal r) {
  constexpr std::array<std::string_view, static_cast<std::size_t>(Refusal::count_)> names{
      "free_space_reserve", "storage_error", "too_large", "malformed", "index_unavailable"};
  return names[static_cast<std::size_t>(r)];
}

constexpr std::string_view name(Rejection r) {
  constexpr std::array<std::string_view, static_cast<std::size_t>(Rejection::count_)> names{
      "pending_limit",         "pending_per_source_limit", "preassociation_timeout", "closed_before_associate_rq",
      "not_associate_rq",      "associate_rq_too_large",   "associate_rq_too_short", "tls_handshake_failed", "associate_rq_invalid",
      "association_limit",     "called_ae_title",          "calling_ae_title",       "no_presentation_context",
      "refused_other",         "node_failing"};
  return names[static_cast<std::size_t>(r)];
}

constexpr std::string_view name(Abort a) {
  constexpr std::array<std::string_view, static_cast<std::size_t>(Abort::count_)> names{
      "timeout", "peer_abort", "connection_closed", "protocol_error", "shutdown"};
  return names[static_cast<std::size_t>(a)];
}

// One atomic counter per value of an enum with a count_ member and a name().
template <typename E>
class ReasonCounters {
 public:
  void add(E e) { n_[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t get(E e) const { return n_[static_cast<std::size_t>(e)].load(std::memory_order_relaxed); }
  // Every reason, zero or not, so that a monitoring agent sees the keys from the start.
  std::map<std::string, std::uint64_t> snapshot() const {
    std::map<std::string, std::uint64_t> out;
    for (std::size_t i = 0; i < n_.size(); ++i) out[std::string(name(static_cast<E>(i)))] = n_[i].load();
    return out;
  }

 private:
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(E::count_)> n_{};
};

}  // namespace scp
