#pragma once
// Health and metrics: <root>/status.json, rewritten atomically every few seconds, for a monitoring
// agent or an administrator (`cat`), and the same figures as the systemd STATUS= line.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace scp {

struct Status {
  std::string health = "ok";  // ok, degraded, failing (scp/health.h)
  std::vector<std::string> health_reasons;
  std::uint16_t port = 0;      // plain DICOM (0: TLS only)
  std::uint16_t tls_port = 0;  // DICOM over TLS (0: off)
  std::size_t open_associations = 0, open_studies = 0;
  std::uint64_t associations = 0, rejected_associations = 0, instances_stored = 0, instances_refused = 0, bytes_received = 0;
  std::size_t jobs_queued = 0, jobs_running = 0;
  std::size_t analysis_cache_bytes = 0;  // freed volume/mask blocks kept for the next job (0 when idle)
  std::size_t pending_connections = 0;   // accepted, A-ASSOCIATE-RQ not complete yet
  std::map<std::string, std::uint64_t> rejections{};          // connections/associations turned away, by reason
  std::map<std::string, std::uint64_t> aborted_associations{};  // ended without a release, by reason
  std::map<std::string, std::uint64_t> refusals{};              // instances refused, by reason
  std::string retention_json;  // a JSON object (scp/retention.h to_json(RetentionStats)); empty: none
  std::string node;            // this node's name ([node] name)
  std::string cluster_json;    // a cluster: a JSON array of every node's last heartbeat; empty: one node
};

std::string to_json(const Status& s, std::int64_t now_ms, std::int64_t started_ms);

class StatusWriter {
 public:
  StatusWriter(boost::asio::io_context& io, std::filesystem::path file, std::function<Status()> read,
               std::chrono::seconds every = std::chrono::seconds(5));
  void start();
  void stop();
  void write_now();
  // What status.json holds right now (thread-safe as far as `read` is: the HTTP API calls it).
  Status read() const { return read_(); }
  std::string json() const;

 private:
  void tick();
  boost::asio::steady_timer timer_;
  std::filesystem::path file_;
  std::function<Status()> read_;
  std::chrono::seconds every_;
  std::int64_t started_ms_;
};

}  // namespace scp
