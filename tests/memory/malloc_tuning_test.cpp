#include "tandem/memory/malloc_tuning.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "tandem/core/error.h"

namespace tandem::memory {
namespace {

// Each ctest case runs in its own process, so the tuning stays in this test.
TEST(MallocTuning, LargeBlocksComeFromTheHeapAndStayThereWhenFreed) {
  constexpr size_t kBlock = size_t{8} << 20;  // far above glibc's default 128 KiB threshold
  keep_freed_memory_for_reuse();
  const struct mallinfo2 before = mallinfo2();
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  const struct mallinfo2 during = mallinfo2();
  EXPECT_EQ(during.hblkhd, before.hblkhd) << "the block was mmapped on its own";
  EXPECT_GE(during.arena, before.arena + kBlock);
  std::free(block);
  const struct mallinfo2 after = mallinfo2();
  EXPECT_GE(after.arena, before.arena + kBlock) << "the heap was trimmed after the free";
  EXPECT_GE(after.fordblks, kBlock);
}

TEST(MallocTuning, ValuesGlibcCannotTakeAreNamed) {
  try {
    keep_freed_memory_for_reuse({.mmap_threshold_bytes = size_t{1} << 40});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("mmap_threshold_bytes must be at most"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(keep_freed_memory_for_reuse({.trim_threshold_bytes = size_t{1} << 40}),
               InvalidArgument);
}

}  // namespace
}  // namespace tandem::memory
