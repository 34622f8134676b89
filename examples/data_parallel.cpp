// Data-parallel training with DistributedDataParallel: every rank trains a
// replica on its own batches; after loss.backward() each .grad holds the
// average over ranks (bucketed all-reduce, overlapped with backward), so the
// replicas stay equal. The last line checks both: the loss fell, and the
// parameters are the same on every rank (examples/check.h).
// Run: build/tools/tandem-run --nproc-per-node 2 -- build/examples/data_parallel
#include <torch/torch.h>

#include <cstdio>

#include "check.h"
#include "tandem/tandem.h"

int main() {
  auto comm = tandem::init();  // RANK, WORLD_SIZE, MASTER_ADDR, ... from tandem-run
  torch::nn::Sequential model(torch::nn::Linear(8, 32), torch::nn::ReLU(),
                              torch::nn::Linear(32, 1));
  tandem::parallel::DistributedDataParallel ddp(model.ptr(), comm);  // rank 0's weights everywhere
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  torch::manual_seed(1 + comm->rank());  // different data on every rank
  constexpr int kSteps = 50, kWindow = 10;
  double first_loss = 0, last_loss = 0;  // means over the first and the last kWindow steps
  for (int step = 0; step < kSteps; ++step) {
    torch::Tensor x = torch::randn({16, 8}), y = x.sum(1, true);
    opt.zero_grad();
    torch::Tensor loss = torch::mse_loss(model->forward(x), y);
    loss.backward();  // gradients averaged over ranks when this returns
    opt.step();
    if (step < kWindow) first_loss += loss.item<double>() / kWindow;
    if (step >= kSteps - kWindow) last_loss += loss.item<double>() / kWindow;
    if (comm->rank() == 0 && step % 10 == 0)
      std::printf("step %d loss %.4f\n", step, loss.item<float>());
  }
  return example::check(*comm, first_loss, last_loss, example::digest(model->parameters()));
}
