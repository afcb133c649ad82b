#include "cli/command.h"

#include <iostream>
#include <utility>

#include <CLI/CLI.hpp>

namespace cli {
namespace {

// "outbox retry": the sub-commands the parse chose (so far, after an error), below `app`.
std::string chosen(const CLI::App& app) {
  std::string path;
  for (const CLI::App* a = &app;;) {
    const auto subs = a->get_subcommands();
    if (subs.empty()) break;
    a = subs.front();
    path += (path.empty() ? "" : " ") + a->get_name();
  }
  return path;
}

std::string name_of(const CLI::App& app) {
  const std::string sub = chosen(app);
  return sub.empty() ? app.get_name() : app.get_name() + " " + sub;
}

// The innermost command the parse chose.
const CLI::App& innermost(const CLI::App& app) {
  const CLI::App* a = &app;
  while (!a->get_subcommands().empty()) a = a->get_subcommands().front();
  return *a;
}

// "NAME: what", the usage line of the command, and where its options are explained.
int usage_error(const CLI::App& app, const std::string& what) {
  const std::string name = name_of(app);
  std::cerr << name << ": " << what << "\n"
            << CLI::Formatter().make_usage(&innermost(app), name) << "Run '" << name
            << " --help' for the options.\n";
  return kExitUsage;
}

void style(CLI::App& app) {
  app.get_formatter()->column_width(32);
  app.get_formatter()->label("REQUIRED", "(required)");
}

// CLI11 expects the arguments reversed; help, version and usage errors end here.
int parse(CLI::App& app, const std::vector<std::string>& args) {
  try {
    app.parse(std::vector<std::string>(args.rbegin(), args.rend()));
    return -1;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return usage_error(app, e.what());
  }
}

int invoke(const CLI::App& app, const Action& action) {
  try {
    return action();
  } catch (const UsageError& e) {
    return usage_error(app, e.what());
  } catch (const Exit& e) {
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << name_of(app) << ": " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace

int run(const std::string& program, const std::string& description, const std::string& version,
        const std::vector<Command>& commands, const std::vector<std::string>& args_in) {
  CLI::App app(description, program);
  style(app);
  app.set_version_flag("--version", program + " " + version, "print the version and exit");
  app.require_subcommand(1);  // checked after --help and --version
  app.footer("Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid config.\n"
             "'" + program + " COMMAND --help' shows the options of a command.");
  std::vector<std::pair<CLI::App*, Action>> actions;
  for (const auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.summary);
    actions.emplace_back(sub, c.setup(*sub));
  }
  std::vector<std::string> args = args_in;
  if (!args.empty() && args.front() == "help") {  // `pacsnode help [CMD]`, as `pacsnode [CMD] --help`
    args.erase(args.begin());
    args.push_back("--help");
  }
  const auto usage_error = [&](const std::string& what) {
    std::cerr << program << ": " << what << "\n\n" << app.help();
    return kExitUsage;
  };
  if (args.empty()) return usage_error("no command given");
  if (args.front().rfind("-", 0) != 0) {
    bool known = false;
    for (const auto& c : commands) known = known || c.name == args.front();
    if (!known) return usage_error("unknown command '" + args.front() + "'");
  }
  if (const int rc = parse(app, args); rc >= 0) return rc;
  for (const auto& [sub, action] : actions)
    if (sub->parsed()) return invoke(app, action);
  return usage_error("no command given");
}

int run_one(const std::string& program, const Command& command, const std::vector<std::string>& args) {
  CLI::App app(command.summary, program + " " + command.name);
  style(app);
  const Action action = command.setup(app);
  if (const int rc = parse(app, args); rc >= 0) return rc;
  return invoke(app, action);
}

}  // namespace cli
