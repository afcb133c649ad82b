#pragma once
#include <string>
#include <vector>

namespace scp {
// pacsnode outbox list|retry|purge [--config FILE] [--state S] [--id N]...
int outbox_main(const std::vector<std::string>& args);
}  // namespace scp
