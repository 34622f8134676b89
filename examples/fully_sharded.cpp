// Fully sharded data parallelism (ZeRO-3) with FullyShardedDataParallel:
// each rank keeps 1/N of the parameters, gradients and optimizer state; a
// unit's parameters are gathered just before its forward and backward and
// freed after. Here each Linear is a unit; the optimizer steps the shards.
// The last line checks that the loss fell and that the gathered full
// parameters are the same on every rank (examples/check.h).
// Run: build/tools/tandem-run --nproc-per-node 2 -- build/examples/fully_sharded
#include <torch/torch.h>

#include <cstdio>

#include "check.h"
#include "tandem/tandem.h"

int main() {
  auto comm = tandem::init();  // RANK, WORLD_SIZE, MASTER_ADDR, ... from tandem-run
  torch::nn::Sequential model(torch::nn::Linear(8, 64), torch::nn::ReLU(),
                              torch::nn::Linear(64, 64), torch::nn::ReLU(),
                              torch::nn::Linear(64, 1));
  tandem::parallel::FsdpOptions options;
  options.wrap.module_types = {"LinearImpl"};  // one unit per Linear
  tandem::parallel::FullyShardedDataParallel fsdp(model.ptr(), comm, options);
  // The optimizer sees the flat shards, not model->parameters().
  torch::optim::AdamW opt(fsdp.parameters(), torch::optim::AdamWOptions(1e-2));
  fsdp.account_optimizer(&opt);
  torch::manual_seed(1 + comm->rank());  // different data on every rank
  constexpr int kSteps = 50, kWindow = 10;
  double first_loss = 0, last_loss = 0;  // means over the first and the last kWindow steps
  for (int step = 0; step < kSteps; ++step) {
    torch::Tensor x = torch::randn({16, 8}), y = x.sum(1, true);
    opt.zero_grad();
    torch::Tensor loss = torch::mse_loss(model->forward(x), y);
    loss.backward();  // shard gradients averaged over ranks when this returns
    fsdp.clip_grad_norm(1.0);
    opt.step();
    if (step < kWindow) first_loss += loss.item<double>() / kWindow;
    if (step >= kSteps - kWindow) last_loss += loss.item<double>() / kWindow;
    if (comm->rank() == 0 && step % 10 == 0)
      std::printf("step %d loss %.4f\n", step, loss.item<float>());
  }
  const auto& peak = fsdp.memory().peak();
  std::printf(
      "rank %d: peak model state %lld bytes (parameters %lld, gradients %lld, AdamW %lld)\n",
      comm->rank(), static_cast<long long>(fsdp.memory().peak_total()),
      static_cast<long long>(peak.parameters), static_cast<long long>(peak.gradients),
      static_cast<long long>(peak.optimizer_state));
  auto full = fsdp.full_state_dict();  // collective: every rank gets whole tensors
  if (comm->rank() == 0) std::printf("%zu full parameters gathered\n", full.size());
  std::vector<torch::Tensor> whole;
  for (const auto& item : full) whole.push_back(item.value());
  return example::check(*comm, first_loss, last_loss, example::digest(whole));
}
