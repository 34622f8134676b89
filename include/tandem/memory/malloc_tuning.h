// Process-wide tuning of glibc's malloc for training loops. LibTorch's CPU
// allocator has no cache: every tensor is a malloc and every free a free.
// glibc serves blocks above its mmap threshold (128 KiB at first) with fresh
// mmaps and returns the top of the heap to the kernel past its trim
// threshold, so each training step page-faults its activations and
// gradients in again (docs/training.md gives the measured cost).
// keep_freed_memory_for_reuse() raises both thresholds so freed blocks stay
// in the heap for the next step, as a caching allocator would. The price is
// that the process keeps its peak heap resident until it exits.
//
// Not thread-safe with concurrent allocation: call it once at start-up,
// before other threads run. Not collective.
#pragma once

#include <cstddef>

namespace tandem::memory {

struct MallocTuning {
  // Blocks at most this large come from the heap, not from their own mmap
  // (glibc caps it at 32 MiB on 64-bit systems).
  size_t mmap_threshold_bytes = size_t{32} << 20;
  // Free memory at the top of the heap returned to the kernel only beyond this.
  size_t trim_threshold_bytes = size_t{1} << 30;
};

// Applies `tuning` with mallopt. Throws tandem::InvalidArgument for a value
// glibc does not accept (naming it), or NotSupported where the C library is
// not glibc. `tandem train` and `tandem bench` call it with the defaults;
// programs of your own can too.
void keep_freed_memory_for_reuse(const MallocTuning& tuning = {});

}  // namespace tandem::memory
