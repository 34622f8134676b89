// Private to train/: the factory of the strategies in async_strategies.cpp
// (ps, easgd, gossip, local-sgd, and ddp with backup workers), for
// make_strategy(), and the checks and report lines the trainer prints for them.
#pragma once

#include <memory>
#include <string>

#include "tandem/train/strategy.h"

namespace tandem::train {

// " (3 workers + 1 server, staleness 2)": the strategy's knobs and any
// straggler injection, for the trainer's header line.
std::string strategy_details(const TrainerOptions& o, int world);

// Rank 0's strategy measurements, one line ending in a newline.
std::string strategy_summary(const TrainerOptions& o, const TrainSummary& s);

// On a training rank, for is_asynchronous(o). `comm`: every rank;
// `workers`: the training ranks.
std::unique_ptr<Strategy> make_async_strategy(const TrainerOptions& o,
                                              const std::shared_ptr<torch::nn::Module>& module,
                                              const std::shared_ptr<Communicator>& comm,
                                              const std::shared_ptr<Communicator>& workers);

}  // namespace tandem::train
