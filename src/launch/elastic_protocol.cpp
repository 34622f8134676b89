#include "tandem/launch/elastic_protocol.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <climits>
#include <optional>
#include <string_view>

#include "launch/elastic_text.h"
#include "tandem/core/check.h"

namespace tandem::launch::elastic {
namespace {

std::string prefixed(const std::string& key) { return std::string(kElasticPrefix) + "/" + key; }

}  // namespace

namespace detail {

// A whole, non-negative decimal int with nothing around it, or nullopt.
std::optional<int> parse_id(std::string_view text) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  long long value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < 0 || value > INT_MAX) {
    return std::nullopt;
  }
  return static_cast<int>(value);
}

// A store value for a message: at most `max` bytes, non-printable bytes as \xNN.
std::string printable(std::string_view text, size_t max) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7f) ? std::string(1, static_cast<char>(c))
                                   : fmt::format("\\x{:02x}", c);
  }
  return text.size() > max ? out + "..." : out;
}

}  // namespace detail

using detail::parse_id;
using detail::printable;

std::string join_key(int64_t k) { return fmt::format("join/{}", k); }
std::string heartbeat_key(int worker_id) { return fmt::format("hb/{}", worker_id); }
std::string exit_key(int64_t k) { return fmt::format("exit/{}", k); }
std::string members_key(int64_t generation) { return fmt::format("gen/{}/members", generation); }
std::string cause_key(int64_t generation) { return fmt::format("gen/{}/cause", generation); }
std::string end_key(int64_t generation) { return fmt::format("gen/{}/end", generation); }
std::string left_key(int64_t generation, int worker_id) {
  return fmt::format("gen/{}/left/{}", generation, worker_id);
}
std::string evicted_key(int worker_id) { return fmt::format("evicted/{}", worker_id); }

std::string format_members(const std::vector<int>& ids) {
  return fmt::format("{}", fmt::join(ids, ","));
}

std::vector<int> parse_members(const std::string& text) {
  // Quoted with its length only: a hostile value may be long or binary.
  auto bad = [&](const std::string& why) {
    throw InvalidArgument(fmt::format(
        "elastic: member list '{}' ({} bytes) is not a comma-separated list of worker ids "
        "such as '0,1,3': {}",
        printable(text), text.size(), why));
  };
  if (text.empty()) bad("it is empty");
  std::vector<int> ids;
  size_t begin = 0;
  while (true) {
    size_t comma = text.find(',', begin);
    std::string_view item(text.data() + begin,
                          (comma == std::string::npos ? text.size() : comma) - begin);
    auto id = parse_id(item);
    if (!id) bad(fmt::format("item {} ('{}') is not a worker id", ids.size(), printable(item, 16)));
    for (int seen : ids) {
      if (seen == *id) bad(fmt::format("worker {} appears twice", *id));
    }
    ids.push_back(*id);
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return ids;
}

void record_exit(Store& store, int worker_id, const std::string& how) {
  int64_t k = store.add(prefixed("exit/count"), 1);
  store.set(prefixed(exit_key(k)), fmt::format("{}\t{}", worker_id, how));
}

int new_worker_id(Store& store, int first_free) {
  TANDEM_CHECK(first_free >= 0, "elastic: new_worker_id: first_free must be >= 0 (got {})",
               first_free);
  int64_t n = store.add(prefixed("next_id"), 1);
  TANDEM_CHECK(n >= 1 && n <= INT_MAX - first_free,
               "elastic: store key {} holds {}, which gives no valid worker id",
               prefixed("next_id"), n);
  return first_free + static_cast<int>(n) - 1;
}

ElasticEnv read_elastic_env(const env::Lookup& lookup) {
  ElasticEnv e;
  auto spec = env::get(lookup, "TANDEM_ELASTIC");
  if (!spec) return e;
  e.enabled = true;
  size_t colon = spec->find(':');
  std::optional<int> lo, hi;
  if (colon != std::string::npos) {
    lo = parse_id(std::string_view(*spec).substr(0, colon));
    hi = parse_id(std::string_view(*spec).substr(colon + 1));
  }
  TANDEM_CHECK(lo && hi && *lo >= 1 && *lo <= *hi,
               "environment variable TANDEM_ELASTIC='{}' is not MIN:MAX with 1 <= MIN <= MAX "
               "(tandem-run sets it from --min-workers/--max-workers)",
               *spec);
  e.min_workers = *lo;
  e.max_workers = *hi;
  auto id = env::get_int(lookup, "TANDEM_WORKER_ID", 0, INT_MAX);
  TANDEM_CHECK(id.has_value(),
               "environment variable TANDEM_WORKER_ID is unset, but TANDEM_ELASTIC={} is set; "
               "tandem-run sets both",
               *spec);
  e.worker_id = static_cast<int>(*id);
  auto join = env::get(lookup, "TANDEM_ELASTIC_JOIN");
  TANDEM_CHECK(!join || *join == "0" || *join == "1",
               "environment variable TANDEM_ELASTIC_JOIN='{}' must be 0 or 1", join.value_or(""));
  e.joining = join && *join == "1";
  if (auto t = env::get_seconds(lookup, "TANDEM_HEARTBEAT_TIMEOUT")) e.heartbeat_timeout = *t;
  return e;
}

}  // namespace tandem::launch::elastic
