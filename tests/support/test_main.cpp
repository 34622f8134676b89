// The GoogleTest main of every test binary: one intra-op thread, so that
// forked ranks do not oversubscribe the cores.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  at::set_num_threads(1);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
