#include "tandem/core/env.h"

#include <gtest/gtest.h>

#include <map>

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

}  // namespace
}  // namespace tandem
