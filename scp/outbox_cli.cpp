#include "scp/outbox_cli.h"

#include "scp/daemon.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "scp/commands.h"
#include "scp/index.h"
#include "scp/study_assembler.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

struct OutboxOptions {
  std::string config, root, state, destination;
  bool all = false, orphaned = false;
  std::vector<std::int64_t> ids;
  std::vector<const CLI::Option*> config_opts, root_opts;  // one of each per action

  static std::optional<fs::path> given(const std::vector<const CLI::Option*>& opts, const std::string& value) {
    for (const auto* o : opts)
      if (o->count()) return fs::path(value);
    return std::nullopt;
  }
};

// The config, the index of its storage root and which destinations the outbox names but the
// config no longer has.
struct Context {
  AdminConfig config;
  std::unique_ptr<Index> index;
  std::set<std::string> configured, orphans;
  bool is_configured(const std::string& d) const { return configured.count(d) > 0; }
};

Context open(const OutboxOptions& o) {
  Context c;
  c.config = admin_config(OutboxOptions::given(o.config_opts, o.config));
  const RootChoice root = admin_root(c.config.config, OutboxOptions::given(o.root_opts, o.root));
  const bool shared = c.config.config.index.backend == "postgresql";
  if (!shared && !root.has_index) {
    std::cerr << "pacsnode outbox: no index at " << (root.root / "index.sqlite").string()
              << ": no pacsnode has run with this storage root; name the service's config with --config or its "
                 "storage root with --root\n";
    throw cli::Exit{cli::kExitFailure};
  }
  c.index = std::make_unique<Index>(index_settings(c.config.config, root.root));
  for (const auto& d : c.config.config.destinations) c.configured.insert(d.name);
  for (const auto& n : c.index->outbox_counts())
    if (!c.is_configured(n.destination)) c.orphans.insert(n.destination);
  return c;
}

std::string age(std::int64_t from_ms, std::int64_t now_ms) {
  const auto s = (now_ms - from_ms) / 1000;
  if (s < 120) return fmt::format("{}s", s);
  if (s < 7200) return fmt::format("{}m", s / 60);
  return fmt::format("{}h", s / 3600);
}

std::string join(const std::set<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "'" : ", '") + n + "'";
  return s;
}

int list(const OutboxOptions& o) {
  Context c = open(o);
  OutboxSelection sel;
  if (!o.state.empty()) sel.states = std::vector<std::string>{o.state};
  if (!o.destination.empty()) sel.destinations = std::vector<std::string>{o.destination};
  const auto rows = c.index->outbox_select(sel);
  const auto now = wall_ms();
  const auto shown = [&](const std::string& d) { return c.is_configured(d) ? d : d + " (not configured)"; };
  std::size_t width = std::string("destination").size();
  for (const auto& r : rows) width = std::max(width, shown(r.destination).size());
  const auto line = [&](auto id, auto state, auto dest, auto kind, auto attempts, auto created, auto next, auto error) {
    std::cout << fmt::format("{:>6}  {:<8} {:<{}} {:<4} {:>8} {:>6} {:>10}  {}\n", id, state, dest, width, kind,
                             attempts, created, next, error);
  };
  line("id", "state", "destination", "kind", "attempts", "age", "next", "last error");
  std::map<std::string, int> orphan_rows;
  for (const auto& r : rows) {
    const std::string next =
        r.state != "pending" ? "-" : r.next_attempt_ms <= now ? "now" : "in " + age(now, r.next_attempt_ms);
    line(r.id, r.state, shown(r.destination), r.kind, r.attempts, age(r.created_ms, now), next, r.last_error);
    if (!c.is_configured(r.destination) && r.state != "sent") ++orphan_rows[r.destination];
  }
  std::cout << rows.size() << " object(s)\n";
  for (const auto& [d, n] : orphan_rows)
    std::cout << fmt::format("{} unsent object(s) for '{}', which {} does not configure: never sent; "
                             "`pacsnode outbox purge --orphaned` removes them\n",
                             n, d, c.config.source);
  return cli::kExitOk;
}

int retry(const OutboxOptions& o) {
  Context c = open(o);
  if (!o.destination.empty() && !c.is_configured(o.destination))
    throw cli::UsageError(fmt::format("destination '{}' is not in {}: its objects are never sent "
                                      "(`pacsnode outbox purge --orphaned` removes them)",
                                      o.destination, c.config.source));
  OutboxSelection sel;
  if (!o.state.empty())
    sel.states = std::vector<std::string>{o.state};
  else if (o.all || !o.destination.empty() || !o.ids.empty())
    sel.states = std::vector<std::string>{"pending", "dead"};
  else
    sel.states = std::vector<std::string>{"dead"};  // no option: every dead object
  if (!o.ids.empty()) sel.ids = o.ids;
  OutboxSelection orphaned = sel;
  orphaned.destinations = std::vector<std::string>(c.orphans.begin(), c.orphans.end());
  sel.destinations = o.destination.empty() ? std::vector<std::string>(c.configured.begin(), c.configured.end())
                                           : std::vector<std::string>{o.destination};
  const std::size_t left = c.index->outbox_select(orphaned).size();
  const int n = c.index->outbox_retry(sel, wall_ms());
  std::cout << n << " object(s) queued again; a running pacsnode sends them at its next look at the outbox "
                    "(every second)\n";
  if (left)
    std::cout << fmt::format("{} object(s) of destinations no longer configured ({}) left as they are; "
                             "`pacsnode outbox purge --orphaned` removes them\n",
                             left, join(c.orphans));
  return cli::kExitOk;
}

