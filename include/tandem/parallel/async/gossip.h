// GossipMixer: the communication of gossiping SGD (Jin et al. 2016). After
// each local step a worker mixes its parameters with one peer chosen at
// random, with push-sum weights (Kempe et al. 2003) so that the weighted
// average sum_i w_i x_i / sum_i w_i over the workers never changes:
//   push: halve w_i and send (x_i, w_i) to the peer, which merges it at its
//         next mix: x_j <- (w_j x_j + w x) / (w_j + w), w_j <- w_j + w.
//   pull: ask the peer; it halves its weight and answers (x_j, w_j) at once
//         from a service thread; the asker merges the answer the same way.
// Nobody waits for a peer's training step: each process runs one service
// thread per peer that receives everything that peer sends (pushes,
// requests, answers, goodbye) and answers requests at once.
//
// Thread-safety: mix() and finish() from one training thread. The service
// threads read the parameters while answering pull requests, so the
// training thread must hold lock_parameters() while it changes them (the
// optimizer step); mix() takes it itself. Not collective: every call is
// point-to-point with tags. finish() waits for every peer's goodbye.
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/parallel/async/update_rules.h"

namespace tandem::parallel {

enum class GossipVariant { kPush, kPull };

struct GossipOptions {
  GossipVariant variant = GossipVariant::kPush;
  // Seeds the choice of peers (folded with the rank).
  uint64_t seed = 0;
};

class GossipMixer {
 public:
  // `params`: this worker's parameters (the module's; updated in place).
  // Every rank of `comm` is a gossiping worker. Starts the service threads.
  GossipMixer(std::shared_ptr<Communicator> comm, std::vector<at::Tensor> params,
              GossipOptions options);
  // Finishes if finish() was not called (errors are logged, not thrown).
  ~GossipMixer();
  GossipMixer(const GossipMixer&) = delete;
  GossipMixer& operator=(const GossipMixer&) = delete;

  // One gossip exchange with a random peer that has not finished, then
  // merges every push received since the last call. Blocks on the pull
  // answer at most the communicator's timeout. Rethrows a service thread's
  // error (a dead peer is a PeerError naming it).
  void mix();
  // Says goodbye to every peer, answers their requests until each said
  // goodbye too, joins the service threads and merges what is left. After
  // it, the weights of all workers sum to the number of workers.
  void finish();
  // Held by the training thread while it changes the parameters.
  std::unique_lock<std::mutex> lock_parameters() { return std::unique_lock<std::mutex>(mutex_); }

  double weight() const;
  int64_t exchanges() const { return exchanges_; }
  // The peer of the last exchange (-1 before the first).
  int last_peer() const { return last_peer_; }
  // Pushes received from peers so far, merged or still waiting for mix().
  int64_t pushes_received() const;

 private:
  struct Peer;
  void serve(int peer);
  void merge(const at::Tensor& message);  // mutex_ held
  at::Tensor message(double kind, double weight);  // mutex_ held
  int pick_peer();
  void rethrow_failure();

  std::shared_ptr<Communicator> comm_;
  std::vector<at::Tensor> params_;
  const GossipOptions options_;
  const int64_t numel_;
  GossipPeers peers_;
  int64_t exchanges_ = 0;
  int last_peer_ = -1;
  bool finished_ = false;

  mutable std::mutex mutex_;
  std::condition_variable answered_;  // an answer arrived, or a failure
  double weight_ = 1.0;               // guarded by mutex_
  std::deque<at::Tensor> pending_;    // guarded by mutex_; pushes to merge
  int64_t pushes_received_ = 0;       // guarded by mutex_
  at::Tensor answer_;                 // guarded by mutex_; the pull answer
  std::vector<bool> said_bye_;        // guarded by mutex_; per peer
  int asking_ = -1;                   // guarded by mutex_; the peer asked, or -1
  std::exception_ptr failure_;        // guarded by mutex_
  std::vector<std::thread> threads_;
};

}  // namespace tandem::parallel
