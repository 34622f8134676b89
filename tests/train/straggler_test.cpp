// Straggler injection: the flag texts parse to what they say and print back,
// bad texts are named, and only the chosen ranks are slowed.
#include "tandem/train/straggler.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"

namespace tandem::train {
namespace {

TEST(Straggler, ParsesDelay) {
  const InjectDelay d = parse_inject_delay("ranks=1,ms=200,prob=0.2");
  EXPECT_EQ(d.ranks, std::vector<int>{1});
  EXPECT_EQ(d.delay, std::chrono::milliseconds(200));
  EXPECT_DOUBLE_EQ(d.probability, 0.2);
  EXPECT_EQ(parse_inject_delay("ranks=1,2,ms=5").ranks, (std::vector<int>{1, 2}));
  EXPECT_EQ(parse_inject_delay("ranks=0:3,ms=5").ranks, (std::vector<int>{0, 3}));
  EXPECT_DOUBLE_EQ(parse_inject_delay("ranks=0,ms=5").probability, 1.0);
  EXPECT_TRUE(parse_inject_delay("").ranks.empty());
}

TEST(Straggler, ParsesSlowdown) {
  const InjectSlowdown s = parse_inject_slowdown("ranks=1,factor=2.5");
  EXPECT_EQ(s.ranks, std::vector<int>{1});
  EXPECT_DOUBLE_EQ(s.factor, 2.5);
}

// describe() writes the text the parser reads back (the header line and the
// config table print it).
TEST(Straggler, DescribesWhatItParsed) {
  EXPECT_EQ(describe(parse_inject_delay("ranks=1,ms=200,prob=0.2")), "ranks=1,ms=200,prob=0.2");
  EXPECT_EQ(describe(parse_inject_delay("ranks=0:3,ms=5")), "ranks=0,3,ms=5");
  EXPECT_EQ(describe(parse_inject_delay("")), "");
  EXPECT_EQ(describe(parse_inject_slowdown("ranks=1,factor=2.5")), "ranks=1,factor=2.5");
  for (const std::string text : {"ranks=2,ms=7,prob=0.5", "ranks=1,2,ms=0"}) {
    const InjectDelay d = parse_inject_delay(describe(parse_inject_delay(text)));
    EXPECT_EQ(describe(d), describe(parse_inject_delay(text))) << text;
  }
}

void expect_rejected(const std::string& text, const std::string& words, bool delay = true) {
  try {
    if (delay) {
      parse_inject_delay(text);
    } else {
      parse_inject_slowdown(text);
    }
    FAIL() << "accepted '" << text << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

TEST(Straggler, NamesBadInput) {
  expect_rejected("ms=200", "give ranks=");
  expect_rejected("ranks=1", "give ms=");
  expect_rejected("ranks=1,ms=200,prob=2", "prob must be in [0, 1]");
  expect_rejected("ranks=1,ms=200,speed=3", "unknown key 'speed'");
  expect_rejected("ranks=x,ms=1", "ranks=x is not a number");
  expect_rejected("ranks=-1,ms=1", "is not a rank");
  expect_rejected("200", "expected key=value");
  expect_rejected("ranks=1,factor=0.5", "factor must be >= 1", false);
  expect_rejected("ranks=1,ms=1,ms=2", "given twice");
}

TEST(Straggler, SlowsOnlyTheChosenRanks) {
  const InjectDelay d = parse_inject_delay("ranks=1,ms=1");
  const InjectSlowdown s = parse_inject_slowdown("ranks=2,factor=2");
  EXPECT_FALSE(Straggler(d, s, 0, 0).active());
  Straggler delayed(d, s, 1, 0);
  EXPECT_TRUE(delayed.active());
  EXPECT_EQ(delayed.before_backward(), std::chrono::milliseconds(1));
  EXPECT_EQ(delayed.after_compute(std::chrono::milliseconds(3)).count(), 0);
  Straggler slowed(d, s, 2, 0);
  EXPECT_EQ(slowed.before_backward().count(), 0);
  EXPECT_DOUBLE_EQ(slowed.after_compute(std::chrono::milliseconds(2)).count(), 0.002);
}

TEST(Straggler, DelaysWithTheGivenProbability) {
  Straggler s(parse_inject_delay("ranks=0,ms=0,prob=0.5"), {}, 0, 1);
  EXPECT_FALSE(s.active()) << "a 0 ms delay is no delay";
  // 400 draws at 0.25: 100 expected, standard deviation about 9.
  Straggler p(parse_inject_delay("ranks=0,ms=1,prob=0.25"), {}, 0, 1);
  int hits = 0;
  for (int i = 0; i < 400; ++i) hits += p.before_backward().count() > 0;
  EXPECT_GT(hits, 60);
  EXPECT_LT(hits, 140);
}

}  // namespace
}  // namespace tandem::train
