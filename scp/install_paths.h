#pragma once
// Where an installed pacsnode keeps its config, its unit and its storage root, as the commands an
// administrator runs from a shell (`outbox`, `echo`, `check-config`) find them.
//
// Config: --config FILE; else /etc/pacsnode/pacsnode.toml, else <prefix>/etc/pacsnode/pacsnode.toml
// (the file the installed unit names; <prefix> is P for the binary P/bin/pacsnode), whichever
// exists first; else the embedded default.
//
// Storage root: as the daemon resolves it (storage_root in scp/spool.h): an absolute storage.root
// is itself; a relative one lives in $STATE_DIRECTORY when that is set (under systemd). From a
// shell STATE_DIRECTORY is unset: then the unit's state directory /var/lib/pacsnode is used when
// the root there holds an index (the running service's), else the working directory. --root DIR
// overrides all of it. Every command says which root it used and why.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace scp {

inline constexpr const char* kSystemConfigFile = "/etc/pacsnode/pacsnode.toml";
// StateDirectory=pacsnode in systemd/pacsnode.service.
inline constexpr const char* kUnitStateDirectory = "/var/lib/pacsnode";

// This process's binary (/proc/self/exe), empty when unknown.
std::filesystem::path current_executable();
// P when `executable` is P/bin/<name> (an installed binary), else empty.
std::filesystem::path install_prefix(const std::filesystem::path& executable);

// The config files tried in order when --config is not given.
std::vector<std::filesystem::path> default_config_files(const std::filesystem::path& prefix);

struct AdminConfig {
  config::Config config;
  std::string source;  // the file, or the embedded default with the files that were looked for
};
// `file` when given, else the first of `candidates` that exists, else the embedded default.
// Throws config::ConfigError.
AdminConfig load_admin_config(const std::optional<std::filesystem::path>& file,
                              const std::vector<std::filesystem::path>& candidates);

// The installed unit (/etc/systemd/system/pacsnode.service, else
// <prefix>/lib/systemd/system/pacsnode.service) and its drop-ins in
// /etc/systemd/system/pacsnode.service.d/*.conf, in the order systemd applies them; empty when
// no unit is installed.
std::vector<std::filesystem::path> installed_unit_files(const std::filesystem::path& prefix);
// Where installed_unit_files looks for the unit (for messages).
std::vector<std::filesystem::path> unit_file_candidates(const std::filesystem::path& prefix);

struct RootQuery {
  std::filesystem::path configured;                     // storage.root
  std::optional<std::filesystem::path> root_option;     // --root
  std::optional<std::string> state_directory;           // $STATE_DIRECTORY
  std::filesystem::path unit_state_directory = kUnitStateDirectory;
  std::filesystem::path working_directory;
};
// The query for this process: its environment and working directory.
RootQuery root_query(const config::Config& cfg, const std::optional<std::filesystem::path>& root_option);

struct RootChoice {
  std::filesystem::path root;  // absolute
  std::string why;             // how it was chosen, for the "storage root" line
  bool has_index = false;      // root/index.sqlite exists
};
RootChoice resolve_root(const RootQuery& q);

}  // namespace scp
