// What the parallel strategies' tests share (DESIGN.md, "Correctness rule"):
// small float64 workloads whose every rank's batches any process can
// compute, the single-process computation N ranks replace (one process, all
// ranks' micro-batches of a step in one batch), the optimizers the strategies
// are checked with, a parameter comparison, and communicators over each
// backend for forked ranks (tests/support/multiproc.h) or MPI ranks.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/ordered_dict.h>

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tandem/comm/communicator.h"
#include "tandem/train/models/gpt_mini.h"

namespace torch::optim {
class Optimizer;
}

namespace tandem::testing {

// A model and its data: rank r's micro-batch m of step s, and the mean loss
// of a model on a batch (so the loss of all ranks' batches concatenated is
// the average of theirs: equal batch sizes).
struct Workload {
  std::function<std::shared_ptr<torch::nn::Module>()> make;
  std::function<std::pair<at::Tensor, at::Tensor>(int rank, int step, int micro)> batch;
  std::function<at::Tensor(torch::nn::Module&, const at::Tensor& x, const at::Tensor& y)> loss;
};

// A 6-hidden-hidden-out MLP with Tanh in float64, seeded; batches of 4
// (inputs 6, targets out), mean squared error. hidden 12, out 3: buckets of
// one layer's tensors fit DDP's and ZeRO's small caps in their tests.
Workload mlp_workload(int64_t hidden = 12, int64_t out = 3);

// A GPT-mini with `options` in `dtype`; batches of 2 x 8 tokens, cross
// entropy over the vocabulary.
Workload gpt_workload(const train::GptMiniOptions& options, at::ScalarType dtype);
// vocab 61, context 16, 2 blocks of width 32 with 2 heads, no dropout.
train::GptMiniOptions small_gpt();

// Two heads of which forward uses one: the other's parameters get no
// gradient (float64, seeded).
struct TwoHeads : torch::nn::Module {
  TwoHeads();
  at::Tensor forward(const at::Tensor& x) { return used->forward(x); }
  torch::nn::Linear used{nullptr};
  torch::nn::Linear unused{nullptr};
};
// mlp_workload()'s batches and loss, on TwoHeads.
Workload two_heads_workload();
// A gtest failure unless `backward` throws an error that names TwoHeads'
// unused parameters and the option that lets them be.
void expect_unused_head_named(const std::function<void()>& backward);

// Rank `rank`'s share of step `step`'s loss: its micro-batch `micro` of
// `micros`, scaled by 1 / micros so that the micro-batches sum to its mean.
at::Tensor rank_loss(const Workload& w, torch::nn::Module& m, int rank, int step, int micro = 0,
                     int micros = 1);

// What N = `world` ranks of `micros` micro-batches each replace: the loss
// of one process on every rank's micro-batches of step `step` in one batch.
at::Tensor one_process_loss(const Workload& w, torch::nn::Module& m, int world, int step,
                            int micros = 1);

// The optimizers the strategies are checked with, each with weight decay
// where LibTorch has it (so that it is sharded too).
enum class Opt { kSgd, kSgdNesterov, kAdam, kAdamW, kAdagrad, kRmsprop };
std::string opt_name(Opt opt);
void PrintTo(Opt opt, std::ostream* os);  // gtest prints parameters with it
std::unique_ptr<torch::optim::Optimizer> make_optimizer(Opt opt, std::vector<at::Tensor> params);

// `steps` steps of `opt` on one_process_loss, from a fresh w.make().
std::shared_ptr<torch::nn::Module> train_one_process(const Workload& w, Opt opt, int world,
                                                     int steps, int micros = 1);

// Parameters by name (detached, as they are).
torch::OrderedDict<std::string, at::Tensor> parameters_of(torch::nn::Module& m);

// A gtest failure for each parameter of `got` not within rtol/atol of the
// same-named one in `want` (or missing), naming it and the largest difference.
void expect_same_parameters(const torch::OrderedDict<std::string, at::Tensor>& got,
                            const torch::OrderedDict<std::string, at::Tensor>& want, double rtol,
                            double atol, const std::string& what = "");
void expect_same_parameters(torch::nn::Module& got, torch::nn::Module& want, double rtol,
                            double atol, const std::string& what = "");

// A gtest failure unless `t` is bitwise the same on every rank of `comm`.
void expect_same_on_every_rank(Communicator& comm, const at::Tensor& t, const std::string& what);

// `steps` steps of `opt` under each strategy on this rank's batches (its
// share of one_process_loss), from a fresh w.make(); the final parameters
// by name (FSDP: its full_state_dict). Each checks, with gtest, that the
// strategy communicated during backward. Collective over `comm`.
torch::OrderedDict<std::string, at::Tensor> train_with_ddp(const Workload& w, Opt opt,
                                                           const std::shared_ptr<Communicator>& comm,
                                                           int steps);
torch::OrderedDict<std::string, at::Tensor> train_with_zero(
    const Workload& w, Opt opt, const std::shared_ptr<Communicator>& comm, int steps, int stage);
torch::OrderedDict<std::string, at::Tensor> train_with_fsdp(
    const Workload& w, Opt opt, const std::shared_ptr<Communicator>& comm, int steps);

enum class Backend {
  kShm,           // shared memory
  kGloo,          // Gloo over loopback TCP
  kHierarchical,  // two "hosts" of size / 2 ranks: shared memory inside, Gloo across
};
std::string backend_name(Backend backend);
void PrintTo(Backend backend, std::ostream* os);

// A communicator of forked rank `rank` of `size` over `backend`, meeting
// through a loopback TCP store (rank 0 serves it on `port`); `name` keeps
// tests' groups and segments apart. kHierarchical needs an even size.
std::shared_ptr<Communicator> connect(Backend backend, int rank, int size, int port,
                                      const std::string& name, Millis timeout = Millis(30'000));

}  // namespace tandem::testing
