// The store keys of elastic membership, shared by the coordinator (in the
// launcher on node 0, elastic_coordinator.h), the launchers of the other
// nodes and the workers (train/elastic_membership.h). Every key lives under
// kElasticPrefix of the job's store, which tandem-run serves.
//
// A generation is one fixed member set with its own communicator. The
// coordinator decides each generation; workers only report:
//   join/count, join/<k>        a worker asks to be admitted: k = add(count),
//                               then join/<k> = "<worker id>"
//   hb/<id>                     the worker's heartbeat counter (add 1 per beat)
//   exit/count, exit/<k>        a launcher saw a worker process end:
//                               "<worker id>\t<how>" (e.g. "signal SIGKILL")
//   gen/decided                 generations decided so far; generation g
//                               exists once decided > g
//   gen/<g>/members             "id,id,...": worker ids in rank order
//   gen/<g>/cause               JSON: {"cause": "start"|"failure"|"join",
//                               "worker", "rank", "how", "detect_s"}
//   gen/<g>/end                 JSON: {"reason": "failure"|"join", "message"}:
//                               generation g must end (a member failed, or
//                               workers wait to join)
//   gen/<g>/left/<id>           "<committed step>": the worker left g
//   evicted/<id>                why the coordinator evicted the worker
//   abort                       the job cannot go on (quorum lost past the
//                               rendezvous timeout): every worker exits
//   complete                    "1": training ended; rank 0 of the last
//                               generation sets it
//   joins_closed                why no worker may join any more (rank 0 of
//                               an asynchronous run sets it); the
//                               coordinator evicts later joiners with it
//   next_id                     counter for the ids of replacement workers
// Worker ids: the initial workers' are their initial ranks
// (node_rank * nproc_per_node + local_rank); a replacement gets
// initial_world_size + add(next_id, 1) - 1.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "tandem/comm/store.h"
#include "tandem/core/env.h"

namespace tandem::launch::elastic {

inline constexpr const char* kElasticPrefix = "elastic";

// Defaults: a beat every 250 ms; a member silent for 3 s is stalled, so a
// stalled worker on one host is evicted within about 3.5 s.
inline constexpr std::chrono::milliseconds kDefaultHeartbeatInterval{250};
inline constexpr std::chrono::milliseconds kDefaultHeartbeatTimeout{3000};

// Environment tandem-run gives each worker of an elastic job.
//   TANDEM_ELASTIC=MIN:MAX        elastic mode, and the quorum bounds
//   TANDEM_WORKER_ID=<id>         see above
//   TANDEM_ELASTIC_JOIN=1         a replacement: join the running job
//   TANDEM_HEARTBEAT_TIMEOUT=<s>  the coordinator's stall timeout
//   TANDEM_STORE_SERVED=1         (every tandem-run job) the launcher serves
//                                 the store: rank 0 only connects to it
struct ElasticEnv {
  bool enabled = false;
  int min_workers = 1;
  int max_workers = 1;
  int worker_id = 0;
  bool joining = false;
  std::chrono::milliseconds heartbeat_timeout = kDefaultHeartbeatTimeout;
};

// Key names (without kElasticPrefix).
std::string join_key(int64_t k);
std::string heartbeat_key(int worker_id);
std::string exit_key(int64_t k);
std::string members_key(int64_t generation);
std::string cause_key(int64_t generation);
std::string end_key(int64_t generation);
std::string left_key(int64_t generation, int worker_id);
std::string evicted_key(int worker_id);
inline constexpr const char* kJoinsClosedKey = "joins_closed";

// "3,0,5" <-> {3, 0, 5}. parse_members throws InvalidArgument on text that
// is not such a list (a corrupt or hostile store value).
std::string format_members(const std::vector<int>& ids);
std::vector<int> parse_members(const std::string& text);

// Records that worker `worker_id`'s process ended (`how`: "exit code 1",
// "signal SIGKILL"); every launcher calls it, the coordinator reads it.
// `store` is the job's store (unprefixed).
void record_exit(Store& store, int worker_id, const std::string& how);

// A fresh id for a replacement worker; ids below `first_free` belong to the
// initial workers (tandem-run passes max nodes * nproc_per_node).
int new_worker_id(Store& store, int first_free);

// Reads the variables above; enabled is false without TANDEM_ELASTIC.
// Throws InvalidArgument naming a malformed variable.
ElasticEnv read_elastic_env(const env::Lookup& lookup = env::process_lookup());

}  // namespace tandem::launch::elastic
