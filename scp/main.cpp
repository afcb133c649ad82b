// pacsnode: a PACS-integrated DICOM node. Command line entry point.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "analysis/cli.h"
#include "analysis/worker.h"
#include "config/config.h"
#include "scp/daemon.h"
#include "scp/logging.h"
#include "scp/outbox_cli.h"
#include "analysis/profiles_config.h"

namespace {

constexpr const char* kUsage = R"(pacsnode - receives DICOM studies, analyses them and returns the results to the PACS

Usage:
  pacsnode run [--config FILE]      run the node in the foreground (default: the embedded config)
  pacsnode check-config FILE        validate a config file and exit (0: valid)
  pacsnode analyze INPUT --out DIR [--profile NAME]
                                    analyse a folder of DICOM files (research use): features.json,
                                    features.csv, previews, SEG and SR per series
  pacsnode evaluate --pred A --ref B
                                    overlap metrics of two masks as JSON
  pacsnode train --features CSV --labels COLUMN_OR_FILE --out MODEL [--folds K] [--positive LABEL]
                                    fit a random forest with k-fold cross-validation
  pacsnode outbox list|retry|purge [--config FILE] [--state S] [--id N]...
                                    see and act on the queue of results for the destinations
  pacsnode print-default-config     print the embedded default config (documented)
  pacsnode --help | --version

Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid config.
)";

int usage_error(const std::string& what) {
  std::cerr << "pacsnode: " << what << "\n\n" << kUsage;
  return 2;
}

int print_config_error(const config::ConfigError& e) {
  std::cerr << "pacsnode: invalid configuration:\n";
  for (const auto& p : e.problems()) std::cerr << "  " << p << "\n";
  return 2;
}

int cmd_run(const std::vector<std::string>& args) {
  std::string file;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) file = args[++i];
    else return usage_error("run: unexpected argument '" + args[i] + "'");
  }
  config::Config cfg;
  try {
    cfg = file.empty() ? config::load_default() : config::load_file(file);
    analysis::profiles_from(cfg);  // profile parameters are part of the config: validate them now
  } catch (const config::ConfigError& e) {
    return print_config_error(e);
  }
  scp::setup_logging(cfg.log.level);
  try {
    return scp::run_daemon(cfg);
  } catch (const std::exception& e) {
    spdlog::critical("cannot run: {}", e.what());
    return 1;
  }
}

int cmd_check_config(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage_error("check-config takes one FILE");
  try {
    const auto cfg = config::load_file(args[0]);
    const auto profiles = analysis::profiles_from(cfg);
    std::cout << args[0] << ": valid (" << cfg.destinations.size() << " destination(s), listening on " << cfg.node.bind
              << ":" << cfg.node.port << " as " << cfg.node.ae_title << ", " << profiles.size()
              << " analysis profile(s))\n";
    return 0;
  } catch (const config::ConfigError& e) {
    return print_config_error(e);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage_error("no command given");
  const std::string cmd = args.front();
  args.erase(args.begin());
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (cmd == "--version") {
    std::cout << "pacsnode " << PACSNODE_VERSION << "\n";
    return 0;
  }
  if (cmd == "run") return cmd_run(args);
  if (cmd == "check-config") return cmd_check_config(args);
  if (cmd == "outbox") return scp::outbox_main(args);
  if (cmd == "worker") {  // internal: one series in a child process of the daemon or of analyze
    const char* level = std::getenv("PACSNODE_LOG_LEVEL");
    scp::setup_logging(level && *level ? level : "warn");
    return analysis::worker::worker_main(args);
  }
  if (cmd == "analyze" || cmd == "evaluate" || cmd == "train") {
    scp::setup_logging("warn");  // progress goes to the terminal; details only when asked for
    if (cmd == "analyze") return analysis::analyze_main(args);
    if (cmd == "evaluate") return analysis::evaluate_main(args);
    return analysis::train_main(args);
  }
  if (cmd == "print-default-config") {
    std::cout << config::default_toml();
    return 0;
  }
  return usage_error("unknown command '" + cmd + "'");
}
