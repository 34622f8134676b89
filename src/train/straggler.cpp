#include "tandem/train/straggler.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <thread>

#include "tandem/core/check.h"

namespace tandem::train {
namespace {

// "ranks=1,2,ms=200": key=value items split on ',', where an item without
// '=' continues the list of the key before it.
std::map<std::string, std::vector<std::string>> parse_items(const std::string& flag,
                                                           const std::string& text) {
  std::map<std::string, std::vector<std::string>> out;
  std::string key;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    const size_t eq = item.find('=');
    if (eq != std::string::npos) {
      key = item.substr(0, eq);
      TANDEM_CHECK(!out.count(key), "--{} '{}': key '{}' is given twice", flag, text, key);
      out[key].push_back(item.substr(eq + 1));
    } else {
      TANDEM_CHECK(!key.empty() && !item.empty(),
                   "--{} '{}': expected key=value items such as ranks=1,ms=200", flag, text);
      out[key].push_back(item);
    }
    start = end + 1;
  }
  return out;
}

double number(const std::string& flag, const std::string& key, const std::string& value) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  TANDEM_CHECK(ec == std::errc() && ptr == value.data() + value.size(),
               "--{}: {}={} is not a number", flag, key, value);
  return v;
}

std::vector<int> ranks_of(const std::string& flag, std::vector<std::string> values) {
  std::vector<int> ranks;
  for (const auto& v : values) {
    size_t start = 0;
    while (start <= v.size()) {  // "1:2" lists too
      size_t end = std::min(v.find(':', start), v.size());
      const std::string one = v.substr(start, end - start);
      const double r = number(flag, "ranks", one);
      TANDEM_CHECK(r >= 0 && r == static_cast<int>(r), "--{}: ranks={} is not a rank", flag, one);
      ranks.push_back(static_cast<int>(r));
      start = end + 1;
    }
  }
  TANDEM_CHECK(!ranks.empty(), "--{}: give ranks=R[,R...]", flag);
  return ranks;
}

void check_keys(const std::string& flag, const std::map<std::string, std::vector<std::string>>& m,
                std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, values] : m) {
    TANDEM_CHECK(std::find(allowed.begin(), allowed.end(), key) != allowed.end(),
                 "--{}: unknown key '{}'; the keys are {}", flag, key, fmt::join(allowed, ", "));
    TANDEM_CHECK(key == "ranks" || values.size() == 1, "--{}: {} takes one value", flag, key);
  }
  TANDEM_CHECK(m.count("ranks"), "--{}: give ranks=R[,R...]", flag);
}

}  // namespace

InjectDelay parse_inject_delay(const std::string& text) {
  InjectDelay d;
  if (text.empty()) return d;
  const std::string flag = "inject-delay";
  auto m = parse_items(flag, text);
  check_keys(flag, m, {"ranks", "ms", "prob"});
  d.ranks = ranks_of(flag, m["ranks"]);
  TANDEM_CHECK(m.count("ms"), "--inject-delay: give ms=MILLISECONDS");
  const double ms = number(flag, "ms", m["ms"][0]);
  TANDEM_CHECK(ms >= 0, "--inject-delay: ms must be >= 0 (got {})", ms);
  d.delay = std::chrono::milliseconds(static_cast<int64_t>(ms));
  if (m.count("prob")) d.probability = number(flag, "prob", m["prob"][0]);
  TANDEM_CHECK(d.probability >= 0 && d.probability <= 1,
               "--inject-delay: prob must be in [0, 1] (got {})", d.probability);
  return d;
}

InjectSlowdown parse_inject_slowdown(const std::string& text) {
  InjectSlowdown s;
  if (text.empty()) return s;
  const std::string flag = "inject-slowdown";
  auto m = parse_items(flag, text);
  check_keys(flag, m, {"ranks", "factor"});
  s.ranks = ranks_of(flag, m["ranks"]);
  TANDEM_CHECK(m.count("factor"), "--inject-slowdown: give factor=F (F >= 1)");
  s.factor = number(flag, "factor", m["factor"][0]);
  TANDEM_CHECK(s.factor >= 1, "--inject-slowdown: factor must be >= 1 (got {})", s.factor);
  return s;
}

std::string describe(const InjectDelay& d) {
  if (d.ranks.empty()) return "";
  std::string text = fmt::format("ranks={},ms={}", fmt::join(d.ranks, ","), d.delay.count());
  if (d.probability != 1.0) text += fmt::format(",prob={}", d.probability);
  return text;
}

std::string describe(const InjectSlowdown& s) {
  if (s.ranks.empty()) return "";
  return fmt::format("ranks={},factor={}", fmt::join(s.ranks, ","), s.factor);
}

Straggler::Straggler(const InjectDelay& delay, const InjectSlowdown& slowdown, int rank,
                     uint64_t seed)
    : delay_(delay), rng_(seed * 7919ULL + static_cast<uint64_t>(rank) + 1) {
  auto has = [rank](const std::vector<int>& r) {
    return std::find(r.begin(), r.end(), rank) != r.end();
  };
  delayed_ = has(delay.ranks) && delay.delay.count() > 0 && delay.probability > 0;
  slowed_ = has(slowdown.ranks) && slowdown.factor > 1;
  factor_ = slowdown.factor;
}

std::chrono::duration<double> Straggler::before_backward() {
  if (!delayed_) return {};
  if (delay_.probability < 1 && std::uniform_real_distribution<double>(0, 1)(rng_) >= delay_.probability) {
    return {};
  }
  std::this_thread::sleep_for(delay_.delay);
  return delay_.delay;
}

std::chrono::duration<double> Straggler::after_compute(std::chrono::duration<double> compute) {
  if (!slowed_) return {};
  auto extra = compute * (factor_ - 1);
  std::this_thread::sleep_for(extra);
  return extra;
}

}  // namespace tandem::train
