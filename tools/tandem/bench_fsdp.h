// `tandem bench fsdp`: training throughput and model-state memory of N ranks
// under DistributedDataParallel and under FullyShardedDataParallel (one
// intra-op thread each, shared memory, AdamW), measured in one invocation in
// alternating rounds because the machine is shared; prints one JSON line with
// both samples/s, their ratio, each strategy's peak model state per rank and
// the load average.
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

void add_bench_fsdp(CLI::App& bench, int& exit_code);

}  // namespace tandem::tools
