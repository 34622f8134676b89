#include "tandem/core/env.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>

#include "tandem/core/error.h"
#include "tests/support/fake_env.h"

namespace tandem {
namespace {

using testing::fake_env;

env::Lookup fake(std::map<std::string, std::string> vars) { return fake_env(std::move(vars)); }

TEST(Env, ParsesIntegers) {
  auto l = fake({{"A", "42"}, {"B", ""}});
  EXPECT_EQ(env::get_int(l, "A"), 42);
  EXPECT_EQ(env::get_int(l, "B"), std::nullopt);
  EXPECT_EQ(env::get_int(l, "C"), std::nullopt);
}

TEST(Env, MalformedIntegerNamesTheVariable) {
  auto l = fake({{"WORLD_SIZE", "4x"}, {"RANK", "-1"}});
  try {
    env::get_int(l, "WORLD_SIZE");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("WORLD_SIZE='4x' is not a whole number"),
              std::string::npos);
  }
  EXPECT_THROW(env::get_int(l, "RANK", 0), InvalidArgument);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no InvalidArgument";
}

// Issue 14: every integer variable is checked whole, trailing junk and
// overflow included, and the message names the variable and its value.
TEST(Env, OverflowAndJunkNameTheVariableAndValue) {
  auto l = fake({{"BIG", "99999999999999999999"}, {"JUNK", "12 "}, {"NEG", "-3"}});
  EXPECT_EQ(error_of([&] { env::get_int(l, "BIG"); }),
            "environment variable BIG=99999999999999999999 is out of range "
            "[-9223372036854775808, 9223372036854775807]");
  EXPECT_EQ(error_of([&] { env::get_int(l, "JUNK"); }),
            "environment variable JUNK='12 ' is not a whole number");
  EXPECT_EQ(error_of([&] { env::get_int(l, "NEG", 0, 10); }),
            "environment variable NEG=-3 is out of range [0, 10]");
}

TEST(Env, ParsesSecondsWithDecimals) {
  auto l = fake({{"A", "90"}, {"B", "2.5"}, {"C", "0.0001"}, {"D", "1e3"}});
  EXPECT_EQ(env::get_seconds(l, "A"), std::chrono::milliseconds(90'000));
  EXPECT_EQ(env::get_seconds(l, "B"), std::chrono::milliseconds(2'500));
  EXPECT_EQ(env::get_seconds(l, "C"), std::chrono::milliseconds(1));  // rounded up, never 0
  EXPECT_EQ(env::get_seconds(l, "D"), std::chrono::milliseconds(1'000'000));
  EXPECT_EQ(env::get_seconds(l, "UNSET"), std::nullopt);
}

TEST(Env, BadSecondsNameTheVariable) {
  for (const char* bad : {"abc", "5s", " 5", "inf", "nan", ""}) {
    auto l = fake({{"TANDEM_COMM_TIMEOUT", bad}});
    if (std::string(bad).empty()) {
      EXPECT_EQ(env::get_seconds(l, "TANDEM_COMM_TIMEOUT"), std::nullopt);  // empty is unset
      continue;
    }
    EXPECT_NE(error_of([&] {
                env::get_seconds(l, "TANDEM_COMM_TIMEOUT");
              }).find(fmt::format("TANDEM_COMM_TIMEOUT='{}' is not a number of seconds", bad)),
              std::string::npos)
        << bad;
  }
  for (const char* bad : {"0", "-1", "-0.5", "2e9"}) {
    auto l = fake({{"TANDEM_RDZV_TIMEOUT", bad}});
    EXPECT_NE(
        error_of([&] {
          env::get_seconds(l, "TANDEM_RDZV_TIMEOUT");
        }).find(fmt::format("TANDEM_RDZV_TIMEOUT={} must be a positive number of seconds", bad)),
        std::string::npos)
        << bad;
  }
}

}  // namespace
}  // namespace tandem
