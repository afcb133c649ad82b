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
  // DICOM over TLS to this destination (dicom/tls.h): its certificate must chain to
  // tls_ca_certificates; tls_certificate/tls_private_key are ours, for a destination that
  // requires a client certificate.
  bool tls = false;
  std::string tls_ca_certificates, tls_certificate, tls_private_key;
  std::string tls_server_name;  // the name its certificate must carry (empty: not checked)
  std::string tls_profile = "bcp195-nd";
};

// A [[calling_ae]] table: where a calling AE title must come from. An association calling with
// this title from another address, or (with tls_subjects) not over TLS with a certificate of one
// of these subjects, is rejected as "calling AE title not recognized".
struct CallingAe {
  std::string ae_title;
  std::vector<std::string> hosts;         // IPv4 source addresses (empty: any)
  std::vector<std::string> tls_subjects;  // RFC 2253 certificate subjects (empty: TLS not required)
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
  // IBSI feature computation (analysis/kernels/ibsi/): families, texture aggregations, the image
  // processing chain. Names are checked by analysis::profiles_from (the family list lives there).
  std::optional<std::string> ibsi_preset;                 // "A".."E": the IBSI CT phantom configuration's settings, then the keys below
  std::optional<std::vector<std::string>> ibsi_families;  // e.g. ["morphology", "glcm"]; unset: all
  std::optional<std::string> ibsi_texture;                // "3d", "2d" or "all"
  std::optional<double> ibsi_spacing_mm;                  // interpolate to this voxel size (in-plane only for "2d")
  std::optional<std::string> ibsi_interpolation;          // "nearest", "linear" or "cubic"
  std::optional<std::array<double, 2>> ibsi_reseg_range;  // re-segmentation range [min, max]
  std::optional<bool> ibsi_reseg_outliers;                // drop voxels beyond mean +- 3 sd
  std::optional<std::string> ibsi_discretisation;         // "fbs" (fixed bin size) or "fbn" (fixed bin number)
  std::optional<double> ibsi_bin_width;                   // fbs bin width (HU for CT)
  std::optional<int> ibsi_bins;                           // fbn bin count
};

