// Private to train/: a worker's side of elastic membership (the protocol is
// in launch/elastic_protocol.h; tandem-run's coordinator decides). The
// worker asks to join, waits until a generation admits it, and builds that
// generation's communicator. A heartbeat thread beats in the store and
// watches it: when the coordinator ends the generation after a failure, or
// evicts this worker, or aborts the job, the thread aborts the current
// communicator, so that this rank leaves the collective it is in at once
// with an error naming the rank that failed.
// Not thread-safe, except that the heartbeat thread runs beside the caller.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/comm/rendezvous.h"
#include "tandem/core/error.h"
#include "tandem/launch/elastic_protocol.h"

namespace tandem::train {

// One generation as this worker sees it.
struct Generation {
  int64_t number = -1;
  std::vector<int> members;  // worker ids, in rank order
  int rank = -1;             // this worker's rank in it
  nlohmann::json cause;      // why it formed (gen/<g>/cause)
  std::shared_ptr<Communicator> comm;
  int world_size() const { return static_cast<int>(members.size()); }
};

// This worker was evicted (it stalled), or the job was aborted: it must
// exit, and the job goes on without it.
class LeftJobError : public Error {
 public:
  using Error::Error;
};

class ElasticMembership {
 public:
  // Connects to the job's store (info's MASTER_ADDR:MASTER_PORT, served by
  // tandem-run) and starts the heartbeat thread. Throws TimeoutError when
  // the store cannot be reached within the rendezvous timeout.
  ElasticMembership(const RendezvousInfo& info, const launch::elastic::ElasticEnv& env,
                    const InitOptions& init);
  ~ElasticMembership();
  ElasticMembership(const ElasticMembership&) = delete;
  ElasticMembership& operator=(const ElasticMembership&) = delete;

  // Asks to be admitted and blocks until a generation takes this worker;
  // builds its communicator. Throws LeftJobError on abort, TimeoutError
  // after the rendezvous timeout.
  const Generation& join();
  const Generation& current() const { return current_; }

  // Collective over the generation, at a step boundary: true when it must
  // end here (workers wait to join). One small all_reduce.
  bool should_reform();

  // Leaves the current generation (its communicator failed, or
  // should_reform() said so), recording `committed_step`, and blocks until
  // the next generation that admits this worker; builds its communicator.
  // Throws LeftJobError when this worker was evicted or left out, or the job
  // aborted; TimeoutError after the rendezvous timeout.
  const Generation& reform(int64_t committed_step);

  // Why the coordinator ended the current generation, once it has.
  std::optional<std::string> end_message() const;
  // True once the coordinator has ended the current generation, asking the
  // store now (one round trip) rather than waiting for the heartbeat
  // thread's next look; false while the store cannot answer.
  bool generation_ended();
  // When this worker's heartbeat thread saw the generation end (the first
  // sign of the failure here), as steady_clock time; nullopt before.
  std::optional<std::chrono::steady_clock::time_point> end_seen_at() const;

  // Rank 0 of the last generation: training ended; the launchers stop.
  void complete();
  // No worker may join from now on; the coordinator evicts joiners with `why`.
  void close_joins(const std::string& why);

  int worker_id() const { return env_.worker_id; }
  const launch::elastic::ElasticEnv& env() const { return env_; }
  // Generation 0's size (the global batch is batch_size times it).
  int first_world_size();

 private:
  class Heartbeat;
  const Generation& enter(int64_t from_generation, std::vector<int> previous,
                          int64_t committed_step);
  std::shared_ptr<Communicator> build_comm(const Generation& g);

  RendezvousInfo info_;
  launch::elastic::ElasticEnv env_;
  InitTimeouts timeouts_;
  Backend backend_;
  std::shared_ptr<Store> store_;  // the job's store, under kElasticPrefix
  Generation current_;
  std::unique_ptr<Heartbeat> heartbeat_;
};

}  // namespace tandem::train
