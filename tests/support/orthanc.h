#pragma once
// A real Orthanc (Debian's /usr/sbin/Orthanc) as the PACS of a test: its own temp dir (config,
// storage, index, log), DICOM and HTTP on free loopback ports, readiness by polling REST
// GET /system (never a blind sleep), stop()/start() on the same storage to simulate an outage,
// and small REST helpers (curl -s; JSON parsed minimally: Orthanc IDs and UIDs have no escapes).
//
// Orthanc 1.10.1 behaviour observed with this fixture (see tests/integration/test_store_scu.cpp):
//   * wrong called AE (DicomCheckCalledAet true): A-ASSOCIATE-RJ, Rejected Permanent, source
//     service user, reason "Called AE Title Not Recognized".
//   * Lua ReceivedInstanceFilter returning false: C-STORE-RSP 0x0000 (Success), instance dropped.
//   * Lua ReceivedInstanceFilter raising an error: C-STORE-RSP 0xA700 (Refused: Out of resources).
//   * Lua ReceivedCStoreInstanceFilter: 0 drops the instance with 0x0000; any non-zero value
//     stores it with 0x0000 (1.10.1 does not forward the returned status).
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/daemon_fixture.h"
#include "support/process.h"

namespace testsupport {

struct OrthancOptions {
  std::string aet = "ORTHANC";
  // More members of the top-level JSON object, e.g. R"("AcceptedTransferSyntaxes": ["1.2.840.10008.1.2"])".
  std::string extra_json;
  // A Lua script (LuaScripts), e.g. tests/scripts/orthanc_refuse_all.lua; empty for none.
  std::filesystem::path lua_script;
  // The DicomModalities object, e.g. {"pacsnode": ["PACSNODE", "127.0.0.1", 11112]}.
  std::string modalities_json = "{}";
};

class Orthanc {
 public:
  // Writes the configuration and starts Orthanc (waits for readiness).
  explicit Orthanc(OrthancOptions opt = {}) : opt_(std::move(opt)) {
    dir_ = make_temp_dir("orthanc");
    dicom_port_ = free_port();
    do {
      http_port_ = free_port();
    } while (http_port_ == dicom_port_);
    log_ = dir_ / "orthanc.log";
    config_ = dir_ / "orthanc.json";
    const auto storage = dir_ / "storage";
    std::filesystem::create_directories(storage);
    std::ofstream out(config_);
    out << "{\n"
        << "  \"Name\": \"pacsnode-test\",\n"
        << "  \"StorageDirectory\": " << quote(storage.string()) << ",\n"
        << "  \"IndexDirectory\": " << quote(storage.string()) << ",\n"
        << "  \"DicomAet\": " << quote(opt_.aet) << ",\n"
        << "  \"DicomPort\": " << dicom_port_ << ",\n"
        << "  \"HttpPort\": " << http_port_ << ",\n"
        << "  \"RemoteAccessAllowed\": false,\n"
        << "  \"AuthenticationEnabled\": false,\n"
        << "  \"DicomCheckCalledAet\": true,\n"
        << "  \"DicomModalities\": " << opt_.modalities_json << ",\n"
        << "  \"SaveJobs\": false";
    if (!opt_.lua_script.empty()) out << ",\n  \"LuaScripts\": [" << quote(opt_.lua_script.string()) << "]";
    if (!opt_.extra_json.empty()) out << ",\n  " << opt_.extra_json;
    out << "\n}\n";
    out.close();
    start();
  }
  Orthanc(const Orthanc&) = delete;
  Orthanc& operator=(const Orthanc&) = delete;
  ~Orthanc() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Starts /usr/sbin/Orthanc with the same config and storage; throws (with the log) if it does
  // not answer GET /system within 60 s.
  void start() {
    if (child_.running()) return;
    child_.start({"/usr/sbin/Orthanc", config_.string()}, log_);
    const bool up = eventually([&] { return !child_.running() || http_ok("/system"); }, std::chrono::seconds(60),
                               std::chrono::milliseconds(50));
    if (!child_.running() || !up) {
      child_.kill(SIGKILL);
      child_.wait(std::chrono::seconds(10));
      throw std::runtime_error("Orthanc did not become ready:\n" + log());
    }
  }
  // SIGTERM (SIGKILL after 30 s); the storage stays.
  void stop() {
    if (!child_.running()) return;
    child_.kill(SIGTERM);
    if (child_.wait(std::chrono::seconds(30)) < 0) {
      child_.kill(SIGKILL);
      child_.wait(std::chrono::seconds(10));
    }
  }
  bool running() { return child_.running(); }