// A [[rule]] table: which series are analysed, with which profile (analysis/rules.h).
struct RuleConfig {
  std::string name;
  std::string action = "analyse";  // "analyse" or "ignore"
  std::string profile = "auto";    // a profile name, or "auto": the first profile whose match accepts the series
  std::vector<std::string> modalities, keywords, tokens, body_parts, series_descriptions, study_descriptions,
      calling_ae, sop_classes;
  int min_slices = 0;
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
    // Before association: a connection must have sent its whole A-ASSOCIATE-RQ within this time;
    // until then it counts against the two limits below (beyond them it is closed at once).
    int preassociation_timeout_seconds = 5;
    int max_pending_connections = 64;
    int max_pending_per_source = 8;  // per source IP address
    // This node's name in a cluster (issue 14): owner of the jobs and deliveries it takes, its
    // journal and temporary files on the shared storage. Empty: the host name.
    std::string name;
    // false: an analysis-only node (no DICOM listener): it runs jobs and deliveries of the shared index.
    bool receive = true;
  } node;
  // Where the index lives (scp/index.h): one SQLite file under the storage root, or a PostgreSQL
  // database shared by every node of a cluster on one shared storage root.
  struct IndexConfig {
    std::string backend = "sqlite";  // "sqlite" or "postgresql"
    std::string dsn;                 // postgresql: a libpq connection string or URI (may hold a password: never logged)
    int lease_seconds = 30;          // a job or delivery a node holds; renewed every third of it
    int poll_seconds = 2;            // how often a node looks for jobs, deliveries and orphaned open studies
  } index;
  // DICOM over TLS (dicom/tls.h): a second listener on tls.port beside plain DICOM on node.port,
  // or TLS only (plain = false).
  struct Tls {
    bool enabled = false;
    std::uint16_t port = 2762;
    bool plain = true;  // also listen for plain DICOM on node.port
    std::string certificate, private_key, ca_certificates;
    bool require_client_certificate = true;
    std::string profile = "bcp195-nd";
  } tls;
  std::vector<CallingAe> calling_aes;  // [[calling_ae]]
  struct Storage {
    std::filesystem::path root = "var/pacsnode";
    std::uint64_t min_free_mb = 256;
    std::uint64_t max_instance_mb = 2048;     // one received (or analysed) instance file
    std::uint64_t rejected_max_mb = 512;      // budget of quarantine/rejected/
    std::uint64_t rejected_max_files = 1000;
    // The ingest journal (scp/journal.h): at most this much disk, in 32 MiB segments (0: off,
    // every instance is fsync'ed into its place before its response).
    std::uint64_t journal_mb = 256;
  } storage;
  // What the structural scan (dicom/scan.h) allows in a file before DCMTK or GDCM parses it.
  struct Limits {
    int max_depth = 64;                  // sequence nesting
    std::uint64_t max_elements = 1000000;  // data elements in one data set, all levels
    std::uint64_t max_pixel_mb = 4096;     // Rows x Columns x Frames x Samples x Bits Allocated / 8
    std::uint64_t max_inflated_mb = 1024;  // deflated transfer syntax: the inflated data set
  } limits;
  struct Study {
    int quiet_seconds = 20;
    int expected_grace_seconds = 2;
  } study;
  struct Analysis {
    bool enabled = true;
    int workers = 1;
    bool key_images = false;
    bool keep_empty_frames = false;
    // Marks findings and result series descriptions as research results (empty: no marking).
    std::string research_label = "RESEARCH USE ONLY";
    // Built-in profiles the daemon may use ("ct-chest", "generic"); [[profile]] tables can start
    // from either as their base whatever this says. `pacsnode analyze` always has both.
    std::vector<std::string> builtin_profiles{"ct-chest"};
    // A series that no [[rule]] matches: "ignore", "auto" or a profile name.
    std::string unmatched = "ignore";
    // Each series is analysed in a child process (`pacsnode worker`) under these limits.
    int worker_memory_mb = 8192;       // address space (RLIMIT_AS)
    int worker_cpu_seconds = 1800;     // CPU time, all threads (RLIMIT_CPU)
    int worker_timeout_seconds = 900;  // wall clock, then SIGKILL
    // One worker is kept started ahead (libraries loaded, waiting for its job), so that a job does
    // not wait the ~0.25 s of a worker's start.
    bool prestart_worker = true;
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
  // What the node deletes on its own (scp/retention.h). A study's data go only once it is settled:
  // complete, analysed (when analysis is on) and with no delivery pending.
  struct Retention {
    // Days each area is kept after its study last received an instance (incoming) or its analysis
    // ended (outbound, results, quarantine); fractions allowed; 0 keeps it regardless of age.
    double incoming_days = 0, outbound_days = 0, results_days = 0, quarantine_days = 0;
    // Use of the storage file system (percent, as df shows it) above which the oldest settled data
    // go, whatever their age, until use is below it again; 0 turns it off.
    int high_water_percent = 85;
    int interval_seconds = 600;  // between two retention runs (the first runs at start)
  } retention;
  // The embedded HTTP server (scp/http_server.h): health, Prometheus metrics, the JSON API and the
  // status page. Everything but /healthz needs the bearer token: the API shows identifiers.
  struct Http {
    bool enabled = false;
    std::string bind = "127.0.0.1";
    std::uint16_t port = 8180;
    std::string token;              // required when enabled; at least 16 characters
    int max_connections = 32;       // connections served at once; more are closed at once
    int request_timeout_seconds = 10;  // to receive a whole request (slow clients are cut off)
  } http;
  std::vector<ProfileConfig> profiles;  // tried before the built-in ones, in order
  std::vector<RuleConfig> rules;        // empty: the built-in default rule (analysis/rules.h)
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
// The ibsi_* keys of a [[profile]] table, given as a TOML document of those keys only (how
// `pacsnode analyze` passes its feature options to the worker). Throws ConfigError.
ProfileConfig parse_feature_overrides(std::string_view toml_text);
Config load_file(const std::filesystem::path& file);
// The embedded default: config/pacsnode.toml as built into the binary.
std::string_view default_toml();
Config load_default();

}  // namespace config
