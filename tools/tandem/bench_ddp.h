// `tandem bench ddp`: training throughput of one process against N ranks
// under DistributedDataParallel (one intra-op thread each, shared memory),
// measured in one invocation; prints one JSON line with both samples/s, the
// scaling efficiency (N-rank samples/s over N x one process's) and the
// exposed communication time per step (the wait after backward).
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

void add_bench_ddp(CLI::App& bench, int& exit_code);

}  // namespace tandem::tools