  const std::string& aet() const { return opt_.aet; }
  std::uint16_t dicom_port() const { return dicom_port_; }
  std::uint16_t http_port() const { return http_port_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  // GET uri ("/instances"); throws when curl fails or HTTP status is an error.
  std::string get(const std::string& uri) const {
    auto r = run({"curl", "-s", "-f", url(uri)});
    if (r.exit_code != 0) throw std::runtime_error("GET " + uri + " failed (curl exit " + std::to_string(r.exit_code) + ")");
    return r.output;
  }
  bool http_ok(const std::string& uri) const { return run({"curl", "-s", "-f", "-o", "/dev/null", url(uri)}).exit_code == 0; }

  std::vector<std::string> studies() const { return json_strings(get("/studies")); }
  std::vector<std::string> instances() const { return json_strings(get("/instances")); }
  std::vector<std::string> instances_of_study(const std::string& study_id) const {
    // /studies/{id}/instances is an array of objects, each with "ID" (and "ParentSeries").
    return json_values_of(get("/studies/" + study_id + "/instances"), "ID");
  }
  std::size_t count_instances() const {
    return static_cast<std::size_t>(json_number(get("/statistics"), "CountInstances").value_or(0));
  }
  // A DICOM tag of an instance from /instances/{id}/simplified-tags ("SOPInstanceUID").
  std::optional<std::string> instance_tag(const std::string& id, const std::string& name) const {
    return json_string(get("/instances/" + id + "/simplified-tags"), name);
  }
  // Downloads /instances/{id}/file to `path`; true on success.
  bool download_instance(const std::string& id, const std::filesystem::path& path) const {
    return run({"curl", "-s", "-f", "-o", path.string(), url("/instances/" + id + "/file")}).exit_code == 0;
  }

  // Polls `predicate` (every 100 ms) until it is true or `deadline` passes.
  template <typename F>
  bool wait_for(F predicate, std::chrono::milliseconds deadline) const {
    return eventually(predicate, deadline, std::chrono::milliseconds(100));
  }

  // --- minimal JSON (Orthanc's answers are pretty-printed, keys and IDs without escapes) ---
  // Every string literal in `json` (for an array of strings: its elements).
  static std::vector<std::string> json_strings(const std::string& json) {
    std::vector<std::string> out;
    for (std::size_t p = json.find('"'); p != std::string::npos; p = json.find('"', p)) {
      const auto end = json.find('"', p + 1);
      if (end == std::string::npos) break;
      out.push_back(json.substr(p + 1, end - p - 1));
      p = end + 1;
    }
    return out;
  }
  // The string value of the first "key": "value" in `json`.
  static std::optional<std::string> json_string(const std::string& json, const std::string& key) {
    const auto values = json_values_of(json, key);
    if (values.empty()) return std::nullopt;
    return values.front();
  }
  // The string values of every "key": "value" in `json`, in order.
  static std::vector<std::string> json_values_of(const std::string& json, const std::string& key) {
    std::vector<std::string> out;
    const std::string k = "\"" + key + "\"";
    for (std::size_t p = json.find(k); p != std::string::npos; p = json.find(k, p + 1)) {
      auto q = json.find_first_not_of(" \t\r\n", p + k.size());
      if (q == std::string::npos || json[q] != ':') continue;
      q = json.find_first_not_of(" \t\r\n", q + 1);
      if (q == std::string::npos || json[q] != '"') continue;
      const auto end = json.find('"', q + 1);
      if (end == std::string::npos) break;
      out.push_back(json.substr(q + 1, end - q - 1));
    }
    return out;
  }
  // The number value of the first "key": N in `json` (numbers may be quoted, as Orthanc's sizes).
  static std::optional<long long> json_number(const std::string& json, const std::string& key) {
    const std::string k = "\"" + key + "\"";
    const auto p = json.find(k);
    if (p == std::string::npos) return std::nullopt;
    auto q = json.find_first_not_of(" \t\r\n:\"", p + k.size());
    if (q == std::string::npos) return std::nullopt;
    try {
      return std::stoll(json.substr(q));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

 public:
  // A JSON string literal.
  static std::string quote(const std::string& s) {
    std::string q = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q + "\"";
  }

 private:
  std::string url(const std::string& uri) const { return "http://127.0.0.1:" + std::to_string(http_port_) + uri; }

  OrthancOptions opt_;
  std::filesystem::path dir_, config_, log_;
  std::uint16_t dicom_port_ = 0, http_port_ = 0;
  Child child_;
};

}  // namespace testsupport
