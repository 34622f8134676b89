// A small portable PRNG for data order and synthetic data: splitmix64 to mix
// seeds and xoshiro256** (Blackman and Vigna) to draw. Unlike std::
// distributions and LibTorch generators, its output is specified bit for bit,
// so shuffles and synthetic samples are identical on every platform.
#pragma once

#include <cstdint>

namespace tandem::train::detail {

// One splitmix64 step: advances `state` and returns a well-mixed value.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Mixes two values into one seed; (a, b) and (b, a) differ.
inline uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t s = a;
  uint64_t h = splitmix64(s);
  s = h ^ b;
  return splitmix64(s);
}

class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed) {
    for (auto& word : s_) word = splitmix64(seed);
  }

  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, bound) for bound >= 1, without modulo bias: rejects the
  // top partial block of the 64-bit range.
  uint64_t below(uint64_t bound) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x = next();
    while (x >= limit) x = next();
    return x % bound;
  }

  // Uniform in [0, 1) with 24 bits, exact in float.
  float uniform_float() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

}  // namespace tandem::train::detail
