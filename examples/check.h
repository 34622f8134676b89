// The self-check each example ends with, so that a run which learned can be
// told from one that merely exited 0: the loss fell (averaged over the ranks)
// and a digest of the parameters is the same on every rank. Rank 0 prints
//   example check: loss 1.234 -> 0.056 (fell), parameters equal on 2 ranks: PASS
// (or FAIL), which examples/CMakeLists.txt matches. Collective.
#pragma once

#include <torch/torch.h>

#include <cstdio>
#include <vector>

#include "tandem/tandem.h"

namespace example {

// The values of `tensors` weighted by their position, summed in float64:
// equal digests mean equal parameters, to any practical certainty.
inline double digest(const std::vector<torch::Tensor>& tensors) {
  double sum = 0;
  for (const auto& t : tensors) {
    auto flat = t.detach().to(torch::kDouble).flatten();
    sum += (flat * torch::arange(1, flat.numel() + 1, torch::kDouble)).sum().item<double>();
  }
  return sum;
}

// Checks that the ranks' mean loss fell to below half its start, and that
// every rank's `digest` equals rank 0's. Returns the exit code: 0 on PASS.
inline int check(tandem::Communicator& comm, double first_loss, double last_loss, double digest) {
  auto losses = torch::tensor({first_loss, last_loss}, torch::kDouble);
  comm.all_reduce(losses, tandem::ReduceOp::kAvg);
  auto all = torch::empty({comm.size()}, torch::kDouble);
  comm.all_gather(all, torch::tensor({digest}, torch::kDouble));
  const double first = losses[0].item<double>(), last = losses[1].item<double>();
  const bool fell = last < 0.5 * first;
  const bool equal = (all == all[0]).all().item<bool>();
  if (comm.rank() == 0) {
    std::printf("example check: loss %.4f -> %.4f (%s), parameters %s on %d ranks: %s\n", first,
                last, fell ? "fell" : "did not fall", equal ? "equal" : "differ", comm.size(),
                fell && equal ? "PASS" : "FAIL");
    std::fflush(stdout);
  }
  return fell && equal ? 0 : 1;
}

}  // namespace example
