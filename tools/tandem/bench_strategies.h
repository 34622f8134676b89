// `tandem bench strategies`: the synchronous and asynchronous strategies
// (ddp, ddp with backup workers, ps, easgd, gossip push and pull, local-sgd) train the same
// model on the same data, each without and with an injected straggler; for
// each run, the time and the number of samples (over all workers) until
// rank 0's loss, smoothed over 10 steps, reaches a target. Writes one JSON
// line per run and a CSV, and prints a table.
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

void add_bench_strategies(CLI::App& bench, int& exit_code);

}  // namespace tandem::tools
