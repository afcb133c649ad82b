#include "scp/check_config.h"

#include "scp/index_db.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include <fmt/format.h>

#include "dicom/tls.h"
#include "scp/outbound_queue.h"
#include "scp/store_provider.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r") + 1 - b);
}

std::set<std::string> words(const std::string& s) {
  std::set<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.insert(w);
  return out;
}

// One capability set of a unit, as systemd builds it from its assignments.
struct CapabilitySet {
  bool has;
  bool assigned = false;
  void apply(const std::string& value, const std::string& cap) {
    if (value.empty()) {
      has = false;  // the empty assignment resets the set to empty
    } else if (value.front() == '~') {
      if (words(value.substr(1)).count(cap)) has = false;
      else if (!assigned) has = true;  // "~X" alone: everything but X
    } else {
      const bool listed = words(value).count(cap) > 0;
      has = assigned ? has || listed : listed;
    }
    assigned = true;
  }
};

}  // namespace

bool unit_grants_bind_service(const std::vector<std::string>& unit_texts) {
  const std::string cap = "CAP_NET_BIND_SERVICE";
  CapabilitySet bounding{true}, ambient{false};
  std::string user;
  bool dynamic_user = false;
  for (const auto& text : unit_texts) {
    std::istringstream in(text);
    std::string section;
    for (std::string line; std::getline(in, line);) {
      line = trim(line);
      if (line.empty() || line[0] == '#' || line[0] == ';') continue;
      if (line[0] == '[') {
        section = line;
        continue;
      }
      const auto eq = line.find('=');
      if (section != "[Service]" || eq == std::string::npos) continue;
      const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
      if (key == "CapabilityBoundingSet") bounding.apply(value, cap);
      else if (key == "AmbientCapabilities") ambient.apply(value, cap);
      else if (key == "User") user = value;
      else if (key == "DynamicUser") dynamic_user = value == "yes" || value == "true" || value == "1" || value == "on";
    }
  }
  const bool root = !dynamic_user && (user.empty() || user == "root" || user == "0");
  return bounding.has && (root || ambient.has);
}

std::optional<std::string> resolve_host(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (res) ::freeaddrinfo(res);
  if (rc == 0) return std::nullopt;
  return std::string(rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc));
}

int unprivileged_port_start() {
  std::ifstream in("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  int v = 1024;
  if (!(in >> v)) return 1024;
  return v;
}

std::optional<std::string> storage_root_problem(const fs::path& root) {
  std::error_code ec;
  fs::path existing = root;
  while (!fs::exists(existing, ec)) {
    if (ec && ec != std::errc::no_such_file_or_directory)
      return fmt::format("cannot be examined: {}: {}", existing.string(), ec.message());
    if (!existing.has_relative_path()) break;
    existing = existing.parent_path();
  }
  // "cannot be created: P is ..." for a root that does not exist yet, "is ..." for the root itself.
  const bool exists = existing == root;
  const std::string subject = exists ? std::string() : fmt::format("cannot be created: {} ", existing.string());
  if (!fs::is_directory(existing, ec)) return subject + "is not a directory";
  struct statvfs st {};
  if (::statvfs(existing.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY)) return subject + "is on a read-only file system";
  if (::faccessat(AT_FDCWD, existing.c_str(), W_OK | X_OK, AT_EACCESS) != 0)
    return fmt::format("{}is not writable by this user ({})", subject, std::strerror(errno));
  const fs::path index = root / "index.sqlite";
  if (exists && fs::exists(index, ec) && ::faccessat(AT_FDCWD, index.c_str(), R_OK | W_OK, AT_EACCESS) != 0)
    return fmt::format("holds index.sqlite, which this user cannot write ({})", std::strerror(errno));
  return std::nullopt;
}

std::vector<std::string> config_warnings(const config::Config& cfg, const CheckContext& ctx) {
  std::vector<std::string> out;
  if (cfg.destinations.empty())
    out.push_back("no [[destination]] configured: results are written to the storage root's outbound/ and sent nowhere");
  if (auto p = storage_root_problem(ctx.storage_root))
    out.push_back(fmt::format("storage root {} {}", ctx.storage_root.string(), *p));
  // A cluster's index: can this machine reach it with this DSN (the DSN itself is never printed)?
  if (cfg.index.backend == "postgresql") {
    try {
      db::open_postgresql(cfg.index.dsn);
    } catch (const std::exception& e) {
      out.push_back(fmt::format("index.dsn: PostgreSQL cannot be used: {} (the node will not start)", e.what()));
    }
  }
  for (const auto& d : cfg.destinations) {
    if (!ctx.resolve) break;
    if (auto why = ctx.resolve(d.host))
      out.push_back(fmt::format("destination '{}': host '{}' does not resolve ({})", d.name, d.host, *why));
  }
  // The TLS material is read at start (a problem stops it) and at each delivery (a problem is
  // retried): say now what cannot be used. Read as this command's user, which may not be the service's.
  if (cfg.tls.enabled) {
    try {
      dicom::make_tls_layer(true, listener_tls(cfg.tls), "tls.");
    } catch (const dicom::TlsError& e) {
      out.push_back(fmt::format("{} (the node will not start)", e.what()));
    }
  }
  for (const auto& d : cfg.destinations) {
    if (!d.tls) continue;
    const dicom::StoreTarget t = store_target(cfg, d);  // the settings the outbound queue uses
    try {
      dicom::make_tls_layer(false, *t.tls, t.tls_key_prefix);
    } catch (const dicom::TlsError& e) {
      out.push_back(fmt::format("{} (nothing can be sent there)", e.what()));
    }
  }
  if ((!cfg.tls.enabled || cfg.tls.plain) && cfg.node.port < ctx.unprivileged_port_start) {
    const std::string rule = fmt::format(
        "node.port {} is below {} (net.ipv4.ip_unprivileged_port_start): the service needs CAP_NET_BIND_SERVICE in "
        "both CapabilityBoundingSet= and AmbientCapabilities=",
        cfg.node.port, ctx.unprivileged_port_start);
    if (ctx.unit_texts.empty())
      out.push_back(fmt::format("{}; no installed unit to check ({}); the unit shipped with pacsnode grants no "
                                "capability until its two CAP_NET_BIND_SERVICE lines are uncommented",
                                rule, ctx.unit_name));
    else if (!unit_grants_bind_service(ctx.unit_texts))
      out.push_back(fmt::format("{}, which {} does not grant (uncomment its two CAP_NET_BIND_SERVICE lines)", rule,
                                ctx.unit_name));
  }
  return out;
}

}  // namespace scp
