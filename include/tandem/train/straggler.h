// Straggler injection for experiments (`tandem train --inject-delay`,
// `--inject-slowdown`): makes chosen ranks slow on purpose, so that the
// strategies' tolerance of a slow worker can be measured.
//   delay:    "ranks=1,ms=200,prob=0.2": before backward, those ranks sleep
//             ms milliseconds with probability prob (default 1) per step.
//   slowdown: "ranks=1,factor=2": those ranks' forward and backward take
//             factor times as long (they sleep (factor - 1) x the time
//             they took).
// Several ranks: "ranks=1,2,ms=500" or "ranks=1:2,...". Each rank draws
// from its own generator seeded by (seed, rank), so runs repeat.
// Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace tandem::train {

struct InjectDelay {
  std::vector<int> ranks;
  std::chrono::milliseconds delay{0};
  double probability = 1.0;
};

struct InjectSlowdown {
  std::vector<int> ranks;
  double factor = 1.0;
};

// Parse the flag texts; "" is no injection. Throw InvalidArgument naming
// the flag, the key and what is accepted.
InjectDelay parse_inject_delay(const std::string& text);
InjectSlowdown parse_inject_slowdown(const std::string& text);

// The flag text that parses back into the value: "ranks=1,2,ms=200,prob=0.2"
// (prob omitted when 1), "ranks=1,factor=2"; "" when no rank is chosen.
std::string describe(const InjectDelay& delay);
std::string describe(const InjectSlowdown& slowdown);

class Straggler {
 public:
  Straggler(const InjectDelay& delay, const InjectSlowdown& slowdown, int rank, uint64_t seed);
  // Before backward: sleeps if this rank draws a delay. Returns the time slept.
  std::chrono::duration<double> before_backward();
  // After backward: sleeps (factor - 1) x `compute` on slowed ranks.
  std::chrono::duration<double> after_compute(std::chrono::duration<double> compute);
  bool active() const { return delayed_ || slowed_; }

 private:
  bool delayed_ = false;
  bool slowed_ = false;
  InjectDelay delay_;
  double factor_ = 1.0;
  std::mt19937_64 rng_;
};

}  // namespace tandem::train
