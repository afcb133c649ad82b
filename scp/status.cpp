#include "scp/status.h"

#include <systemd/sd-daemon.h>

#include <fstream>

#include <fmt/format.h>

#include "dicom/log.h"
#include "scp/study_assembler.h"

namespace scp {

std::string to_json(const Status& s, std::int64_t now_ms, std::int64_t started_ms) {
  return fmt::format(
      "{{\n  \"status\": \"ok\",\n  \"port\": {},\n  \"uptime_seconds\": {},\n  \"open_associations\": {},\n"
      "  \"open_studies\": {},\n  \"associations\": {},\n  \"rejected_associations\": {},\n  \"instances_stored\": {},\n"
      "  \"instances_refused\": {},\n  \"bytes_received\": {},\n  \"jobs_queued\": {},\n  \"jobs_running\": {},\n"
      "  \"analysis_cache_bytes\": {},\n  \"updated_ms\": {}\n}}\n",
      s.port, (now_ms - started_ms) / 1000, s.open_associations, s.open_studies, s.associations, s.rejected_associations,
      s.instances_stored, s.instances_refused, s.bytes_received, s.jobs_queued, s.jobs_running, s.analysis_cache_bytes,
      now_ms);
}

StatusWriter::StatusWriter(boost::asio::io_context& io, std::filesystem::path file, std::function<Status()> read,
                           std::chrono::seconds every)
    : timer_(io), file_(std::move(file)), read_(std::move(read)), every_(every), started_ms_(wall_ms()) {}

void StatusWriter::start() { tick(); }
void StatusWriter::stop() { timer_.cancel(); }

void StatusWriter::write_now() {
  const Status s = read_();
  const auto tmp = file_.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << to_json(s, wall_ms(), started_ms_);
    if (!out) return;  // disk full: the next tick tries again
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file_, ec);
  sd_notifyf(0, "STATUS=%zu open association(s), %zu open study(ies), %llu stored, %llu refused", s.open_associations,
             s.open_studies, static_cast<unsigned long long>(s.instances_stored),
             static_cast<unsigned long long>(s.instances_refused));
}

void StatusWriter::tick() {
  write_now();
  timer_.expires_after(every_);
  timer_.async_wait([this](boost::system::error_code ec) { if (!ec) tick(); });
}

}  // namespace scp
