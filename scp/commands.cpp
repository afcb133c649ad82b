#include "scp/commands.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "analysis/profiles_config.h"
#include "dicom/store_scu.h"
#include "scp/outbound_queue.h"
#include "scp/check_config.h"
#include "scp/daemon.h"
#include "scp/logging.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

std::optional<fs::path> given(const CLI::Option* opt, const std::string& value) {
  return opt->count() ? std::optional<fs::path>(value) : std::nullopt;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

cli::Action setup_run(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  app.add_option("--config", *file, "config file (default: the embedded default config)")->type_name("FILE");
  app.footer("Logs go to journald under systemd, else to stderr. SIGTERM drains and exits 0.");
  return [file] {
    config::Config cfg;
    try {
      cfg = file->empty() ? config::load_default() : config::load_file(*file);
      analysis::profiles_from(cfg);  // profile parameters are part of the config: validate them now
    } catch (const config::ConfigError& e) {
      print_config_error(e);
      return cli::kExitUsage;
    }
    setup_logging(cfg.log.level);
    try {
      return run_daemon(cfg, file->empty() ? std::nullopt : std::optional<std::filesystem::path>(*file));
    } catch (const std::exception& e) {
      spdlog::critical("cannot run: {}", e.what());
      return cli::kExitFailure;
    }
  };
}

cli::Action setup_check_config(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  const CLI::Option* file_opt =
      app.add_option("FILE", *file, "config file (default: see below)")->type_name("");
  app.footer(
      "Exit 0 when the config is valid, 2 (one line per problem, naming the key) when it is not. A valid config\n"
      "may still get warnings: no destination, a storage root that cannot be created or written, a destination\n"
      "host that does not resolve, a port below 1024 that the installed unit has no capability for.\n"
      "Without FILE: /etc/pacsnode/pacsnode.toml, else <prefix>/etc/pacsnode/pacsnode.toml (the file the unit\n"
      "installed with the binary <prefix>/bin/pacsnode names), else the embedded default.");
  return [file, file_opt] {
    AdminConfig ac;
    std::size_t profiles = 0;
    try {
      ac = load_admin_config(given(file_opt, *file), default_config_files(install_prefix(current_executable())));
      profiles = analysis::profiles_from(ac.config).size();
    } catch (const config::ConfigError& e) {
      print_config_error(e);
      return cli::kExitUsage;
    }
    const auto& cfg = ac.config;
    std::cout << ac.source << ": valid (" << cfg.destinations.size() << " destination(s), listening on " << cfg.node.bind
              << ":" << cfg.node.port << " as " << cfg.node.ae_title << ", " << profiles << " analysis profile(s))\n";
    const RootChoice root = resolve_root(root_query(cfg, std::nullopt));
    std::cout << "storage root " << root.root.string() << " (" << root.why << ")\n";

    CheckContext ctx;
    ctx.storage_root = root.root;
    const fs::path prefix = install_prefix(current_executable());
    const auto units = installed_unit_files(prefix);
    for (const auto& u : units) ctx.unit_texts.push_back(read_text(u));
    if (units.empty()) {
      for (const auto& c : unit_file_candidates(prefix)) ctx.unit_name += (ctx.unit_name.empty() ? "looked for " : ", ") + c.string();
    } else {
      ctx.unit_name = units.front().string() + (units.size() > 1 ? " with its drop-ins" : "");
    }
    ctx.unprivileged_port_start = unprivileged_port_start();
    ctx.resolve = resolve_host;
    const auto warnings = config_warnings(cfg, ctx);
    for (const auto& w : warnings) std::cerr << "warning: " << w << "\n";
    return cli::kExitOk;
  };
}

cli::Action setup_print_default_config(CLI::App& app) {
  app.footer("Every key with its default and its meaning; a starting point for /etc/pacsnode/pacsnode.toml.");
  return [] {
    std::cout << config::default_toml();
    return cli::kExitOk;
  };
}

struct EchoOptions {
  std::string destination, config, host, ae, calling_ae;
  int port = 0;
  const CLI::Option *config_opt = nullptr, *port_opt = nullptr;
};

int echo(const EchoOptions& o) {
  const AdminConfig ac = admin_config(given(o.config_opt, o.config));
  const auto& cfg = ac.config;
  dicom::StoreTarget t;
  t.calling_ae = o.calling_ae.empty() ? cfg.node.ae_title : o.calling_ae;
  t.connect_timeout_seconds = cfg.outbound.connect_timeout_seconds;
  t.acse_timeout_seconds = cfg.node.acse_timeout_seconds;
  t.dimse_timeout_seconds = cfg.outbound.dimse_timeout_seconds;
  std::string label;
  if (!o.destination.empty()) {
    const config::Destination* d = nullptr;
    std::string names;
    for (const auto& x : cfg.destinations) {
      if (x.name == o.destination) d = &x;
      names += (names.empty() ? "" : ", ") + x.name;
    }
    if (!d)
      throw cli::UsageError(fmt::format("no destination '{}' in {} (configured: {})", o.destination, ac.source,
                                        names.empty() ? "none" : names));
    const std::string calling = t.calling_ae;
    t = store_target(cfg, *d);  // its address and TLS settings
    t.calling_ae = calling;
    label = fmt::format(" (destination '{}'{})", d->name, d->tls ? ", DICOM over TLS" : "");
  }
  if (!o.host.empty()) t.host = o.host;
  if (o.port_opt->count()) t.port = static_cast<std::uint16_t>(o.port);
  if (!o.ae.empty()) t.called_ae = o.ae;
  if (t.host.empty() || t.port == 0 || t.called_ae.empty())
    throw cli::UsageError("name a configured DESTINATION, or give --host, --port and --ae");

  std::cout << fmt::format("C-ECHO {} -> {}@{}:{}{}\n", t.calling_ae, t.called_ae, t.host, t.port, label) << std::flush;
  const dicom::EchoResult r = dicom::echo(t);
  if (r.associated) {
    std::cout << fmt::format("  association accepted in {:.1f} ms\n", r.associate_ms);
  } else if (r.rejected) {
    std::cout << fmt::format("  association rejected ({}) after {:.1f} ms: {}\n",
                             r.rejected_permanent ? "permanent" : "transient", r.associate_ms, r.detail);
  } else {
    std::cout << fmt::format("  no association after {:.1f} ms: {}\n", r.associate_ms, r.detail);
  }
  if (r.status)
    std::cout << fmt::format("  C-ECHO-RSP status 0x{:04X} ({}) in {:.1f} ms\n", *r.status, r.detail, r.echo_ms);
  else if (r.associated)
    std::cout << fmt::format("  no C-ECHO response: {}\n", r.detail);
  std::cout << fmt::format("{}: round trip {:.1f} ms\n", r.ok() ? "ok" : "failed", r.total_ms);
  return r.ok() ? cli::kExitOk : cli::kExitFailure;
}

cli::Action setup_echo(CLI::App& app) {
  auto o = std::make_shared<EchoOptions>();
  app.add_option("DESTINATION", o->destination, "name of a [[destination]] in the config")->type_name("");
  o->config_opt = app.add_option("--config", o->config, "config file (default: see below)")->type_name("FILE");
  app.add_option("--host", o->host, "peer host (overrides the destination's)")->type_name("HOST");
  o->port_opt = app.add_option("--port", o->port, "peer port")->check(CLI::Range(1, 65535))->type_name("PORT");
  app.add_option("--ae", o->ae, "called AE title")->type_name("AE");
  app.add_option("--calling-ae", o->calling_ae, "calling AE title (default: node.ae_title)")->type_name("AE");
  app.footer("Opens an association as the outbound queue does (same timeouts, Nagle off), sends one C-ECHO and\n"
             "prints the outcome with timings: accepted or rejected (with the reason), the echo status.\n"
             "Exit 0 when the echo succeeded, 1 when not, 2 for a destination the config does not have.\n" +
             std::string(kConfigNote));
  return [o] { return echo(*o); };
}

}  // namespace

