#include "scp/daemon.h"

#include <systemd/sd-daemon.h>

#include <unistd.h>

#include <cctype>
#include <csignal>
#include <future>
#include <set>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "dicom/check.h"
#include "dicom/log.h"
#include "analysis/profiles_config.h"
#include "scp/health.h"
#include "analysis/scan_limits.h"
#include "scp/http_server.h"
#include "scp/job_runner.h"
#include "scp/journal.h"
#include "scp/outbound_queue.h"
#include "scp/retention.h"
#include "scp/status.h"
#include "scp/store_provider.h"
#include "scp/study_assembler.h"

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace scp {

std::string node_name(const config::Config& cfg) {
  if (!cfg.node.name.empty()) return cfg.node.name;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) return "local";
  std::string name(host);
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '-';
  return name.substr(0, 64);
}

IndexSettings index_settings(const config::Config& cfg, const fs::path& root) {
  IndexSettings s;
  s.backend = cfg.index.backend;
  s.sqlite_file = root / "index.sqlite";
  s.dsn = cfg.index.dsn;
  s.node = node_name(cfg);
  return s;
}

ReconcileReport reconcile(Spool& spool, Index& index) {
  auto log = pacsnode::component_logger("index");
  ReconcileReport r;
  std::set<std::string> known_paths;
  for (const auto& [sop, path] : index.instance_paths()) {
    if (fs::exists(path)) known_paths.insert(path);
    else {
      index.remove_instance(sop);
      ++r.forgotten;
    }
  }
  for (const auto& file : spool.list_instances()) {
    if (known_paths.count(file.string())) continue;
    try {
      StoredInstance in;
      // Through the structural scan like every received file: a hostile file placed in the spool
      // is logged and left where it is, it cannot take the start down.
      in.header = dicom::read_instance_header(file, spool.options().scan);
      in.path = file;
      in.size = fs::file_size(file);
      in.own = is_own_result(index, in.header);
      in.content_hash = content_hash(file);
      const auto mtime = fs::last_write_time(file);
      const auto sys = std::chrono::time_point_cast<std::chrono::milliseconds>(
          std::chrono::file_clock::to_sys(mtime));
      index.add_instance(in, sys.time_since_epoch().count());
      ++r.indexed;
    } catch (const std::exception& e) {
      ++r.unreadable;
      log->error("spool file {} cannot be indexed: {}", file.filename().string(), e.what());
    }
  }
  r.requeued_jobs = index.requeue_running_jobs();
  log->info("reconciled index with spool: {} file(s) indexed, {} missing file(s) forgotten, {} unreadable, {} job(s) requeued",
            r.indexed, r.forgotten, r.unreadable, r.requeued_jobs);
  return r;
}

namespace {

// The structural scan's limits for every reader in this process (the receiver passes them
// explicitly; the analysis reads files through the process-wide default), and the spool's budget
// for refused instances.
SpoolOptions apply_limits(const config::Config& cfg) {
  const dicom::ScanLimits limits = analysis::scan_limits(cfg);
  dicom::set_default_scan_limits(limits);
  SpoolOptions o{limits, cfg.storage.rejected_max_mb << 20, cfg.storage.rejected_max_files, {}};
  if (cfg.index.backend == "postgresql") o.node = node_name(cfg);  // a shared storage root
  return o;
}

}  // namespace

