#pragma once
// Sub-commands of `pacsnode`, parsed with CLI11.
//
// Every command is a `Command`: its `setup` adds the options and positionals to the CLI::App of
// the command and returns the action that runs once the WHOLE command line parsed. Parsing
// therefore never touches a file, the index or the network, so `pacsnode --help`,
// `pacsnode CMD --help` and `pacsnode outbox retry --help` always work. A new command is one more
// entry in the table of scp/main.cpp.
//
// Exit codes of every command: 0 success, 1 runtime failure, 2 bad usage or invalid config.
// Usage errors print "pacsnode CMD: <what>" and the help of the command on stderr.
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// What a command does once its arguments parsed; returns the exit code.
using Action = std::function<int()>;

struct Command {
  std::string name;
  std::string summary;                       // one line in `pacsnode --help`
  std::function<Action(CLI::App&)> setup;    // adds options; the returned action runs if chosen
};

// Thrown by an action for a usage problem only visible after parsing (options that do not go
// together, a name the config does not know): exit 2, with the command's help.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown by an action that printed its own message and ends with `code` (an invalid config: 2).
struct Exit {
  int code;
};

// `PROGRAM ARGS...` (args without the program name): parses with every command, runs the one
// chosen. Help and version go to stdout with exit 0; --version prints "PROGRAM VERSION", and VERSION
// may go on over further lines (build details). An action's std::exception is printed as
// "PROGRAM CMD: what" with exit 1.
int run(const std::string& program, const std::string& description, const std::string& version,
        const std::vector<Command>& commands, const std::vector<std::string>& args);

// One command on its own, as `PROGRAM NAME ARGS...` (the in-process entry points of the tests).
int run_one(const std::string& program, const Command& command, const std::vector<std::string>& args);

}  // namespace cli
