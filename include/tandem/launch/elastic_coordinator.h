// The coordinator of an elastic job: decides every generation's members
// (elastic_protocol.h has the keys). tandem-run runs it on node 0, beside
// the store it serves, so that it outlives any worker.
//
// Each poll() it reads the workers' heartbeats, the launchers' exit records
// and the join requests, and:
//   - at the start, forms generation 0 once max_workers have asked to join,
//     or min_workers have and no other asked within `settle`;
//   - when a member of the running generation died (an exit record) or
//     stalled (no heartbeat for heartbeat_timeout; it is also evicted), ends
//     the generation with reason "failure" and a message naming the rank;
//   - when workers wait to join and the generation has room, ends it with
//     reason "join" (the members leave at their next step boundary);
//   - once every live member of the ended generation has left it, forms the
//     next one from them and the waiting joiners (at most max_workers), if
//     they are at least min_workers; below that it waits for joiners, and
//     after rendezvous_timeout sets `abort`.
// Not thread-safe: one thread polls. Every store call is bounded.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tandem/comm/store.h"
#include "tandem/launch/elastic_protocol.h"

namespace tandem::launch::elastic {

struct CoordinatorOptions {
  int min_workers = 1;
  int max_workers = 1;
  std::chrono::milliseconds heartbeat_timeout = kDefaultHeartbeatTimeout;
  // How long to wait for the quorum before giving up (abort).
  std::chrono::milliseconds rendezvous_timeout{120'000};
  // At the start, with min_workers but fewer than max_workers joined: how
  // long no new join must arrive before generation 0 forms.
  std::chrono::milliseconds settle{2'000};
};

class Coordinator {
 public:
  // `store` is the job's store (unprefixed); `say` gets the coordinator's
  // lines ("tandem-run: generation 1: ..."), without a newline.
  Coordinator(std::shared_ptr<Store> store, const CoordinatorOptions& options,
              std::function<void(const std::string&)> say);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // One round of the protocol; a few store round trips per member. Throws
  // PeerError when the store fails.
  void poll();

  // True once `complete` or `abort` is set; abort_reason() says which.
  bool finished() const;
  std::optional<std::string> abort_reason() const;
  // Generations decided so far.
  int64_t generations() const;
  // True while a generation is being formed (at the start, or after one
  // ended): the survivors wait on the coordinator, so the launcher should
  // poll it often then.
  bool forming() const;
  // Worker ids the coordinator evicted (stalled); the launcher stops them
  // once the job is over.
  std::vector<int> evicted() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tandem::launch::elastic