std::vector<std::string> keep_restart_only(const config::Config& running, config::Config& next) {
  std::vector<std::string> changed;
  auto keep = [&](const char* key, auto& value, const auto& old) {
    if (value != old) {
      changed.push_back(fmt::format("{} {} -> {}", key, old, value));
      value = old;
    }
  };
  keep("node.port", next.node.port, running.node.port);
  keep("node.bind", next.node.bind, running.node.bind);
  keep("node.preassociation_timeout_seconds", next.node.preassociation_timeout_seconds,
       running.node.preassociation_timeout_seconds);
  keep("node.max_pending_connections", next.node.max_pending_connections, running.node.max_pending_connections);
  keep("node.max_pending_per_source", next.node.max_pending_per_source, running.node.max_pending_per_source);
  if (next.storage.root != running.storage.root) {
    changed.push_back(fmt::format("storage.root {} -> {}", running.storage.root.string(), next.storage.root.string()));
    next.storage.root = running.storage.root;
  }
  // The structural scan's limits and the refused-instance budget are the spool's, fixed at start.
  keep("storage.max_instance_mb", next.storage.max_instance_mb, running.storage.max_instance_mb);
  keep("storage.rejected_max_mb", next.storage.rejected_max_mb, running.storage.rejected_max_mb);
  keep("storage.rejected_max_files", next.storage.rejected_max_files, running.storage.rejected_max_files);
  keep("storage.journal_mb", next.storage.journal_mb, running.storage.journal_mb);
  keep("limits.max_depth", next.limits.max_depth, running.limits.max_depth);
  keep("limits.max_elements", next.limits.max_elements, running.limits.max_elements);
  keep("limits.max_pixel_mb", next.limits.max_pixel_mb, running.limits.max_pixel_mb);
  keep("limits.max_inflated_mb", next.limits.max_inflated_mb, running.limits.max_inflated_mb);
  keep("analysis.enabled", next.analysis.enabled, running.analysis.enabled);
  keep("analysis.workers", next.analysis.workers, running.analysis.workers);
  keep("node.name", next.node.name, running.node.name);
  keep("node.receive", next.node.receive, running.node.receive);
  keep("index.backend", next.index.backend, running.index.backend);
  if (next.index.dsn != running.index.dsn) {  // may hold a password: never in the log
    changed.push_back("index.dsn (changed)");
    next.index.dsn = running.index.dsn;
  }
  // The listeners and the TLS context are made at start.
  keep("tls.enabled", next.tls.enabled, running.tls.enabled);
  keep("tls.port", next.tls.port, running.tls.port);
  keep("tls.plain", next.tls.plain, running.tls.plain);
  keep("tls.certificate", next.tls.certificate, running.tls.certificate);
  keep("tls.private_key", next.tls.private_key, running.tls.private_key);
  keep("tls.ca_certificates", next.tls.ca_certificates, running.tls.ca_certificates);
  keep("tls.require_client_certificate", next.tls.require_client_certificate, running.tls.require_client_certificate);
  keep("tls.profile", next.tls.profile, running.tls.profile);
  keep("http.enabled", next.http.enabled, running.http.enabled);  // the HTTP server keeps its start-up [http]
  keep("http.bind", next.http.bind, running.http.bind);
  keep("http.port", next.http.port, running.http.port);
  keep("http.max_connections", next.http.max_connections, running.http.max_connections);
  keep("http.request_timeout_seconds", next.http.request_timeout_seconds, running.http.request_timeout_seconds);
  if (next.http.token != running.http.token) {  // a secret: never in the log
    changed.push_back("http.token (changed)");
    next.http.token = running.http.token;
  }
  return changed;
}

