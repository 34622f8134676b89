// Private to train/: the in-memory commits of elastic training. At every
// step boundary each rank commits its state in memory, so that a membership
// change needs no disk round trip:
//   - none/ddp: every rank holds the whole model and optimizer state, so a
//     rank's own commit is the state;
//   - zero1/2/3: each rank commits its shard (Strategy::sharded_state) and
//     also holds a copy of the shard of its buddy, rank (r - 1 + W) % W
//     (it sends its own to (r + 1) % W), as Gemini's in-memory checkpoints.
// recover() rebuilds every rank's ResumePoint for the new generation from
// what the survivors hold, resharded to the new world size; when a rank and
// its buddy both died it falls back to the last on-disk checkpoint in
// --checkpoint-dir and says so. The last two commits are kept: a failure
// can leave the survivors one step apart (one passed the step boundary,
// another did not), and the step they redo is the earliest one.
// Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/train/options.h"
#include "tandem/train/strategy.h"
#include "train/resume.h"

namespace tandem::train {

class StateReplica {
 public:
  explicit StateReplica(const TrainerOptions& o);
  ~StateReplica();
  StateReplica(const StateReplica&) = delete;
  StateReplica& operator=(const StateReplica&) = delete;

  // At the step boundary before step `at.step`: commits this rank's state
  // (and the CPU RNG state). Collective over `comm` for the sharded
  // strategies (each rank sends its shard to its buddy); local otherwise.
  void commit(Strategy& strategy, Communicator& comm, const RunPosition& at);

  // The steps of the commits this rank holds, newest first (empty before
  // the first commit, and on a worker that just joined).
  std::vector<int64_t> committed_steps() const;

  // Collective over `comm`, the new generation. `old_rank[r]` is the rank
  // that new rank r had in the previous generation (-1 for a worker that
  // just joined), `old_world` that generation's size; `step` is a step
  // every survivor holds a commit of (the trainer agrees on it first).
  // Returns this rank's ResumePoint at step `step`, in the form restore()
  // takes: for ddp the whole state (sent from a survivor to the joiners),
  // for zero1-3 this rank's shard of comm.size(). Throws CheckpointError
  // when redundancy is lost and no on-disk checkpoint exists.
  // When redundancy is lost (every rank under ddp; under zero1-3 an old
  // rank and its buddy), every rank falls back on --checkpoint-dir's latest
  // checkpoint at the new world size (its step may be older than `step`)
  // and new rank 0 log::warns why. InvalidArgument on every rank when the
  // ranks pass different steps or old world sizes, or a rank the plan needs
  // holds no commit of `step`. Bounded by the communicator's timeout.
  ResumePoint recover(Communicator& comm, int64_t step, const std::vector<int>& old_rank,
                      int old_world);

  // The rank and world size this rank had in the generation whose commits
  // it holds (every commit it holds is of one generation); nullopt when it
  // holds none.
  struct Place {
    int rank = -1;
    int world = 0;
  };
  std::optional<Place> committed_place() const;

  // Drops every commit (before the first commit of a new generation: the
  // old generation's are stale then).
  void clear();

  // The number of the generation whose commits this replica holds, for
  // messages ("ranks 1 and 2 of generation 3 both died"); 0 at first, and
  // one more after each recover() unless set again.
  void set_generation(int64_t generation);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::train
