#include "scp/status.h"

#include <systemd/sd-daemon.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "dicom/log.h"
#include "scp/study_assembler.h"

namespace scp {

std::string to_json(const Status& s, std::int64_t now_ms, std::int64_t started_ms) {
  nlohmann::ordered_json j;
  j["status"] = s.health;
  j["reasons"] = s.health_reasons;
  j["port"] = s.port;
  j["tls_port"] = s.tls_port;
  j["uptime_seconds"] = (now_ms - started_ms) / 1000;
  j["open_associations"] = s.open_associations;
  j["pending_connections"] = s.pending_connections;
  j["open_studies"] = s.open_studies;
  j["associations"] = s.associations;
  j["rejected_associations"] = s.rejected_associations;
  j["rejections"] = s.rejections;
  j["aborted_associations"] = s.aborted_associations;
  j["instances_stored"] = s.instances_stored;
  j["instances_refused"] = s.instances_refused;
  j["refusals"] = s.refusals;
  j["bytes_received"] = s.bytes_received;
  j["jobs_queued"] = s.jobs_queued;
  j["jobs_running"] = s.jobs_running;
  j["analysis_cache_bytes"] = s.analysis_cache_bytes;
  if (!s.retention_json.empty()) j["retention"] = nlohmann::ordered_json::parse(s.retention_json);
  if (!s.node.empty()) j["node"] = s.node;
  if (!s.cluster_json.empty()) j["cluster"] = nlohmann::ordered_json::parse(s.cluster_json);
  j["updated_ms"] = now_ms;
  return j.dump(2) + "\n";
}

StatusWriter::StatusWriter(boost::asio::io_context& io, std::filesystem::path file, std::function<Status()> read,
                           std::chrono::seconds every)
    : timer_(io), file_(std::move(file)), read_(std::move(read)), every_(every), started_ms_(wall_ms()) {}

void StatusWriter::start() { tick(); }
std::string StatusWriter::json() const { return to_json(read_(), wall_ms(), started_ms_); }
void StatusWriter::stop() { timer_.cancel(); }

void StatusWriter::write_now() {
  const Status s = read_();
  const auto tmp = file_.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << to_json(s, wall_ms(), started_ms_);
    if (out) {
      out.close();
      std::error_code ec;
      std::filesystem::rename(tmp, file_, ec);
    }
    // A storage that cannot be written cannot hold the file that says so: STATUS= below still
    // does, and so do the watchdog and the DICOM port (scp/health.h).
  }
  std::string line = s.health;
  if (!s.health_reasons.empty()) line += ": " + s.health_reasons.front() + (s.health_reasons.size() > 1 ? " (and more)" : "");
  sd_notifyf(0, "STATUS=%s; %zu open association(s), %zu open study(ies), %llu stored, %llu refused", line.c_str(),
             s.open_associations, s.open_studies, static_cast<unsigned long long>(s.instances_stored),
             static_cast<unsigned long long>(s.instances_refused));
}

void StatusWriter::tick() {
  write_now();
  timer_.expires_after(every_);
  timer_.async_wait([this](boost::system::error_code ec) { if (!ec) tick(); });
}

}  // namespace scp
