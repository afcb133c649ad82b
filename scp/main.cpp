// pacsnode: a PACS-integrated DICOM node. Command line entry point: the table of sub-commands.
// Parsing is CLI11 (cli/command.h); each command's options and action live with its code. A new
// command is one more entry below.
#include <cstdlib>
#include <string>
#include <vector>

#include "analysis/cli.h"
#include <CLI/CLI.hpp>

#include "analysis/worker.h"
#include "cli/command.h"
#include "scp/build_info.h"
#include "scp/commands.h"
#include "scp/explain.h"
#include "scp/logging.h"
#include "scp/outbox_cli.h"

namespace {

// Offline commands print progress to the terminal; log details only when asked for.
cli::Command quiet(cli::Command c) {
  auto setup = std::move(c.setup);
  c.setup = [setup](CLI::App& app) {
    cli::Action action = setup(app);
    return cli::Action([action] {
      scp::setup_logging("warn");
      scp::exit_now(action());
      return 0;  // not reached
    });
  };
  return c;
}

// Internal: one series in a child process of the daemon or of `analyze` (analysis/worker.h). The
// job comes on stdin, events go to fd 3; no options.
cli::Command worker_command() {
  return {"worker", "internal: one series in a child process (job on stdin, events on fd 3)",
          [](CLI::App& app) {
            app.footer("Started by the daemon and by `analyze` (analysis/worker.h); not for use by hand.");
            return cli::Action([] {
              const char* level = std::getenv("PACSNODE_LOG_LEVEL");
              scp::setup_logging(level && *level ? level : "warn");
              scp::exit_now(analysis::worker::worker_main({}));
              return 0;  // not reached
            });
          }};
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<cli::Command> commands{
      scp::run_command(),
      scp::check_config_command(),
      scp::print_default_config_command(),
      quiet(analysis::analyze_command()),
      quiet(analysis::evaluate_command()),
      quiet(analysis::train_command()),
      scp::outbox_command(),
      scp::echo_command(),
      scp::explain_command(),
      worker_command(),
  };
  return cli::run("pacsnode", "pacsnode - receives DICOM studies, analyses them and returns the results to the PACS",
                  scp::version_text(), commands, std::vector<std::string>(argv + 1, argv + argc));
}
