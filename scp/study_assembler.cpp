#include "scp/study_assembler.h"

#include <algorithm>
#include <set>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>

#include "dicom/log.h"

namespace asio = boost::asio;

namespace scp {

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

StudyAssembler::StudyAssembler(asio::io_context& io, Index& index, Options opt, OnComplete on_complete)
    : strand_(asio::make_strand(io)),
      index_(index),
      opt_(opt),
      on_complete_(std::move(on_complete)),
      sweep_timer_(strand_) {}

void StudyAssembler::add(Pending& p, const std::string& series, std::optional<long> acq, std::optional<long> images,
                         std::optional<long> study_total) {
  auto& g = p.groups[{series, acq.value_or(-1)}];
  ++g.count;
  if (images && *images > 0) g.expected = *images;
  if (study_total && *study_total > 0) p.study_expected = *study_total;
  ++p.count;
}

std::unique_ptr<StudyAssembler::Pending> StudyAssembler::from_index(const std::string& uid, int completed_generation) {
  auto p = std::make_unique<Pending>(strand_);
  p->completed_generation = completed_generation;
  for (const auto& in : index_.instances_of(uid))
    add(*p, in.series_uid, in.acquisition_number, in.images_in_acquisition, in.number_of_study_related_instances);
  return p;
}

void StudyAssembler::on_instance(const dicom::InstanceHeader& h, bool is_new) {
  asio::post(strand_, [this, h, is_new]() mutable {
    auto it = studies_.find(h.study_uid);
    if (it == studies_.end()) {
      std::unique_ptr<Pending> p;
      if (auto row = index_.study(h.study_uid); row && row->generation > 0) {
        // Late arrival for a study that already completed: it reopens with everything it has.
        p = from_index(h.study_uid, row->generation);
        pacsnode::component_logger("study")->info("study {} reopened by a late instance ({} instances)",
                                                  study_hash(index_.log_key(), h.study_uid), p->count);
        is_new = false;  // already counted from the index
      } else {
        p = std::make_unique<Pending>(strand_);
      }
      it = studies_.emplace(h.study_uid, std::move(p)).first;
      open_ = studies_.size();
    }
    if (is_new) add(*it->second, h.series_uid, h.acquisition_number, h.images_in_acquisition, h.number_of_study_related_instances);
    schedule(h.study_uid, *it->second, {});
  });
}

void StudyAssembler::restore() {
  asio::post(strand_, [this] {
    adopt_open_studies();
    if (opt_.cluster) sweep();
  });
}

void StudyAssembler::adopt_open_studies() {
  const auto now = wall_ms();
  std::vector<StudyRow> open;
  try {
    open = index_.studies(StudyState::open);
  } catch (const std::exception& e) {
    pacsnode::component_logger("study")->error("cannot read the open studies from the index: {}", e.what());
    return;
  }
  for (const auto& row : open) {
    if (studies_.count(row.study_uid)) continue;
    auto p = from_index(row.study_uid, row.generation);
    auto& ref = *p;
    studies_.emplace(row.study_uid, std::move(p));
    schedule(row.study_uid, ref, std::chrono::milliseconds(std::max<std::int64_t>(0, now - row.last_instance_ms)));
  }
  open_ = studies_.size();
}

void StudyAssembler::sweep() {
  sweep_timer_.expires_after(opt_.sweep);
  sweep_timer_.async_wait(asio::bind_executor(strand_, [this](boost::system::error_code ec) {
    if (ec) return;
    adopt_open_studies();
    sweep();
  }));
}

StudyAssembler::Plan StudyAssembler::plan(const Pending& p) const {
  if (p.study_expected && p.count >= *p.study_expected) return {std::chrono::milliseconds(0), "announced study count reached"};
  bool all = !p.groups.empty();
  for (const auto& [key, g] : p.groups) all = all && g.expected && g.count >= *g.expected;
  if (all) return {opt_.expected_grace, "announced series counts reached"};
  return {opt_.quiet, "quiet time"};
}

void StudyAssembler::schedule(const std::string& uid, Pending& p, std::chrono::steady_clock::duration since_last) {
  std::chrono::steady_clock::duration wait = plan(p).quiet;
  // A cluster node sees only its own share of the instances: where totals are announced it looks
  // at the whole study in the index after the grace time, not after the whole quiet time.
  if (opt_.cluster && (p.study_expected || std::any_of(p.groups.begin(), p.groups.end(), [](const auto& g) {
                         return g.second.expected.has_value();
                       })))
    wait = std::min<std::chrono::steady_clock::duration>(wait, opt_.expected_grace);
  wait = since_last >= wait ? std::chrono::steady_clock::duration{} : wait - since_last;
  p.timer.expires_after(wait);
  p.timer.async_wait(asio::bind_executor(strand_, [this, uid, tick = ++p.tick](boost::system::error_code ec) {
    if (ec) return;  // cancelled: the assembler may be gone, touch nothing
    auto it = studies_.find(uid);
    if (it == studies_.end() || it->second->tick != tick) return;  // superseded by a newer instance
    if (opt_.cluster) recount(uid, *it->second);
    complete(uid, plan(*it->second));
  }));
}

void StudyAssembler::recount(const std::string& uid, Pending& p) {
  try {
    auto fresh = from_index(uid, p.completed_generation);
    p.groups = std::move(fresh->groups);
    p.study_expected = fresh->study_expected;
    p.count = fresh->count;
  } catch (const std::exception& e) {
    pacsnode::component_logger("study")->warn("study {}: cannot recount from the index: {}", study_hash(index_.log_key(), uid),
                                              e.what());
  }
}

void StudyAssembler::complete(const std::string& uid, const Plan& plan) {
  auto log = pacsnode::component_logger("study");
  auto& p = *studies_.at(uid);
  const auto now = wall_ms();
  Completion c;
  try {
    c = index_.try_complete(uid, now, plan.quiet.count());
  } catch (const std::exception& e) {
    // The index could not record it (disk full, database unreachable): try again after another quiet time.
    log->error("study {}: cannot record completion: {}", study_hash(index_.log_key(), uid), e.what());
    schedule(uid, p, {});
    return;
  }
  if (!c.generation) {
    if (c.already_complete || c.unknown) {
      // Another node of the cluster completed it (or retention forgot it): nothing left to do here.
      log->debug("study {}: completed elsewhere", study_hash(index_.log_key(), uid));
      studies_.erase(uid);
      open_ = studies_.size();
      return;
    }
    // A newer instance reached another node: wait until the whole cluster has been quiet.
    schedule(uid, p, std::chrono::milliseconds(std::max<std::int64_t>(0, now - c.last_instance_ms)));
    return;
  }
  std::set<std::string> series;
  for (const auto& [key, g] : p.groups) series.insert(key.first);
  log->info("study {} complete ({}): {} instances in {} series, generation {}", study_hash(index_.log_key(), uid),
            plan.reason, p.count, series.size(), *c.generation);
  studies_.erase(uid);
  open_ = studies_.size();
  if (on_complete_) on_complete_(uid, *c.generation);
}

}  // namespace scp