int purge(const OutboxOptions& o) {
  Context c = open(o);
  OutboxSelection sel;
  std::string what;
  if (o.orphaned || (!o.destination.empty() && !c.is_configured(o.destination))) {
    // Destinations the config no longer has: their rows are never sent, any state may go.
    const std::set<std::string> names = o.orphaned ? c.orphans : std::set<std::string>{o.destination};
    if (names.empty()) {
      std::cout << "every destination in the outbox is configured in " << c.config.source << ": nothing removed\n";
      return cli::kExitOk;
    }
    sel.destinations = std::vector<std::string>(names.begin(), names.end());
    if (!o.state.empty()) sel.states = std::vector<std::string>{o.state};
    what = fmt::format("{}object(s) of {} (not configured)", o.state.empty() ? "" : o.state + " ", join(names));
  } else {
    const std::string state = o.state.empty() ? "sent" : o.state;
    if (state == "pending")
      throw cli::UsageError(
          "pending objects are purged only for destinations no longer configured (--orphaned, or --destination "
          "with such a name); for a configured destination they are still to be sent");
    sel.states = std::vector<std::string>{state};
    if (!o.destination.empty()) sel.destinations = std::vector<std::string>{o.destination};
    what = fmt::format("{} object(s)", state);
  }
  std::cout << c.index->outbox_purge(sel) << " " << what << " removed from the outbox\n";
  return cli::kExitOk;
}

void common_options(CLI::App& app, OutboxOptions& o) {
  o.config_opts.push_back(app.add_option("--config", o.config, "config file (default: see below)")->type_name("FILE"));
  o.root_opts.push_back(app.add_option("--root", o.root, "storage root (the folder with index.sqlite); default: as the daemon")
                            ->type_name("DIR"));
}

const std::string kRootNote =
    std::string(kConfigNote) +
    "\nThe storage root is resolved as the daemon does: an absolute storage.root as it is; a relative one in\n"
    "$STATE_DIRECTORY (under systemd), else in /var/lib/pacsnode (the unit's state directory) when an index is\n"
    "there, else in the working directory. --root overrides it. The config and root used are printed on stderr.";

cli::Action setup_outbox(CLI::App& app) {
  auto o = std::make_shared<OutboxOptions>();
  app.require_subcommand(1);
  app.footer(kRootNote);

  CLI::App* l = app.add_subcommand("list", "every object with its state, attempts, next attempt and last error");
  common_options(*l, *o);
  l->add_option("--state", o->state, "only this state")->check(CLI::IsMember({"pending", "sent", "dead"}))->type_name("S");
  l->add_option("--destination", o->destination, "only this destination")->type_name("NAME");
  l->footer("A destination the config no longer has is flagged \"(not configured)\".\n" + kRootNote);

  CLI::App* r = app.add_subcommand("retry", "send objects again now (default: every dead object)");
  common_options(*r, *o);
  auto* all = r->add_flag("--all", o->all, "every pending and dead object, due now (after an outage)");
  r->add_option("--destination", o->destination, "objects of this destination (pending and dead)")->type_name("NAME");
  auto* st = r->add_option("--state", o->state, "only this state")->check(CLI::IsMember({"pending", "dead"}))->type_name("S");
  auto* ids = r->add_option("--id", o->ids, "these objects (ids from `outbox list`)")->type_name("N");
  all->excludes(st)->excludes(ids);
  r->footer("Attempts start again from 0. Objects of destinations no longer configured are left alone.\n" + kRootNote);

  CLI::App* p = app.add_subcommand("purge", "remove objects from the outbox (default: every sent object)");
  common_options(*p, *o);
  p->add_option("--state", o->state, "only this state (pending: only with --orphaned)")
      ->check(CLI::IsMember({"pending", "sent", "dead"}))
      ->type_name("S");
  auto* orphaned = p->add_flag("--orphaned", o->orphaned, "every object of destinations no longer in the config");
  auto* dest = p->add_option("--destination", o->destination, "objects of this destination")->type_name("NAME");
  orphaned->excludes(dest);
  p->footer("Files in outbound/ stay (retention removes them). Pending objects of a configured destination are\n"
            "never purged.\n" + kRootNote);

  return [o, l, r] {
    if (l->parsed()) return list(*o);
    if (r->parsed()) return retry(*o);
    return purge(*o);
  };
}

}  // namespace

cli::Command outbox_command() {
  return {"outbox", "the queue of results for the destinations: list, retry, purge", setup_outbox};
}

int outbox_main(const std::vector<std::string>& args) { return cli::run_one("pacsnode", outbox_command(), args); }

}  // namespace scp
