#include "tandem/core/check.h"

#include <gtest/gtest.h>

#include <regex>
#include <string>

namespace tandem {
namespace {

std::string invalid_argument_text(int got) {
  try {
    TANDEM_CHECK(got > 0, "--threads must be at least 1 (got {})", got);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no InvalidArgument";
}

// Issue 14: user errors ended with "[trainer.cpp:37]", a location that means
// nothing to the user. The message is the user's; only bugs carry file:line.
TEST(Check, InvalidArgumentCarriesNoSourceLocation) {
  const std::string msg = invalid_argument_text(0);
  EXPECT_EQ(msg, "--threads must be at least 1 (got 0)");
  EXPECT_FALSE(std::regex_search(msg, std::regex(R"(\.(cpp|h):\d+)"))) << msg;
}

TEST(Check, PassingCheckThrowsNothing) {
  EXPECT_EQ(invalid_argument_text(4), "no InvalidArgument");
}

TEST(Check, InternalErrorKeepsFileAndLine) {
  try {
    TANDEM_ASSERT(1 + 1 == 3, "arithmetic is off by {}", 1);
    FAIL() << "TANDEM_ASSERT did not throw";
  } catch (const InternalError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("internal error: arithmetic is off by 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1 + 1 == 3 failed at check_test.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("please report this"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace tandem
