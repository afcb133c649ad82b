#pragma once
// The immutable configuration: parsed once from TOML, validated as a whole.
#include <array>
#include <cstdint>
#include <optional>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace config {

struct Destination {
  std::string name;
  std::string ae_title;
  std::string host;
  std::uint16_t port = 0;
};

// A [[profile]] table: a built-in profile (`base`) with match rules and parameters overridden.
// Unset fields keep the base profile's value.
struct ProfileConfig {
  std::string name;
  std::string base = "generic";  // "ct-chest" or "generic"
  std::optional<std::vector<std::string>> modalities, keywords, tokens;
  std::optional<int> median;                    // 0, 3 or 5
  std::optional<double> gaussian_sigma_mm;
  std::optional<std::array<double, 2>> threshold;  // generic: [lo, hi] instead of Otsu
  std::optional<int> keep_largest;
  std::optional<bool> fill_holes;
  std::optional<std::string> segment_name;
  std::optional<double> laa_threshold_hu;             // ct-chest
  std::optional<double> emphysema_threshold_percent;  // ct-chest rule
  std::optional<std::array<double, 2>> window;         // preview [width, level]
  std::optional<std::string> model;                    // trained model file (pacsnode train)
  std::optional<std::vector<std::string>> destinations;  // names of [[destination]]s; unset: all
};

struct Config {
  struct Node {
    std::string ae_title = "PACSNODE";
    std::string bind = "127.0.0.1";
    std::uint16_t port = 11112;
    int max_associations = 16;
    std::vector<std::string> allowed_calling_ae;  // empty: any
    int acse_timeout_seconds = 30;
    int dimse_timeout_seconds = 60;
    int drain_seconds = 30;
  } node;
  struct Storage {
    std::filesystem::path root = "var/pacsnode";
    std::uint64_t min_free_mb = 256;
  } storage;
  struct Study {
    int quiet_seconds = 20;
    int expected_grace_seconds = 2;
  } study;
  struct Analysis {
    bool enabled = true;
    int workers = 1;
    bool key_images = false;
    bool keep_empty_frames = false;
    // Each series is analysed in a child process (`pacsnode worker`) under these limits.
    int worker_memory_mb = 8192;       // address space (RLIMIT_AS)
    int worker_cpu_seconds = 1800;     // CPU time, all threads (RLIMIT_CPU)
    int worker_timeout_seconds = 900;  // wall clock, then SIGKILL
  } analysis;
  struct Outbound {
    int max_attempts = 20;
    int max_age_hours = 72;
    int initial_backoff_seconds = 10;
    int max_backoff_seconds = 900;
    int connect_timeout_seconds = 10;
    int dimse_timeout_seconds = 60;
    int batch = 50;
  } outbound;
  std::vector<ProfileConfig> profiles;  // tried before the built-in ones, in order
  std::vector<Destination> destinations;
  struct Log {
    std::string level = "info";
  } log;
  // The TOML text this config was parsed from and where it came from (a file, or the embedded
  // default): analysis workers get the text and parse it themselves.
  std::string source_text;
  std::string source_name;
};

// Every problem found in a config, one line each: "<source>: <key>: <what is wrong>".
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Parses and validates; throws ConfigError listing every problem (syntax, unknown key, type, range).
Config parse(std::string_view toml_text, std::string_view source_name);
Config load_file(const std::filesystem::path& file);
// The embedded default: config/pacsnode.toml as built into the binary.
std::string_view default_toml();
Config load_default();

}  // namespace config
