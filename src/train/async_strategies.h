// Private to train/: the factory of the strategies in async_strategies.cpp
// (ps, easgd, gossip, local-sgd, and ddp with backup workers), for
// make_strategy().
#pragma once

#include <memory>

#include "tandem/train/strategy.h"

namespace tandem::train {

// True when o.strategy is built by make_async_strategy.
bool is_async_strategy(const TrainerOptions& o);

// On a training rank. `comm`: every rank; `workers`: the training ranks.
std::unique_ptr<Strategy> make_async_strategy(const TrainerOptions& o,
                                              const std::shared_ptr<torch::nn::Module>& module,
                                              const std::shared_ptr<Communicator>& comm,
                                              const std::shared_ptr<Communicator>& workers);

}  // namespace tandem::train
