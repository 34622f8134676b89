// `tandem bench memory`: model-state bytes per rank for ddp, zero1, zero2
// and zero3 at several world sizes, measured by the strategies' memory
// accounting, beside the ZeRO paper's theory and the process's own counts
// (LibTorch's CPU allocator, counted, and the resident set). Each rank arms
// an ActivationTracker, so the accounting's peak (model state plus live
// activations) can be held against the allocator's. With
// --tracker-overhead-rounds it also times the tracker's cost.
#pragma once

namespace CLI {
class App;
}

namespace tandem::tools {

void add_bench_memory(CLI::App& bench, int& exit_code);

}  // namespace tandem::tools
