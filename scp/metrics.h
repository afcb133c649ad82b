#pragma once
// What /metrics shows that the index does not hold: durations and event counts recorded by the
// daemon's parts (job runner, outbound queue, receiver) into the one NodeMetrics the daemon owns.
// Thread-safe; a few mutex-guarded additions per job or delivery, none per received PDU.
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace scp {

// A Prometheus histogram: counts per upper bound (cumulative when read), sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds = {}) : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}
  void observe(double v) {
    std::lock_guard lock(m_);
    const auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    if (i < counts_.size()) ++counts_[i];
    sum_ += v;
    ++count_;
  }
  struct Snapshot {
    std::vector<std::pair<double, std::uint64_t>> buckets;  // upper bound, observations <= it
    double sum = 0;
    std::uint64_t count = 0;  // also the +Inf bucket
  };
  Snapshot snapshot() const {
    std::lock_guard lock(m_);
    Snapshot s;
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) s.buckets.emplace_back(bounds_[i], running += counts_[i]);
    s.sum = sum_;
    s.count = count_;
    return s;
  }

 private:
  mutable std::mutex m_;
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

// Counters keyed by their label values (the label names are the renderer's).
class LabeledCounters {
 public:
  using Key = std::vector<std::string>;
  void add(const Key& labels, std::uint64_t n = 1) {
    std::lock_guard lock(m_);
    counts_[labels] += n;
  }
  std::map<Key, std::uint64_t> snapshot() const {
    std::lock_guard lock(m_);
    return counts_;
  }

 private:
  mutable std::mutex m_;
  std::map<Key, std::uint64_t> counts_;
};

// Histograms keyed by one label value, all with the same bounds.
class LabeledHistograms {
 public:
  explicit LabeledHistograms(std::vector<double> bounds) : bounds_(std::move(bounds)) {}
  void observe(const std::string& label, double v) {
    Histogram* h = nullptr;
    {
      std::lock_guard lock(m_);
      auto it = by_label_.find(label);
      if (it == by_label_.end()) it = by_label_.try_emplace(label, bounds_).first;
      h = &it->second;  // std::map nodes stay put
    }
    h->observe(v);
  }
  std::map<std::string, Histogram::Snapshot> snapshot() const {
    std::lock_guard lock(m_);
    std::map<std::string, Histogram::Snapshot> out;
    for (const auto& [label, h] : by_label_) out.emplace(label, h.snapshot());
    return out;
  }

 private:
  mutable std::mutex m_;
  std::vector<double> bounds_;
  std::map<std::string, Histogram> by_label_;
};

struct NodeMetrics {
  // A job: a complete study, every series in its worker, from start to the last result queued.
  Histogram job_seconds{{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800}};
  // Each pipeline stage of each analysed volume, as the worker timed it ({stage}).
  LabeledHistograms stage_seconds{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  // Worker processes that did not finish ({outcome, signal}): crashed/SIGSEGV, memory limit/"", ...
  LabeledCounters worker_failures;
  // Every attempt to send a result object ({destination, outcome}): sent, retry, dead.
  LabeledCounters deliveries;
};

}  // namespace scp
