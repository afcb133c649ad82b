#pragma once
// Decides when a study is complete: after quiet_time without a new instance, sooner when the
// headers announce counts that have been reached. All state lives on one strand.
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
  void schedule(const std::string& uid, Pending& p, std::chrono::steady_clock::duration since_last);
  void complete(const std::string& uid, const char* reason);

  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  Index& index_;
  Options opt_;
  OnComplete on_complete_;
  std::map<std::string, std::unique_ptr<Pending>> studies_;
  std::atomic<std::size_t> open_{0};
};

std::int64_t wall_ms();

}  // namespace scp
