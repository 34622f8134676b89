// The benches' checked flag parser (bench/flag_values.h): the whole text is
// the value or the error names the flag and the text.
#include "bench/flag_values.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem::bench {
namespace {

enum class Color { kRed, kGreen };
constexpr Choice<Color> kColors[] = {{"red", Color::kRed}, {"green", Color::kGreen}};

// The message of the InvalidArgument that `f` throws, or "" if none.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(FlagValues, IntegersAreWholeDecimalTexts) {
  EXPECT_EQ(parse_int("--n", "42"), 42);
  EXPECT_EQ(parse_int("--n", "-7"), -7);
  EXPECT_EQ(parse_int("--n", "010"), 10) << "decimal, not octal";
  for (const char* bad : {"", "2x", "x2", " 2", "2 ", "+2", "0x10", "1e3", "2.0", "2,4"}) {
    EXPECT_EQ(error_of([&] { parse_int("bench x: --n", bad); }),
              std::string("bench x: --n takes whole numbers (got '") + bad + "')");
  }
}

TEST(FlagValues, IntegersOutsideTheirRangeAreNamed) {
  EXPECT_EQ(parse_int("--n", "5", 0, 5), 5);
  EXPECT_EQ(error_of([] { parse_int("--n", "6", 0, 5); }),
            "--n 6 is out of range (it must lie in [0, 5])");
  EXPECT_NE(error_of([] { parse_int("--n", "99999999999999999999"); }).find("is out of range"),
            std::string::npos);
}

TEST(FlagValues, DoublesAreFiniteNumbers) {
  EXPECT_DOUBLE_EQ(parse_double("--x", "0.25"), 0.25);
  EXPECT_DOUBLE_EQ(parse_double("--x", "1e-3"), 1e-3);
  EXPECT_DOUBLE_EQ(parse_double("--x", "-2"), -2.0);
  for (const char* bad : {"", "0.1x", "inf", "nan", "1e999", " 1", "0x1p3", "1,5"}) {
    EXPECT_EQ(error_of([&] { parse_double("--x", bad); }),
              std::string("--x takes a finite number (got '") + bad + "')");
  }
}

TEST(FlagValues, ChoicesAreNamesOfTheirSet) {
  EXPECT_EQ(parse_choice<Color>("--c", "green", kColors), Color::kGreen);
  EXPECT_EQ(choice_name<Color>(Color::kRed, kColors), "red");
  EXPECT_EQ(error_of([] { parse_choice<Color>("bench x: --c", "Red", kColors); }),
            "bench x: --c Red is not one of red, green");
}

}  // namespace
}  // namespace tandem::bench