int run_daemon(const config::Config& cfg, const std::optional<fs::path>& config_file) {
  auto log = pacsnode::component_logger("daemon");
  // Until the reload handler is installed, a SIGHUP must not end the process (its default).
  std::signal(SIGHUP, SIG_IGN);
  // A peer that goes away while TLS writes to it (OpenSSL uses write(2)) must give EPIPE, not end the node.
  std::signal(SIGPIPE, SIG_IGN);
  const fs::path root = storage_root(cfg.storage.root);
  // Say what is wrong with the storage root, and where, before anything else tries it.
  if (const auto problem = storage_problem(root); !problem.empty()) throw std::runtime_error(problem);
  const SpoolOptions spool_options = apply_limits(cfg);
  Spool spool(root, spool_options);
  // Replays what an earlier run acknowledged but had not made durable in the spool yet; before
  // the index is reconciled with the spool, so that those files are indexed with the rest. In a
  // cluster each node has its own journal on the shared root. An analysis-only node has none.
  JournalOptions journal_options;
  journal_options.max_segments = cfg.node.receive ? cfg.storage.journal_mb / (journal_options.segment_bytes >> 20) : 0;
  journal_options.keep_free_bytes = cfg.storage.min_free_mb << 20;
  journal_options.node = spool_options.node;
  Journal journal(spool, journal_options);
  const IndexSettings index_at = index_settings(cfg, root);
  std::unique_ptr<Index> index_ptr;
  try {
    index_ptr = std::make_unique<Index>(index_at);
  } catch (const std::exception& e) {
    // The DSN may hold a password: the message names the backend only (libpq's own text has host and port).
    throw std::runtime_error(fmt::format("cannot open the index ({}): {}",
                                         index_at.backend == "postgresql" ? "PostgreSQL, index.dsn" : index_at.sqlite_file.string(),
                                         e.what()));
  }
  Index& index = *index_ptr;
  if (index.shared())
    log->info("cluster node '{}' on the shared index {} ({})", index.node(), index.describe(),
              cfg.node.receive ? "receiving and analysing" : "analysis only");
  reconcile(spool, index);
  HttpServer http(cfg.http);  // [http] (issue 11): binds now, so that a port in use stops the start here

  config::LiveConfig live(cfg);
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  NodeMetrics metrics;
  OutboundQueue outbound(io, index, live, &metrics);
  std::unique_ptr<JobRunner> jobs;
  if (cfg.analysis.enabled)
    jobs = std::make_unique<JobRunner>(index, root, live,
                                       JobRunner::Options{cfg.analysis.workers, [&outbound] { outbound.notify(); }, {}, &metrics});
  StudyAssembler assembler(io, index,
                           {std::chrono::seconds(cfg.study.quiet_seconds), std::chrono::seconds(cfg.study.expected_grace_seconds),
                            index.shared(), std::chrono::seconds(cfg.index.poll_seconds)},
                           [&jobs](const std::string& study, int generation) {
                             if (jobs) jobs->submit(study, generation);
                           });
  assembler.restore();
  if (jobs) jobs->start();
  outbound.start();
  // Retention (issue 10 §4): a timer on this io_context; deleting runs on its own thread.
  Retention retention(io, index, root, RetentionPolicy::from(cfg), std::chrono::seconds(cfg.retention.interval_seconds));
  retention.start();
  std::thread io_thread([&io] { io.run(); });

  ScpContext ctx{live, spool, index, assembler, {}, {}};
  if (journal.enabled()) ctx.journal = &journal;
  StorageServer server(ctx);
  try {
    if (cfg.node.receive) server.start();
  } catch (const std::exception& e) {
    log->critical("{}", e.what());
    guard.reset();
    io.stop();
    io_thread.join();
    return 1;
  }
  std::string ports = server.port() ? fmt::format("{}:{}", cfg.node.bind, server.port()) : "";
  if (server.tls_port()) ports += fmt::format("{}{}:{} (DICOM over TLS)", ports.empty() ? "" : " and ", cfg.node.bind, server.tls_port());
  if (!cfg.node.receive) ports = "no DICOM port (analysis-only node)";
  log->info("pacsnode {} listening on {} as '{}', storage {}, quiet time {} s", PACSNODE_VERSION, ports, cfg.node.ae_title,
            root.string(), cfg.study.quiet_seconds);

  HealthMonitor health(io, root, index, live);
  health.heartbeat(cfg.node.receive, [&jobs, &server] {
    return fmt::format(R"({{"jobs_running": {}, "open_associations": {}}})", jobs ? jobs->running() : 0, server.active());
  });
  health.on_change([&ctx](const Health& h) { ctx.failing = h.state == HealthState::failing; });
  health.check();  // before READY=1
  health.start();

  // One node: <root>/status.json. A cluster on one shared root: nodes/<node>/status.json each.
  const fs::path status_file = index.shared() ? root / "nodes" / index.node() / "status.json" : root / "status.json";
  fs::create_directories(status_file.parent_path());
  StatusWriter status(io, status_file, [&] {
    Status s;
    const Health h = health.current();
    s.health = std::string(to_string(h.state));
    s.health_reasons = h.reasons;
    s.port = server.port();
    s.tls_port = server.tls_port();
    s.open_associations = server.active();
    s.open_studies = assembler.open_studies();
    s.associations = ctx.counters.associations.load();
    s.rejected_associations = ctx.counters.rejected.load();
    s.instances_stored = ctx.counters.instances_stored.load();
    s.instances_refused = ctx.counters.instances_failed.load();
    s.bytes_received = ctx.counters.bytes.load();
    if (jobs) {
      s.jobs_queued = jobs->queued();
      s.jobs_running = jobs->running();
    }
    s.pending_connections = server.pending();
    s.rejections = ctx.counters.rejections.snapshot();
    s.aborted_associations = ctx.counters.aborted.snapshot();
    s.refusals = ctx.counters.refusals.snapshot();
    s.retention_json = to_json(retention.stats());
    s.node = index.node();
    if (!h.cluster.empty()) {
      nlohmann::json nodes = nlohmann::json::array();
      for (const auto& n : h.cluster) {
        nlohmann::json o{{"name", n.name}, {"receive", n.receive}, {"started_ms", n.started_ms}, {"last_seen_ms", n.last_seen_ms}};
        if (auto info = nlohmann::json::parse(n.info, nullptr, false); info.is_object()) o["info"] = info;
        nodes.push_back(std::move(o));
      }
      s.cluster_json = nodes.dump();
    }
    return s;
  });
  status.start();
  http.start({&index, root, &live, [&status] { return status.read(); }, [&status] { return status.json(); },
              [&health] { return health.current(); }, [&jobs] { return jobs ? jobs->worker_crashes() : 0; },
              [&outbound] { outbound.notify(); },
              [&jobs](const std::string& study, int generation) { if (jobs) jobs->submit(study, generation); },
              &metrics, [&retention] { return retention.stats(); }});

  // systemd: ready once the port listens; watchdog pings from the event loop, so a stuck loop
  // gets the service restarted, and only while the node is not failing (scp/health.h).
  sd_notifyf(0, "READY=1\nSTATUS=%s; listening on %s", std::string(to_string(health.current().state)).c_str(), ports.c_str());
  asio::steady_timer watchdog(io);
  std::uint64_t watchdog_usec = 0;
  std::function<void()> ping;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0) {
    ping = [&] {
      if (!health.failing()) sd_notify(0, "WATCHDOG=1");
      watchdog.expires_after(std::chrono::microseconds(watchdog_usec / 2));
      watchdog.async_wait([&](boost::system::error_code ec) { if (!ec) ping(); });
    };
    asio::post(io, ping);
  }

  // SIGHUP: re-read the config file; what can change while running applies to the next
  // association, job and send; nothing in flight is dropped.
  asio::signal_set hup(io, SIGHUP);
  std::function<void()> wait_for_hup = [&] {
    hup.async_wait([&](boost::system::error_code ec, int) {
      if (ec) return;
      auto clog = pacsnode::component_logger("config");
      if (!config_file) {
        clog->warn("SIGHUP: running on the embedded default config, nothing to re-read (start with --config FILE)");
        return wait_for_hup();
      }
      sd_notify(0, "RELOADING=1");
      config::Config next;
      try {
        next = config::load_file(*config_file);
        analysis::profiles_from(next);
      } catch (const config::ConfigError& e) {
        clog->error("SIGHUP: {} is invalid; the running config stays:", config_file->string());
        for (const auto& p : e.problems()) clog->error("  {}", p);
        sd_notify(0, "READY=1");
        return wait_for_hup();
      }
      const auto running = live.get();
      for (const auto& change : keep_restart_only(*running, next))
        clog->warn("SIGHUP: {} needs a restart; the running value stays until then", change);
      spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(spdlog::level::from_str(next.log.level)); });
      retention.update(RetentionPolicy::from(next), std::chrono::seconds(next.retention.interval_seconds));
      const auto destinations = next.destinations.size();
      const auto rules = next.rules.size();
      const auto profiles = next.profiles.size();
      const auto allowed = next.node.allowed_calling_ae.size();
      const std::string level = next.log.level;
      live.replace(std::move(next));
      clog->info("SIGHUP: reloaded {}: {} destination(s), {} rule(s), {} profile table(s), {} allowed calling AE title(s){}, "
                 "log level {}",
                 config_file->string(), destinations, rules, profiles, allowed, allowed ? "" : " (any)", level);
      outbound.notify();
      sd_notify(0, "READY=1");
      wait_for_hup();
    });
  };
  wait_for_hup();

  std::promise<int> stop_signal;
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (!ec) stop_signal.set_value(sig);
  });
  const int sig = stop_signal.get_future().get();

  log->info("signal {}: no new associations; draining {} open association(s) for up to {} s", sig, server.active(),
            cfg.node.drain_seconds);
  sd_notify(0, "STOPPING=1");
  http.stop();
  server.stop(std::chrono::seconds(cfg.node.drain_seconds));
  if (jobs) jobs->stop();  // a running analysis stops at its next series and runs again at start
  outbound.stop();        // what is not sent stays pending in the index
  retention.stop();       // a run in progress stops at its next deletion (retention, issue 10 §4)
  asio::post(io, [&] {
    watchdog.cancel();
    status.stop();
    health.stop();
    hup.cancel();
  });
  guard.reset();
  io.stop();
  io_thread.join();
  status.write_now();
  log->info("stopped: {} instance(s) stored, {} refused, {} study(ies) still waiting for completion (kept in the index)",
            ctx.counters.instances_stored.load(), ctx.counters.instances_failed.load(), assembler.open_studies());
  return 0;
}

}  // namespace scp
