#include "tandem/memory/malloc_tuning.h"

#include <climits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem::memory {

void keep_freed_memory_for_reuse(const MallocTuning& tuning) {
#if defined(__GLIBC__)
  constexpr size_t kMaxMmapThreshold = size_t{4} * 1024 * 1024 * sizeof(long);
  TANDEM_CHECK(tuning.mmap_threshold_bytes <= kMaxMmapThreshold,
               "MallocTuning::mmap_threshold_bytes must be at most {} (glibc's cap), got {}",
               kMaxMmapThreshold, tuning.mmap_threshold_bytes);
  TANDEM_CHECK(tuning.trim_threshold_bytes <= static_cast<size_t>(INT_MAX),
               "MallocTuning::trim_threshold_bytes must be at most {}, got {}", INT_MAX,
               tuning.trim_threshold_bytes);
  TANDEM_CHECK(mallopt(M_MMAP_THRESHOLD, static_cast<int>(tuning.mmap_threshold_bytes)) == 1,
               "mallopt refused M_MMAP_THRESHOLD = {}", tuning.mmap_threshold_bytes);
  TANDEM_CHECK(mallopt(M_TRIM_THRESHOLD, static_cast<int>(tuning.trim_threshold_bytes)) == 1,
               "mallopt refused M_TRIM_THRESHOLD = {}", tuning.trim_threshold_bytes);
#else
  (void)tuning;
  throw NotSupported("keep_freed_memory_for_reuse needs glibc's malloc (mallopt)");
#endif
}

}  // namespace tandem::memory
