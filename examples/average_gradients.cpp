// Data-parallel SGD by hand on Tandem's communicator: every rank trains the
// same model on its own batches and averages gradients with one all_reduce
// per parameter. (DistributedDataParallel, with bucketing and overlap, is
// issue #3.) Run: tandem-run --nproc-per-node 2 -- build/examples/average_gradients
#include <torch/torch.h>

#include <cstdio>

#include "tandem/tandem.h"

int main() {
  auto comm = tandem::init();  // reads RANK, WORLD_SIZE, MASTER_ADDR, ... from tandem-run
  torch::manual_seed(0);       // same initial weights on every rank
  torch::nn::Sequential model(torch::nn::Linear(8, 32), torch::nn::ReLU(),
                              torch::nn::Linear(32, 1));
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.05));
  torch::manual_seed(1 + comm->rank());  // but different data per rank
  for (int step = 0; step < 50; ++step) {
    torch::Tensor x = torch::randn({16, 8}), y = x.sum(1, true);
    opt.zero_grad();
    torch::Tensor loss = torch::mse_loss(model->forward(x), y);
    loss.backward();
    for (auto& p : model->parameters()) comm->all_reduce(p.grad(), tandem::ReduceOp::kAvg);
    opt.step();
    if (comm->rank() == 0 && step % 10 == 0)
      std::printf("step %d loss %.4f\n", step, loss.item<float>());
  }
  return 0;
}
