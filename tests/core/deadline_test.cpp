#include "tandem/core/deadline.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem {
namespace {

TEST(Deadline, RejectsNonPositiveTimeout) {
  EXPECT_THROW(Deadline(Millis(0)), InvalidArgument);
  try {
    Deadline(Millis(-5), "CommOptions::timeout");
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("CommOptions::timeout must be positive (got -5 ms)"),
              std::string::npos)
        << e.what();
  }
}

TEST(Deadline, ExpiresAfterTimeout) {
  Deadline d(Millis(30));
  EXPECT_FALSE(d.expired());
  Backoff b;
  while (!d.expired()) b.pause();
  EXPECT_GE(d.elapsed().count(), 30);
  EXPECT_EQ(d.remaining().count(), 0);
}

TEST(FormatDuration, ReadsLikeAPerson) {
  EXPECT_EQ(format_duration(Millis(250)), "250 ms");
  EXPECT_EQ(format_duration(Millis(12'345)), "12.3 s");
}

}  // namespace
}  // namespace tandem
