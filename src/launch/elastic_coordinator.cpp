#include "tandem/launch/elastic_coordinator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "launch/elastic_text.h"
#include "tandem/core/check.h"
#include "tandem/core/deadline.h"
#include "tandem/core/error.h"

namespace tandem::launch::elastic {
namespace {

// A record's writer adds to the count first and sets the record right after;
// a record still missing this long after its count appeared is skipped (its
// writer died in between).
constexpr Millis kRecordGrace{5'000};
constexpr Millis kGetTimeout{1'000};
// How often a coordinator short of its quorum says so.
constexpr Millis kWaitSayInterval{5'000};

double seconds(Millis d) { return static_cast<double>(d.count()) / 1000.0; }

int64_t unix_ms() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool contains(const std::vector<int>& v, int x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::string plural(size_t n, const char* one, const char* many) {
  return fmt::format("{} {}", n, n == 1 ? one : many);
}

// A member that failed: what ends its generation and becomes the cause of the next.
struct Failure {
  int worker = -1;
  int rank = -1;
  std::string how;
  int64_t seen_unix_ms = 0;        // when the coordinator first saw it
  std::optional<double> detect_s;  // how long detection took, where known

  std::string describe() const {
    if (how.rfind("stalled", 0) == 0) {
      return fmt::format("rank {} (worker {}) {}", rank, worker, how);
    }
    return fmt::format("rank {} (worker {}) died: {}", rank, worker, how);
  }
};

}  // namespace

struct Coordinator::State {
  enum class Phase { kStarting, kRunning, kEnding, kFinished };
  struct Beat {
    int64_t value = 0;
    Clock::time_point changed;
  };

  std::shared_ptr<Store> store;  // under kElasticPrefix
  CoordinatorOptions options;
  std::function<void(const std::string&)> say;

  Phase phase = Phase::kStarting;
  int64_t generation = -1;                       // the running or ending generation
  std::vector<int> members;                      // of `generation`, in rank order
  std::vector<int> pending;                      // joiners not yet members, in join order
  std::map<int, std::string> gone;               // worker id -> how its process ended
  std::map<int, Clock::time_point> clean_exits;  // members that exited 0 before `complete`
  std::set<int> evicted;
  std::map<int, Beat> beats;
  std::optional<Failure> failure;  // the first failure since `generation` was decided

  int64_t joins_seen = 0;
  int64_t exits_seen = 0;
  std::optional<Clock::time_point> join_missing_since;
  std::optional<Clock::time_point> exit_missing_since;

  Clock::time_point started = Clock::now();
  Clock::time_point last_join = Clock::now();
  std::optional<Clock::time_point> short_since;  // below the quorum since
  Clock::time_point last_wait_say;
  std::optional<std::string> abort_reason;

  bool is_member(int id) const { return generation >= 0 && contains(members, id); }
  int rank_of(int id) const {
    auto it = std::find(members.begin(), members.end(), id);
    return it == members.end() ? -1 : static_cast<int>(it - members.begin());
  }
  std::vector<int> live_members() const {
    std::vector<int> out;
    for (int id : members) {
      if (!gone.count(id)) out.push_back(id);
    }
    return out;
  }

  void step();
  void check_finished();
  template <typename Handle>
  void read_records(const char* what, const std::string& count_key, std::string (*key_of)(int64_t),
                    int64_t& seen, std::optional<Clock::time_point>& missing_since, Handle handle);
  void on_join(const std::string& key, const std::string& value);
  void on_exit(const std::string& key, const std::string& value);
  void watch_heartbeats();
  void member_failed(int id, const std::string& how, std::optional<double> detect_s);
  void end_generation(const std::string& reason, const std::string& message);
  void try_start();
  void try_form_next();
  void wait_for_quorum(size_t have, const std::string& context);
  void decide(std::vector<int> next);
  void abort(const std::string& reason);
};

Coordinator::Coordinator(std::shared_ptr<Store> store, const CoordinatorOptions& options,
                         std::function<void(const std::string&)> say)
    : state_(std::make_unique<State>()) {
  TANDEM_CHECK(store != nullptr, "elastic coordinator: store must not be null");
  TANDEM_CHECK(options.min_workers >= 1 && options.min_workers <= options.max_workers,
               "elastic coordinator: need 1 <= min_workers <= max_workers (got {} and {})",
               options.min_workers, options.max_workers);
  TANDEM_CHECK(options.heartbeat_timeout.count() > 0 && options.rendezvous_timeout.count() > 0 &&
                   options.settle.count() >= 0,
               "elastic coordinator: heartbeat_timeout and rendezvous_timeout must be positive "
               "and settle non-negative (got {} ms, {} ms, {} ms)",
               options.heartbeat_timeout.count(), options.rendezvous_timeout.count(),
               options.settle.count());
  state_->store = with_prefix(std::move(store), kElasticPrefix);
  state_->options = options;
  state_->say = say ? std::move(say) : [](const std::string&) {};
}

Coordinator::~Coordinator() = default;

void Coordinator::poll() {
  if (state_->phase == State::Phase::kFinished) return;
  try {
    state_->step();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw PeerError(fmt::format("elastic coordinator (generation {}): the store {} failed: {}",
                                state_->generation, state_->store->address(), e.what()));
  }
}

bool Coordinator::finished() const { return state_->phase == State::Phase::kFinished; }
std::optional<std::string> Coordinator::abort_reason() const { return state_->abort_reason; }
int64_t Coordinator::generations() const { return state_->generation + 1; }
bool Coordinator::forming() const {
  return state_->phase == State::Phase::kStarting || state_->phase == State::Phase::kEnding;
}
std::vector<int> Coordinator::evicted() const {
  return {state_->evicted.begin(), state_->evicted.end()};
}

void Coordinator::State::step() {
  check_finished();
  if (phase == Phase::kFinished) return;
  read_records("join request", "join/count", &join_key, joins_seen, join_missing_since,
               [this](const std::string& k, const std::string& v) { on_join(k, v); });
  read_records("exit record", "exit/count", &exit_key, exits_seen, exit_missing_since,
               [this](const std::string& k, const std::string& v) { on_exit(k, v); });
  watch_heartbeats();
  switch (phase) {
    case Phase::kStarting:
      try_start();
      break;
    case Phase::kRunning:
      if (failure) {
        end_generation("failure", failure->describe());
      } else if (!pending.empty() && members.size() < static_cast<size_t>(options.max_workers)) {
        end_generation("join",
                       pending.size() == 1
                           ? fmt::format("worker {} waits to join", pending[0])
                           : fmt::format("workers {} wait to join", fmt::join(pending, ", ")));
      }
      // The survivors of a killed rank often left before the end was
      // written (shared memory sees the pid gone): form the next generation
      // in the same round rather than the launcher's next turn.
      if (phase == Phase::kEnding) try_form_next();
      break;
    case Phase::kEnding:
      try_form_next();
      break;
    case Phase::kFinished:
      break;
  }
}

void Coordinator::State::check_finished() {
  if (store->check("complete")) {
    phase = Phase::kFinished;
    return;
  }
  if (store->check("abort")) {
    abort_reason = store->get("abort", kGetTimeout);
    phase = Phase::kFinished;
  }
}

// Reads the records (seen, count] in order. See kRecordGrace.
template <typename Handle>
void Coordinator::State::read_records(const char* what, const std::string& count_key,
                                      std::string (*key_of)(int64_t), int64_t& seen,
                                      std::optional<Clock::time_point>& missing_since,
                                      Handle handle) {
  const int64_t count = store->add(count_key, 0);
  while (seen < count) {
    const std::string key = key_of(seen + 1);
    if (!store->check(key)) {
      auto now = Clock::now();
      if (!missing_since) missing_since = now;
      if (now - *missing_since < kRecordGrace) return;
      say(
          fmt::format("tandem-run: elastic: {} {}/{} was counted in {} but never written "
                      "within {}; skipped",
                      what, kElasticPrefix, key, count_key, format_duration(kRecordGrace)));
    } else {
      ++seen;
      missing_since.reset();
      handle(key, store->get(key, kGetTimeout));
      continue;
    }
    ++seen;
    missing_since.reset();
  }
}

void Coordinator::State::on_join(const std::string& key, const std::string& value) {
  auto id = detail::parse_id(value);
  if (!id) {
    throw InvalidArgument(
        fmt::format("elastic coordinator: join request {}/{} = '{}' ({} bytes) is not a worker id; "
                    "only workers started by tandem-run may write the elastic keys",
                    kElasticPrefix, key, detail::printable(value, 32), value.size()));
  }
  if (is_member(*id) || gone.count(*id) || evicted.count(*id) || contains(pending, *id)) return;
  if (generation >= 0 && store->check(kJoinsClosedKey)) {
    const std::string why = store->get(kJoinsClosedKey, options.heartbeat_timeout);
    evicted.insert(*id);
    store->set(evicted_key(*id), why);
    say(fmt::format("tandem-run: worker {} may not join: {}", *id, why));
    return;
  }
  pending.push_back(*id);
  last_join = Clock::now();
}

void Coordinator::State::on_exit(const std::string& key, const std::string& value) {
  const size_t tab = value.find('\t');
  auto id = detail::parse_id(std::string_view(value).substr(0, tab));
  if (tab == std::string::npos || !id || tab + 1 == value.size()) {
    throw InvalidArgument(
        fmt::format("elastic coordinator: exit record {}/{} = '{}' ({} bytes) is not "
                    "'<worker id>\\t<how it ended>'; only tandem-run may write the elastic keys",
                    kElasticPrefix, key, detail::printable(value, 32), value.size()));
  }
  const std::string how = value.substr(tab + 1);
  if (gone.count(*id)) return;
  pending.erase(std::remove(pending.begin(), pending.end(), *id), pending.end());
  if (is_member(*id) && how == "exit code 0" && phase == Phase::kRunning) {
    // Workers exit 0 after the last step, while rank 0 sets `complete`: give
    // it the heartbeat timeout to do so (watch_heartbeats) before calling it a failure.
    clean_exits[*id] = Clock::now();
    return;
  }
  gone[*id] = how;
  if (is_member(*id)) member_failed(*id, how, std::nullopt);
}

void Coordinator::State::watch_heartbeats() {
  if (phase != Phase::kRunning && phase != Phase::kEnding) return;
  const auto now = Clock::now();
  for (auto it = clean_exits.begin(); it != clean_exits.end();) {
    if (now - it->second < options.heartbeat_timeout) {
      ++it;
      continue;
    }
    const int id = it->first;
    it = clean_exits.erase(it);
    gone[id] = "exit code 0 before the job was complete";
    if (is_member(id)) member_failed(id, gone[id], std::nullopt);
  }
  for (int id : live_members()) {
    if (clean_exits.count(id)) continue;
    const int64_t value = store->add(heartbeat_key(id), 0);
    Beat& beat = beats[id];
    if (value != beat.value) {
      beat = {value, now};
      continue;
    }
    if (now - beat.changed < options.heartbeat_timeout) continue;
    const std::string how =
        fmt::format("stalled: no heartbeat for {:.1f} s", seconds(options.heartbeat_timeout));
    evicted.insert(id);
    store->set(evicted_key(id),
               fmt::format("{} in generation {} (rank {}); evicted by the coordinator", how,
                           generation, rank_of(id)));
    gone[id] = how;
    member_failed(id, how, seconds(options.heartbeat_timeout));
  }
}

void Coordinator::State::member_failed(int id, const std::string& how,
                                       std::optional<double> detect_s) {
  if (failure) return;  // the first failure stays the cause; later ones just drop out
  failure = Failure{id, rank_of(id), how, unix_ms(), detect_s};
}

void Coordinator::State::end_generation(const std::string& reason, const std::string& message) {
  store->set(end_key(generation), nlohmann::json{{"reason", reason}, {"message", message}}.dump());
  phase = Phase::kEnding;
  say(fmt::format("tandem-run: generation {} ends: {}", generation, message));
}

void Coordinator::State::try_start() {
  const size_t max = static_cast<size_t>(options.max_workers);
  const size_t min = static_cast<size_t>(options.min_workers);
  const auto now = Clock::now();
  if (pending.size() >= max || (pending.size() >= min && now - last_join >= options.settle)) {
    // The first max_workers to ask, in id order: the initial workers' ids
    // are their launcher ranks, so generation 0 keeps RANK.
    std::vector<int> first(pending.begin(), pending.begin() + std::min(max, pending.size()));
    std::sort(first.begin(), first.end());
    decide(std::move(first));
    return;
  }
  if (pending.size() >= min) return;  // settling
  if (!short_since) {
    // Workers take a moment to start: say nothing for the first interval.
    short_since = started;
    last_wait_say = now;
  }
  wait_for_quorum(pending.size(), "at the start");
}

void Coordinator::State::try_form_next() {
  const std::vector<int> live = live_members();
  for (int id : live) {
    if (!store->check(left_key(generation, id))) return;
  }
  std::vector<int> next = live;
  for (int id : pending) {
    if (next.size() >= static_cast<size_t>(options.max_workers)) break;
    next.push_back(id);
  }
  if (next.size() >= static_cast<size_t>(options.min_workers)) {
    decide(std::move(next));
    return;
  }
  if (!short_since) {
    short_since = Clock::now();
    last_wait_say = *short_since - kWaitSayInterval;  // say it now
  }
  wait_for_quorum(next.size(), fmt::format("after generation {}", generation));
}

void Coordinator::State::wait_for_quorum(size_t have, const std::string& context) {
  const auto now = Clock::now();
  const auto waited = std::chrono::duration_cast<Millis>(now - *short_since);
  const size_t missing = static_cast<size_t>(options.min_workers) - have;
  if (waited >= options.rendezvous_timeout) {
    abort(fmt::format(
        "tandem-run: elastic job aborted: only {} of --min-workers {} {} after "
        "waiting {} (the rendezvous timeout); start replacements sooner or lower "
        "--min-workers",
        plural(have, "worker", "workers"), options.min_workers, context, format_duration(waited)));
    return;
  }
  if (now - last_wait_say < kWaitSayInterval) return;
  last_wait_say = now;
  say(
      fmt::format("tandem-run: waiting for {} more {}: {} of --min-workers {} {} ({} of the "
                  "rendezvous timeout {})",
                  missing, missing == 1 ? "worker" : "workers", have, options.min_workers, context,
                  format_duration(waited), format_duration(options.rendezvous_timeout)));
}

void Coordinator::State::decide(std::vector<int> next) {
  const int64_t g = generation + 1;
  nlohmann::json cause = {{"cause", "start"}, {"worker", -1},        {"rank", -1},
                          {"how", ""},        {"detect_s", nullptr}, {"seen_unix_ms", nullptr}};
  std::string after = "at the start";
  if (failure) {
    cause.update({{"cause", "failure"},
                  {"worker", failure->worker},
                  {"rank", failure->rank},
                  {"how", failure->how},
                  {"seen_unix_ms", failure->seen_unix_ms}});
    if (failure->detect_s) cause["detect_s"] = *failure->detect_s;
    after = "after " + failure->describe();
  } else if (g > 0) {
    std::vector<int> joined;
    for (int id : next) {
      if (!contains(members, id)) joined.push_back(id);
    }
    const int first = joined.empty() ? -1 : joined[0];
    const int rank =
        joined.empty()
            ? -1
            : static_cast<int>(std::find(next.begin(), next.end(), first) - next.begin());
    cause.update({{"cause", "join"}, {"worker", first}, {"rank", rank}});
    after = joined.empty() ? std::string("after a join request whose worker has gone")
                           : fmt::format("after worker{} {} joined", joined.size() == 1 ? "" : "s",
                                         fmt::join(joined, ", "));
  }
  store->set(members_key(g), format_members(next));
  store->set(cause_key(g), cause.dump());
  store->add("gen/decided", 1);

  const auto now = Clock::now();
  for (int id : next) {
    pending.erase(std::remove(pending.begin(), pending.end(), id), pending.end());
    beats[id] = {store->add(heartbeat_key(id), 0), now};
  }
  generation = g;
  members = std::move(next);
  phase = Phase::kRunning;
  failure.reset();
  short_since.reset();
  say(fmt::format("tandem-run: generation {}: members {} ({}), {}", g, format_members(members),
                  plural(members.size(), "worker", "workers"), after));
}

void Coordinator::State::abort(const std::string& reason) {
  store->set("abort", reason);
  abort_reason = reason;
  phase = Phase::kFinished;
  say(reason);
}

}  // namespace tandem::launch::elastic