void print_config_error(const config::ConfigError& e) {
  std::cerr << "pacsnode: invalid configuration:\n";
  for (const auto& p : e.problems()) std::cerr << "  " << p << "\n";
}

AdminConfig admin_config(const std::optional<fs::path>& file) {
  try {
    AdminConfig ac = load_admin_config(file, default_config_files(install_prefix(current_executable())));
    std::cerr << "pacsnode: config " << ac.source << "\n";
    return ac;
  } catch (const config::ConfigError& e) {
    print_config_error(e);
    throw cli::Exit{cli::kExitUsage};
  }
}

RootChoice admin_root(const config::Config& cfg, const std::optional<fs::path>& root_option) {
  RootChoice c = resolve_root(root_query(cfg, root_option));
  std::cerr << "pacsnode: storage root " << c.root.string() << " (" << c.why << ")\n";
  return c;
}

cli::Command run_command() {
  return {"run", "run the node in the foreground (default: the embedded config)", setup_run};
}
cli::Command check_config_command() {
  return {"check-config", "validate a config (0: valid, 2: invalid); warn about what will not work here",
          setup_check_config};
}
cli::Command print_default_config_command() {
  return {"print-default-config", "print the embedded default config, with every key documented",
          setup_print_default_config};
}
cli::Command echo_command() {
  return {"echo", "C-ECHO a destination and print the outcome with timings",
          setup_echo};
}

}  // namespace scp
