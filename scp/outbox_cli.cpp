#include "scp/outbox_cli.h"

#include <cstdlib>
#include <iostream>

#include <fmt/format.h>

#include "config/config.h"
#include "scp/index.h"
#include "scp/spool.h"
#include "scp/study_assembler.h"

namespace fs = std::filesystem;

namespace scp {
namespace {

constexpr const char* kUsage =
    "usage: pacsnode outbox list  [--config FILE] [--state pending|sent|dead]\n"
    "       pacsnode outbox retry [--config FILE] [--id N]...   (default: every dead object)\n"
    "       pacsnode outbox purge [--config FILE] [--state sent|dead]   (default: sent)\n";

std::string age(std::int64_t from_ms, std::int64_t now_ms) {
  const auto s = (now_ms - from_ms) / 1000;
  if (s < 120) return fmt::format("{}s", s);
  if (s < 7200) return fmt::format("{}m", s / 60);
  return fmt::format("{}h", s / 3600);
}

}  // namespace

int outbox_main(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string verb = args[0];
  std::string file, state;
  std::vector<std::int64_t> ids;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) file = args[++i];
    else if (args[i] == "--state" && i + 1 < args.size()) state = args[++i];
    else if (args[i] == "--id" && i + 1 < args.size()) ids.push_back(std::atoll(args[++i].c_str()));
    else {
      std::cerr << "pacsnode outbox: unexpected argument '" << args[i] << "'\n" << kUsage;
      return 2;
    }
  }
  config::Config cfg;
  try {
    cfg = file.empty() ? config::load_default() : config::load_file(file);
  } catch (const config::ConfigError& e) {
    std::cerr << "pacsnode: invalid configuration:\n" << e.what() << "\n";
    return 2;
  }
  const fs::path db = storage_root(cfg.storage.root) / "index.sqlite";
  if (!fs::exists(db)) {
    std::cerr << "pacsnode outbox: no index at " << db.string() << " (storage.root of this config)\n";
    return 1;
  }
  Index index(db);
  const auto now = wall_ms();
  if (verb == "list") {
    if (!state.empty() && state != "pending" && state != "sent" && state != "dead") {
      std::cerr << "pacsnode outbox: --state is pending, sent or dead\n";
      return 2;
    }
    const auto rows = index.outbox(state.empty() ? std::nullopt : std::optional<std::string>(state));
    std::cout << fmt::format("{:>6}  {:<8} {:<12} {:<4} {:>8} {:>6} {:>10}  {}\n", "id", "state", "destination", "kind",
                             "attempts", "age", "next", "last error");
    for (const auto& r : rows) {
      const std::string next = r.state != "pending" ? "-" : r.next_attempt_ms <= now ? "now" : "in " + age(now, r.next_attempt_ms);
      std::cout << fmt::format("{:>6}  {:<8} {:<12} {:<4} {:>8} {:>6} {:>10}  {}\n", r.id, r.state, r.destination, r.kind,
                               r.attempts, age(r.created_ms, now), next, r.last_error);
    }
    std::cout << rows.size() << " object(s)\n";
    return 0;
  }
  if (verb == "retry") {
    const int n = index.retry(ids, now);
    std::cout << n << " object(s) queued again; a running pacsnode sends them within a second\n";
    return 0;
  }
  if (verb == "purge") {
    if (state.empty()) state = "sent";
    if (state != "sent" && state != "dead") {
      std::cerr << "pacsnode outbox: purge takes --state sent or dead (pending objects are never purged)\n";
      return 2;
    }
    std::cout << index.purge(state) << " " << state << " object(s) removed from the outbox\n";
    return 0;
  }
  std::cerr << "pacsnode outbox: unknown action '" << verb << "'\n" << kUsage;
  return 2;
}

}  // namespace scp
