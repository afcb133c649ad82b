#include "scp/outbound_queue.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>

#include "dicom/log.h"
#include "dicom/store_scu.h"
#include "scp/study_assembler.h"

namespace asio = boost::asio;

namespace scp {

std::chrono::milliseconds backoff(const config::Config::Outbound& o, int attempts, double jitter) {
  const double base = std::min<double>(o.max_backoff_seconds, o.initial_backoff_seconds * std::pow(2.0, std::min(attempts, 30)));
  return std::chrono::milliseconds(static_cast<std::int64_t>(base * jitter * 1000.0));
}

// One sender thread per destination configured at start, at least 4: destinations added by a
// reload share them (a slow one can then delay another's next send, never lose it).
OutboundQueue::OutboundQueue(asio::io_context& io, Index& index, const config::LiveConfig& cfg, NodeMetrics* metrics)
    : index_(index),
      cfg_(cfg),
      strand_(asio::make_strand(io)),
      timer_(strand_),
      senders_(std::max<std::size_t>(4, cfg.get()->destinations.size())),
      metrics_(metrics) {}

OutboundQueue::~OutboundQueue() { stop(); }

void OutboundQueue::start() { asio::post(strand_, [this] { tick(); }); }

void OutboundQueue::notify() {
  asio::post(strand_, [this] {
    if (!stopping_) tick();
  });
}

void OutboundQueue::stop() {
  if (stopping_.exchange(true)) return;
  asio::post(strand_, [this] { timer_.cancel(); });
  senders_.join();
}

void OutboundQueue::tick() {
  if (stopping_) return;
  const auto now = wall_ms();
  const auto cfg = cfg_.get();
  for (const auto& dest : cfg->destinations) {
    if (in_flight_.count(dest.name)) continue;
    std::vector<OutboxRow> rows;
    try {
      // Claimed for this node: in a cluster no other node sends these rows meanwhile. The claim
      // outlasts a slow batch (a connect and a DIMSE timeout, twice) and never less than the lease;
      // a node that dies leaves its rows to the others when it expires.
      const std::int64_t claim_ms =
          std::max<std::int64_t>(std::int64_t(cfg->index.lease_seconds) * 1000,
                                 std::int64_t(cfg->outbound.connect_timeout_seconds + cfg->outbound.dimse_timeout_seconds) * 2000);
      rows = index_.claim_due(dest.name, now, cfg->outbound.batch, claim_ms);
    } catch (const std::exception& e) {
      pacsnode::component_logger("outbound")->error("outbox: {}", e.what());
      continue;
    }
    if (rows.empty()) continue;
    in_flight_.insert(dest.name);
    asio::post(senders_, [this, cfg, dest, rows = std::move(rows)]() mutable { send(cfg, dest, std::move(rows)); });
  }
  timer_.expires_after(std::chrono::seconds(1));
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) tick();
  });
}

dicom::StoreTarget store_target(const config::Config& c, const config::Destination& dest) {
  dicom::StoreTarget t;
  t.calling_ae = c.node.ae_title;
  t.called_ae = dest.ae_title;
  t.host = dest.host;
  t.port = dest.port;
  t.connect_timeout_seconds = c.outbound.connect_timeout_seconds;
  t.acse_timeout_seconds = c.node.acse_timeout_seconds;
  t.dimse_timeout_seconds = c.outbound.dimse_timeout_seconds;
  if (dest.tls) {
    t.tls = dicom::TlsSettings{dest.tls_certificate, dest.tls_private_key, dest.tls_ca_certificates, true, dest.tls_profile,
                               dest.tls_server_name};
    t.tls_key_prefix = fmt::format("destination '{}': tls_", dest.name);
  }
  return t;
}

void OutboundQueue::send(std::shared_ptr<const config::Config> cfg, config::Destination dest, std::vector<OutboxRow> rows) {
  auto log = pacsnode::component_logger("outbound");
  const config::Config& c = *cfg;  // the config in force when this batch was taken
  const dicom::StoreTarget target = store_target(c, dest);
  std::vector<std::filesystem::path> files;
  for (const auto& r : rows) files.emplace_back(r.path);

  const auto started = std::chrono::steady_clock::now();
  std::vector<dicom::SendResult> results;
  try {
    results = dicom::store_files(target, files);
  } catch (const std::exception& e) {  // store_files reports per file; this is a bug guard
    for (const auto& f : files) results.push_back({f, dicom::SendOutcome::transient_failure, std::nullopt, e.what()});
  }
  int sent = 0, retrying = 0, dead = 0;
  std::string last_reason;
  const auto now = wall_ms();
  thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  for (std::size_t i = 0; i < rows.size() && i < results.size(); ++i) {
    const auto& row = rows[i];
    const auto& res = results[i];
    try {
      if (res.outcome == dicom::SendOutcome::sent) {
        index_.mark_sent(row.id, now);
        ++sent;
        continue;
      }
      last_reason = res.detail;
      const bool too_many = row.attempts + 1 >= c.outbound.max_attempts;
      const bool too_old = now - row.created_ms > std::int64_t(c.outbound.max_age_hours) * 3600 * 1000;
      if (res.outcome == dicom::SendOutcome::permanent_failure || too_many || too_old) {
        const std::string why = res.outcome == dicom::SendOutcome::permanent_failure
                                    ? res.detail
                                    : fmt::format("gave up after {} attempt(s): {}", row.attempts + 1, res.detail);
        index_.mark_dead(row.id, why, now);
        ++dead;
        log->error("destination '{}': {} (outbox #{}, study {}) dead-lettered: {}; `pacsnode outbox retry` sends it again",
                   dest.name, row.kind, row.id, study_hash(index_.log_key(), row.study_uid), why);
      } else {
        index_.mark_retry(row.id, now + backoff(c.outbound, row.attempts, jitter(rng)).count(), res.detail, now);
        ++retrying;
      }
    } catch (const std::exception& e) {
      log->error("outbox #{}: cannot record the outcome: {}", row.id, e.what());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (metrics_) {
    if (sent) metrics_->deliveries.add({dest.name, "sent"}, static_cast<std::uint64_t>(sent));
    if (retrying) metrics_->deliveries.add({dest.name, "retry"}, static_cast<std::uint64_t>(retrying));
    if (dead) metrics_->deliveries.add({dest.name, "dead"}, static_cast<std::uint64_t>(dead));
  }
  if (retrying || dead)
    log->warn("destination '{}' ({}@{}:{}): {} sent, {} to retry, {} dead-lettered in {:.2f} s; last problem: {}", dest.name,
              dest.ae_title, dest.host, dest.port, sent, retrying, dead, secs, last_reason);
  else
    log->info("destination '{}' ({}@{}:{}): {} object(s) sent in {:.2f} s", dest.name, dest.ae_title, dest.host, dest.port,
              sent, secs);
  asio::post(strand_, [this, name = dest.name, more = sent > 0] {
    in_flight_.erase(name);
    if (more && !stopping_) tick();  // more may be due
  });
}

}  // namespace scp
