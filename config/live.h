#pragma once
// The config in force, swapped whole on reload (SIGHUP): readers take a snapshot with get() and use
// it for one unit of work (an association, a job, a send), so nothing ever sees half of an old and
// half of a new config.
#include <memory>
#include <mutex>

#include "config/config.h"

namespace config {

class LiveConfig {
 public:
  explicit LiveConfig(Config c) : current_(std::make_shared<const Config>(std::move(c))) {}
  std::shared_ptr<const Config> get() const {
    std::lock_guard lock(mutex_);
    return current_;
  }
  void replace(Config c) {
    auto next = std::make_shared<const Config>(std::move(c));
    std::lock_guard lock(mutex_);
    current_ = std::move(next);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const Config> current_;
};

}  // namespace config
