#pragma once
// `pacsnode outbox list|retry|purge`: the queue of result objects for the destinations, dead-letter
// included, as an administrator drives it. Opens the index of the storage root that the daemon
// uses (scp/install_paths.h) and names that root on stderr; --help touches nothing.
//
//   outbox list  [--state pending|sent|dead] [--destination NAME]
//       every row; a destination no longer in the config is flagged "(not configured)"
//   outbox retry [--all | --destination NAME | --state dead|pending | --id N...]
//       back to pending, due now, attempts reset: without options every dead row,
//       --all every pending and dead row (after an outage: "retry all now"); rows of destinations
//       no longer configured are left alone (the daemon would never send them)
//   outbox purge [--state sent|dead|pending] [--orphaned | --destination NAME]
//       deletes rows: without options every sent row; --orphaned every row of destinations no
//       longer configured; pending rows only of those
// Each takes --config FILE and --root DIR.
#include <string>
#include <vector>

#include "cli/command.h"

namespace scp {

cli::Command outbox_command();
// The same on its own (args: everything after "outbox").
int outbox_main(const std::vector<std::string>& args);

}  // namespace scp
