#pragma once
// Decides when a study is complete: after quiet_time without a new instance, sooner when the
// headers announce counts that have been reached. All state lives on one strand.
//
// The index has the last word (Index::try_complete): a study completes only when its newest
// instance in the index is old enough, so in a cluster, where instances of one study reach
// several nodes, it completes once, after the cluster's last instance. A cluster node also
// counts the announced totals from the index (every node's instances), and looks at the index
// every `sweep` for open studies no node is waiting for (their node died).
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "dicom/instance_header.h"
#include "scp/index.h"

namespace scp {

class StudyAssembler {
 public:
  struct Options {
    std::chrono::milliseconds quiet{20000};
    std::chrono::milliseconds expected_grace{2000};
    bool cluster = false;                 // the index is shared with other nodes
    std::chrono::milliseconds sweep{2000};  // cluster: how often to adopt open studies
  };
  // Called on the strand after the index recorded the completion.
  using OnComplete = std::function<void(const std::string& study_uid, int generation)>;

  StudyAssembler(boost::asio::io_context& io, Index& index, Options opt, OnComplete on_complete = {});

  // Thread-safe: called by the SCP workers after the instance is committed and indexed.
  void on_instance(const dicom::InstanceHeader& h, bool is_new);
  // Thread-safe: schedules every open study of the index (at start, after reconciling).
  void restore();
  // Studies waiting for completion (approximate when read from another thread).
  std::size_t open_studies() const { return open_.load(); }

 private:
  struct Group {  // one acquisition of one series
    std::int64_t count = 0;
    std::optional<long> expected;
  };
  struct Pending {
    explicit Pending(boost::asio::strand<boost::asio::io_context::executor_type>& s) : timer(s) {}
    int completed_generation = 0;
    std::map<std::pair<std::string, long>, Group> groups;
    std::optional<long> study_expected;
    std::int64_t count = 0;
    boost::asio::steady_timer timer;
    std::uint64_t tick = 0;
  };

  void add(Pending& p, const std::string& series, std::optional<long> acq, std::optional<long> images,
           std::optional<long> study_total);
  // A study as the index knows it: completed generation and every instance counted.
  std::unique_ptr<Pending> from_index(const std::string& uid, int completed_generation);
  // Refreshes the counts from the index (every node's instances).
  void recount(const std::string& uid, Pending& p);
  // When to look again, and how quiet the study must be then, for the counts as they stand.
  struct Plan {
    std::chrono::milliseconds quiet;
    const char* reason;
  };
  Plan plan(const Pending& p) const;
  void schedule(const std::string& uid, Pending& p, std::chrono::steady_clock::duration since_last);
  void complete(const std::string& uid, const Plan& plan);
  void sweep();
  void adopt_open_studies();  // on the strand

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  Index& index_;
  Options opt_;
  OnComplete on_complete_;
  std::map<std::string, std::unique_ptr<Pending>> studies_;
  std::atomic<std::size_t> open_{0};
  boost::asio::steady_timer sweep_timer_;
};

std::int64_t wall_ms();

}  // namespace scp
