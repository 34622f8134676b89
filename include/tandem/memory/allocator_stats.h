// What the process really allocates, to check the memory accounting
// against: a counting CPU allocator for LibTorch (every CPU tensor's bytes,
// now and at peak) and the resident set size the kernel reports.
//
// The allocator is process-wide by nature (LibTorch has one CPU allocator);
// install it once, before the tensors to be counted exist: tensors allocated
// earlier are freed through their own deleter and never counted. Thread-safe;
// nothing here is collective.
#pragma once

#include <cstdint>

namespace tandem::memory {

struct AllocatorStats {
  bool installed = false;
  int64_t current_bytes = 0;  // CPU tensor bytes alive now
  int64_t peak_bytes = 0;     // most alive at once since install or reset_peak
  int64_t allocations = 0;    // allocations since install
};

// Makes LibTorch's CPU allocations go through a counter (same memory, same
// 64-byte alignment as LibTorch's default allocator). Idempotent.
void install_counting_cpu_allocator();
AllocatorStats cpu_allocator_stats();
// Sets the peak to the current figure.
void reset_cpu_allocator_peak();

// The resident set now and its high-water mark, from /proc/self/status
// (VmRSS, VmHWM); 0 where unavailable.
int64_t resident_bytes();
int64_t peak_resident_bytes();
// Resets the kernel's high-water mark to the current RSS (writes "5" to
// /proc/self/clear_refs); false where the kernel refuses.
bool reset_peak_resident();

}  // namespace tandem::memory
