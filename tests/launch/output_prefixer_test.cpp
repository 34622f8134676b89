#include "src/launch/output_prefixer.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem::launch {
namespace {

TEST(OutputPrefixer, PrefixesWholeLines) {
  OutputPrefixer p("[rank 2] ");
  EXPECT_EQ(p.feed("a\nb\n"), "[rank 2] a\n[rank 2] b\n");
  EXPECT_EQ(p.finish(), "");
}

TEST(OutputPrefixer, KeepsPartialLinesUntilComplete) {
  OutputPrefixer p("[rank 0] ");
  EXPECT_EQ(p.feed("hel"), "");
  EXPECT_EQ(p.feed("lo\nwor"), "[rank 0] hello\n");
  EXPECT_EQ(p.feed("ld"), "");
  EXPECT_EQ(p.finish(), "[rank 0] world\n");
  EXPECT_EQ(p.finish(), "");
}

TEST(OutputPrefixer, EmptyPrefixPassesLinesThrough) {
  OutputPrefixer p("");
  EXPECT_EQ(p.feed("x\n\ny"), "x\n\n");
  EXPECT_EQ(p.finish(), "y\n");
}

TEST(OutputPrefixer, EmptyLinesArePrefixed) {
  OutputPrefixer p("[rank 1] ");
  EXPECT_EQ(p.feed("\n"), "[rank 1] \n");
}

TEST(OutputPrefixer, BoundsAnUnendedLine) {
  OutputPrefixer p("> ");
  std::string big(OutputPrefixer::kMaxPendingBytes + 1, 'z');
  EXPECT_EQ(p.feed(big), "> " + big + "\n");
  EXPECT_EQ(p.finish(), "");
}

}  // namespace
}  // namespace tandem::launch
