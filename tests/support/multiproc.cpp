#include "tests/support/multiproc.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/launch/launcher.h"

namespace tandem::testing {

int free_port() { return launch::pick_free_port("127.0.0.1"); }

std::string tail(const std::string& text, int lines) { return launch::tail_lines(text, lines); }

std::vector<RankResult> run_ranks(int world_size, const std::function<void(int, int, int)>& body,
                                  const MultiprocOptions& options) {
  const int port = free_port();
  // The harness keeps all of a rank's output: tests read it.
  launch::ChildOptions keep_all;
  keep_all.keep_output_bytes = size_t{64} << 20;
  launch::ChildProcesses ranks(keep_all);
  for (int r = 0; r < world_size; ++r) {
    ranks.start_function(r, [&, r] {
      for (const auto& kv : options.env) putenv(strdup(kv.c_str()));
      body(r, world_size, port);
      return ::testing::Test::HasFailure() ? 1 : 0;
    });
  }
  return ranks.wait(Clock::now() + options.timeout);
}

void expect_ranks_succeed(int world_size, const std::function<void(int, int, int)>& body,
                          const MultiprocOptions& options) {
  for (const auto& r : run_ranks(world_size, body, options)) {
    EXPECT_TRUE(r.ok()) << "rank " << r.rank << " failed (" << r.how() << "); its output ends:\n"
                        << tail(r.output);
  }
}

}  // namespace tandem::testing
