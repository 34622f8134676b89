// The update rules of the asynchronous strategies as plain functions on
// tensors, shared by the real strategies (ParameterServer, GossipMixer) and
// the scaling lab's virtual workers (`tandem lab converge`), so that the two
// cannot drift apart:
//   elastic_move     EASGD (Zhang et al. 2015): the move alpha (x - c) that
//                    the server adds to the center c and the worker
//                    subtracts from its parameters x.
//   push_sum_merge   push-sum gossip (Kempe et al. 2003): x <- (w x + v y) /
//                    (w + v), w <- w + v for a received (y, v).
//   GossipPeers      the random choice of the next peer, seeded per rank.
//   server_step      the parameter server's optimizer step of a pushed
//                    gradient on its shard at the worker's learning rate.
// Also the flat copies of a parameter list that their messages carry.
// Pure functions of their arguments (GossipPeers holds its generator): not
// thread-safe on shared tensors; nothing collective.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace torch::optim {
class Optimizer;
}

namespace tandem::parallel {

// Writes alpha (worker - center) into `move` (the shape of both, any
// layout). Throws InvalidArgument unless 0 < alpha <= 1.
void elastic_move(const at::Tensor& worker, const at::Tensor& center, double alpha,
                  const at::Tensor& move);

// Merges a peer's flat parameters `theirs` (the concatenation of `params`
// flattened, in order; any floating dtype) of push-sum weight `their_weight`
// into `params` of weight `weight`, in place; returns the new weight.
double push_sum_merge(const std::vector<at::Tensor>& params, double weight,
                      const at::Tensor& theirs, double their_weight);

// The peer choice of gossip: uniform over the ranks not closed, from a
// generator seeded by (seed, rank).
class GossipPeers {
 public:
  GossipPeers(uint64_t seed, int rank);
  // A rank r with closed[r] false, or -1 when every rank is closed.
  int pick(const std::vector<bool>& closed);

 private:
  std::mt19937_64 rng_;
};

// The parameters' values as one flat tensor (a copy, detached), their
// gradients the same way (zeros for a parameter without one), and a flat
// tensor copied back into the parameters, in order.
at::Tensor flat_of(const std::vector<at::Tensor>& params);
at::Tensor flat_gradients(const std::vector<at::Tensor>& params);
void copy_into(const at::Tensor& flat, const std::vector<at::Tensor>& params);

// One optimizer step of the parameter server: `shard` (the optimizer's one
// leaf tensor) gets `grad` as its gradient and `optimizer` steps at `lr`,
// set through `set_lr`.
void server_step(torch::optim::Optimizer& optimizer, const at::Tensor& shard,
                 const at::Tensor& grad, double lr,
                 const std::function<void(torch::optim::Optimizer&, double)>& set_lr);

}  // namespace tandem::parallel
