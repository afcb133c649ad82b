#pragma once
// `pacsnode check-config`: what a valid config may still get wrong on this machine. Each check
// gives one warning line; none of them makes the config invalid (errors stay errors, exit 2).
//   * no [[destination]]: results are made and sent nowhere
//   * the storage root cannot be created or written (checked without creating anything)
//   * a destination host does not resolve
//   * the [tls] certificate, key or CAs, or a TLS destination's, cannot be loaded or do not match
//   * node.port is below net.ipv4.ip_unprivileged_port_start (1024) and the installed unit does
//     not grant CAP_NET_BIND_SERVICE (or no installed unit was found to check)
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace scp {

struct CheckContext {
  std::filesystem::path storage_root;                   // resolved (scp/install_paths.h)
  std::vector<std::string> unit_texts;                  // the installed unit and its drop-ins, in order
  std::string unit_name;                                // for messages: the unit file, or where it was looked for
  int unprivileged_port_start = 1024;
  // nullopt when `host` resolves, else why not.
  std::function<std::optional<std::string>(const std::string& host)> resolve;
};

std::vector<std::string> config_warnings(const config::Config& cfg, const CheckContext& ctx);

// Why `root` cannot be used (not a directory, read-only file system, no write permission), or
// nullopt. A root that does not exist yet is judged by the nearest existing parent.
std::optional<std::string> storage_root_problem(const std::filesystem::path& root);

// Whether the [Service] settings in `unit_texts` (applied in order, as systemd does) let a
// non-root service user bind a port below the unprivileged start: CAP_NET_BIND_SERVICE in both
// the bounding and the ambient set (or a root User= without DynamicUser, then the bounding set).
bool unit_grants_bind_service(const std::vector<std::string>& unit_texts);

// getaddrinfo: nullopt when `host` has an address, else the resolver's message.
std::optional<std::string> resolve_host(const std::string& host);

// /proc/sys/net/ipv4/ip_unprivileged_port_start (1024 when it cannot be read).
int unprivileged_port_start();

}  // namespace scp
