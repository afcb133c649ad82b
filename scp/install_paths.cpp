#include "scp/install_paths.h"

#include <algorithm>
#include <cstdlib>
#include <system_error>

#include <fmt/format.h>

#include "scp/spool.h"

namespace fs = std::filesystem;

namespace scp {

fs::path current_executable() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : p;
}

fs::path install_prefix(const fs::path& executable) {
  const fs::path dir = executable.parent_path();
  if (executable.empty() || dir.filename() != "bin") return {};
  return dir.parent_path();
}

std::vector<fs::path> default_config_files(const fs::path& prefix) {
  std::vector<fs::path> out{kSystemConfigFile};
  if (!prefix.empty()) {
    const fs::path p = prefix / "etc/pacsnode/pacsnode.toml";
    if (p != out.front()) out.push_back(p);
  }
  return out;
}

AdminConfig load_admin_config(const std::optional<fs::path>& file, const std::vector<fs::path>& candidates) {
  if (file) return {config::load_file(*file), file->string()};
  std::string looked;
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(c, ec)) return {config::load_file(c), c.string()};
    looked += (looked.empty() ? "" : ", ") + c.string();
  }
  return {config::load_default(), fmt::format("the embedded default (no {})", looked)};
}

std::vector<fs::path> unit_file_candidates(const fs::path& prefix) {
  std::vector<fs::path> out{"/etc/systemd/system/pacsnode.service"};
  if (!prefix.empty()) out.push_back(prefix / "lib/systemd/system/pacsnode.service");
  return out;
}

std::vector<fs::path> installed_unit_files(const fs::path& prefix) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& c : unit_file_candidates(prefix)) {
    if (fs::is_regular_file(c, ec)) {
      out.push_back(c);
      break;
    }
  }
  if (out.empty()) return out;
  std::vector<fs::path> dropins;
  for (fs::directory_iterator it("/etc/systemd/system/pacsnode.service.d", ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".conf") dropins.push_back(it->path());
  std::sort(dropins.begin(), dropins.end(), [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  out.insert(out.end(), dropins.begin(), dropins.end());
  return out;
}

RootQuery root_query(const config::Config& cfg, const std::optional<fs::path>& root_option) {
  RootQuery q;
  q.configured = cfg.storage.root;
  q.root_option = root_option;
  if (const char* s = std::getenv("STATE_DIRECTORY"); s && *s) q.state_directory = s;
  std::error_code ec;
  q.working_directory = fs::current_path(ec);
  return q;
}

RootChoice resolve_root(const RootQuery& q) {
  RootChoice c;
  const std::string configured = q.configured.string();
  if (q.root_option) {
    c.root = q.root_option->is_absolute() ? *q.root_option : q.working_directory / *q.root_option;
    c.why = "--root";
  } else if (q.configured.is_absolute()) {
    c.root = q.configured;
    c.why = "storage.root, absolute";
  } else if (q.state_directory) {
    c.root = storage_root(q.configured, q.state_directory->c_str());
    c.why = fmt::format("storage.root \"{}\" in $STATE_DIRECTORY, as the daemon under systemd", configured);
  } else {
    const fs::path service = q.unit_state_directory / q.configured;
    std::error_code ec;
    if (fs::exists(service / "index.sqlite", ec)) {
      c.root = service;
      c.why = fmt::format("storage.root \"{}\" in the unit's state directory {}, which holds an index "
                          "(STATE_DIRECTORY is unset)",
                          configured, q.unit_state_directory.string());
    } else {
      c.root = q.working_directory / q.configured;
      c.why = fmt::format("storage.root \"{}\" in the working directory: STATE_DIRECTORY is unset and the "
                          "service's root {} holds no index",
                          configured, service.string());
    }
  }
  c.root = c.root.lexically_normal();
  std::error_code ec;
  c.has_index = fs::exists(c.root / "index.sqlite", ec);
  return c;
}

}  // namespace scp
