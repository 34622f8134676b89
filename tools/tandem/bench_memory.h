// `tandem bench memory`: model-state bytes per rank for ddp, zero1, zero2
// and zero3 at several world sizes, measured by the strategies' memory
// accounting, beside the ZeRO paper's theory and the process's own counts
// (LibTorch's CPU allocator, counted, and the resident set).
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

void add_bench_memory(CLI::App& bench, int& exit_code);

}  // namespace tandem::tools
