// Private to train/: what the training loop adds in an elastic run (under
// tandem-run --min-workers/--max-workers; docs/elastic.md). The loop asks it,
// at every step boundary, whether the generation ends there (workers wait to
// join) and commits the state in memory; when a step fails because a member
// died or stalled, recover() leaves the generation, joins the next one and
// returns the state of the step to redo, taken from the survivors' commits.
// The data order is the global one (GlobalCursor): a function of (seed,
// epoch, global sample index), which the ranks of every generation split.
// Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/train/options.h"
#include "tandem/train/strategy.h"
#include "train/elastic_membership.h"
#include "train/elastic_state.h"
#include "train/resume.h"
#include "train/trainer_support.h"

namespace tandem::train {

// The global sample order, split among the ranks: each step takes the next
// `global_batch` samples of the epoch's order (epoch_order of (seed, epoch);
// an epoch ends when fewer than a batch are left), and rank r of W reads
// the shard_range(global_batch, W, r) slice of them.
class GlobalCursor final : public BatchCursor {
 public:
  GlobalCursor(int64_t num_samples, uint64_t seed);
  // Which slice the next batches are: call it after every world change.
  void set_split(int64_t global_batch, int world_size, int rank);
  void resume_at(int64_t epoch, int64_t samples_in_epoch);
  std::span<const int64_t> next() override;
  int64_t epoch() const override { return epoch_; }
  int64_t samples_in_epoch() const override { return consumed_; }
  // Optimizer steps per epoch at `global_batch`.
  int64_t steps_per_epoch(int64_t global_batch) const;
  // The loss weight of this rank's slice: its share of the global batch
  // times the world size, so that the average over ranks that DDP and ZeRO
  // take is the mean over the global batch, even when it does not split
  // evenly (1 when it does).
  double loss_scale() const;

 private:
  int64_t num_samples_;
  uint64_t seed_;
  int64_t global_batch_ = 1;
  int world_size_ = 1;
  int rank_ = 0;
  int64_t epoch_ = 0;
  int64_t consumed_ = 0;  // global samples of epoch_ taken
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> batch_;
};

// One membership change, as logged and written to the metrics.
struct MembershipChange {
  int64_t generation = 0;
  std::vector<int> members;
  nlohmann::json cause;
  double detect_seconds = 0;      // from the failure to this rank's knowing it
  double recovery_seconds = 0;    // from knowing it to the state restored
  double membership_seconds = 0;  // of which: agreeing on the members, the new communicator
  double state_seconds = 0;       // and: gathering the state, rebuilding the strategy
  int64_t seen_unix_ms = 0;       // when this rank knew it (wall clock)
  int64_t step = 0;               // the step the run continues from
  int64_t steps_redone = 0;
  nlohmann::json to_json() const;
  std::string describe() const;
};

class ElasticRun {
 public:
  // Joins the job: blocks until a generation admits this worker.
  ElasticRun(const TrainerOptions& o, std::unique_ptr<ElasticMembership> membership);
  ~ElasticRun();

  const std::shared_ptr<Communicator>& comm() const { return membership_->current().comm; }
  const Generation& generation() const { return membership_->current(); }
  ElasticMembership& membership() { return *membership_; }
  int64_t global_batch() const;
  // Generation 0's size.
  int first_world() const { return first_world_; }
  // The learning rate's factor: 1 under --elastic-batch global; the world
  // size over the first generation's under per-rank.
  double lr_factor() const;
  // Sets the cursor's split for the current generation.
  void split(GlobalCursor& cursor) const;

  // At the step boundary before `at.step`: commits the state in memory,
  // then votes (collective): true when the generation ends here.
  bool at_boundary(Strategy& strategy, const RunPosition& at);
  // True when the current generation's communicator failed (a member died
  // or stalled, or the coordinator ended it): recover() then applies. After
  // an error it waits up to the heartbeat timeout (+2 s) for that word.
  bool failed() const;

  struct Recovered {
    ResumePoint point;
    MembershipChange change;
  };
  // Leaves the current generation and joins the next (collective over it),
  // then gathers the state of the step to redo. `step` is the step that was
  // in progress (or the boundary at which the generation ended); `since`
  // when this rank saw the failure. The caller has dropped every user of
  // the old communicator (the strategy). Throws LeftJobError when this
  // worker is out of the job.
  // `mid_step`: the failure came after the boundary's commit, inside the
  // step (its partial work is redone).
  Recovered recover(int64_t step, std::chrono::steady_clock::time_point since, bool mid_step);
  // A worker that just joined (TANDEM_ELASTIC_JOIN): its part of the
  // survivors' recover() in its first generation, which brings it the state.
  Recovered catch_up();
  bool joined_late() const { return membership_->env().joining; }

  // The asynchronous strategies (ps, gossip): no commits and no votes. After
  // a failure this rank leaves the generation and joins the next; it goes on
  // from its own current state (a ps worker pulls the servers'). Throws
  // NotSupported when the last `servers` members (the parameter servers)
  // are not the same workers as before: losing a server is not covered.
  // `step`: where this rank is; `mid_step`: a step was interrupted (it is
  // redone).
  MembershipChange reform_async(int servers, std::chrono::steady_clock::time_point since,
                                int64_t step, bool mid_step);
  // Rank 0, at the start of an asynchronous run: replacements may not join
  // (the coordinator evicts them with `why`).
  void close_joins(const std::string& why) { membership_->close_joins(why); }

 private:
  Recovered gather(int64_t reached, std::chrono::steady_clock::time_point since,
                   std::chrono::steady_clock::time_point reformed);

  const TrainerOptions& o_;
  std::unique_ptr<ElasticMembership> membership_;
  StateReplica replica_;
  int64_t commit_generation_ = -1;  // the generation of replica_'s commits
  int first_world_ = 1;
};

}  // namespace tandem::train
