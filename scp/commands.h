#pragma once
// The daemon-side sub-commands of `pacsnode` (registered in scp/main.cpp, parsed with CLI11, see
// cli/command.h) and what the administrative ones share.
//
//   pacsnode run [--config FILE]            the node in the foreground (default: embedded config)
//   pacsnode check-config [FILE]            validate; warnings for what will not work here
//   pacsnode print-default-config           the embedded default config, documented
//   pacsnode echo [DESTINATION] [--config FILE] [--host H] [--port P] [--ae AE] [--calling-ae AE]
//                                           C-ECHO a destination, with timings
// (`pacsnode outbox ...`: scp/outbox_cli.h)
#include <filesystem>
#include <optional>
#include <string>

#include "cli/command.h"
#include "config/config.h"
#include "scp/install_paths.h"

namespace scp {

cli::Command run_command();
cli::Command check_config_command();
cli::Command print_default_config_command();
cli::Command echo_command();

// "pacsnode: invalid configuration:" and one line per problem, on stderr.
void print_config_error(const config::ConfigError& e);

// For the administrative commands: the config (--config FILE, else the default files, see
// scp/install_paths.h), named on stderr ("pacsnode: config ..."). An invalid config prints its
// problems and ends the command with exit 2.
AdminConfig admin_config(const std::optional<std::filesystem::path>& file);
// How admin_config finds the config, for the commands' help.
inline constexpr const char* kConfigNote =
    "Without --config: /etc/pacsnode/pacsnode.toml, else <prefix>/etc/pacsnode/pacsnode.toml (the file the unit\n"
    "installed with the binary <prefix>/bin/pacsnode names), else the embedded default.";
// The storage root those commands use, named on stderr with how it was chosen.
RootChoice admin_root(const config::Config& cfg, const std::optional<std::filesystem::path>& root_option);

}  // namespace scp
