#pragma once
// Sends result objects to every configured destination by C-STORE. The queue is the outbox table
// of the index, so it survives restarts; an object is marked sent only after a success status
// (after a crash it may be sent again, with the same SOP Instance UID). Each destination has one
// association at a time on its own sender thread, so a failing destination holds up no other.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "config/config.h"
#include "config/live.h"
#include "dicom/store_scu.h"
#include "scp/index.h"
#include "scp/metrics.h"

namespace scp {

// Delay before attempt `attempts + 1`: initial * 2^attempts, capped, times a jitter in [0.8, 1.2].
std::chrono::milliseconds backoff(const config::Config::Outbound& o, int attempts, double jitter);

// The association settings for a destination: our AE title, its address, the [outbound] timeouts
// and its TLS settings.
dicom::StoreTarget store_target(const config::Config& c, const config::Destination& dest);

class OutboundQueue {
 public:
  // Each look at the queue reads the config in force (a reload may add or remove destinations).
  // `metrics`, when given, counts every attempt by destination and outcome.
  OutboundQueue(boost::asio::io_context& io, Index& index, const config::LiveConfig& cfg, NodeMetrics* metrics = nullptr);
  ~OutboundQueue();

  void start();   // looks for due objects every second
  void notify();  // new objects are queued: look now (thread-safe)
  void stop();    // no new sends; waits for associations in flight (bounded by their timeouts)

 private:
  void tick();
  void send(std::shared_ptr<const config::Config> cfg, config::Destination dest, std::vector<OutboxRow> rows);

  Index& index_;
  const config::LiveConfig& cfg_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer timer_;
  boost::asio::thread_pool senders_;
  std::set<std::string> in_flight_;  // destinations with an association open (on strand_)
  std::atomic<bool> stopping_{false};
  NodeMetrics* metrics_;
};

}  // namespace scp
