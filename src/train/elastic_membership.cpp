#include "train/elastic_membership.h"

#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem::train {
namespace el = launch::elastic;
namespace {

using Clock = std::chrono::steady_clock;

// How often a waiting worker looks at gen/decided: first after this, then
// twice as long each turn up to kLastDecisionPoll. A failure's decision
// follows within milliseconds of the survivors' leaving, a join's at the
// next step boundary.
constexpr Millis kFirstDecisionPoll{1};
constexpr Millis kLastDecisionPoll{20};
// A worker waits for the next generation somewhat longer than the
// coordinator waits for a quorum, so that the coordinator's abort (with its
// reason) arrives first.
constexpr Millis kDecisionSlack{10'000};

int64_t read_counter(Store& store, const std::string& key) { return store.add(key, 0); }

// How often a generation's setup, blocked on a member that never arrives,
// asks whether the coordinator has ended that generation meanwhile.
constexpr Millis kEndPoll{50};

// A view of a generation's store whose blocking calls (the setup's join
// barrier and Gloo's address exchange) wait in slices and, between them,
// ask whether the coordinator has ended the generation: a member that died
// after the generation was decided would otherwise hold the others in setup
// until the rendezvous timeout.
class GenerationStore final : public Store {
 public:
  GenerationStore(std::shared_ptr<Store> view, std::shared_ptr<Store> job, int64_t generation)
      : view_(std::move(view)), job_(std::move(job)), generation_(generation) {}

  void set(const std::string& key, const std::string& value) override { view_->set(key, value); }
  std::string get(const std::string& key, Millis timeout) override {
    wait({key}, timeout);
    return view_->get(key, timeout);
  }
  int64_t add(const std::string& key, int64_t delta) override { return view_->add(key, delta); }
  bool check(const std::string& key) override { return view_->check(key); }
  void wait(const std::vector<std::string>& keys, Millis timeout) override {
    Deadline deadline(timeout, "store wait timeout");
    while (true) {
      const Millis slice = std::min(deadline.remaining(), kEndPoll);
      if (slice >= deadline.remaining()) {
        view_->wait(keys, deadline.remaining());  // the last slice: its TimeoutError stands
        return;
      }
      try {
        view_->wait(keys, slice);
        return;
      } catch (const TimeoutError&) {
      }
      if (job_->check(el::end_key(generation_))) {
        throw PeerError(fmt::format(
            "elastic generation {} ended while its communicator was being set up: {}",
            generation_, job_->get(el::end_key(generation_), deadline.remaining())));
      }
    }
  }
  std::string address() const override { return view_->address(); }

 private:
  std::shared_ptr<Store> view_;
  std::shared_ptr<Store> job_;
  const int64_t generation_;
};

}  // namespace

// Beats every interval on a store connection of its own (so that a long
// call of the training thread never delays a beat), and watches the keys
// that end the current generation.
class ElasticMembership::Heartbeat {
 public:
  Heartbeat(std::shared_ptr<Store> store, int worker_id, Millis interval)
      : store_(std::move(store)), id_(worker_id), interval_(interval) {
    thread_ = std::thread([this] { run(); });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // The generation to watch, and its communicator to abort.
  void watch(int64_t generation, std::shared_ptr<Communicator> comm) {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_ = generation;
    comm_ = std::move(comm);
    end_.reset();
    end_seen_.reset();
    join_wanted_ = false;
  }
  bool join_wanted() const { return join_wanted_.load(); }
  std::optional<std::string> end_message() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return end_;
  }
  std::optional<Clock::time_point> end_seen_at() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return end_seen_;
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      const int64_t generation = generation_;
      auto comm = comm_;
      const bool ended = end_.has_value();
      lock.unlock();
      try {
        beat(generation, comm, ended);
      } catch (const std::exception& e) {
        // The store is gone: the launcher exited. The training thread's next
        // store call says so; beating on would only repeat it.
        log::warn("elastic: worker {}: heartbeat stopped: {}", id_, e.what());
        lock.lock();
        return;
      }
      lock.lock();
      cv_.wait_for(lock, interval_, [this] { return stop_; });
    }
  }

  void beat(int64_t generation, const std::shared_ptr<Communicator>& comm, bool ended) {
    store_->add(el::heartbeat_key(id_), 1);
    std::optional<std::string> abort_reason;
    if (store_->check(el::evicted_key(id_))) {
      abort_reason = fmt::format("worker {} was evicted from the job: {}", id_,
                                 store_->get(el::evicted_key(id_), interval_));
    } else if (store_->check("abort")) {
      abort_reason = "the job was aborted: " + store_->get("abort", interval_);
    } else if (generation >= 0 && !ended && store_->check(el::end_key(generation))) {
      const std::string text = store_->get(el::end_key(generation), interval_);
      std::string reason = "failure", message = text;
      try {
        const auto j = nlohmann::json::parse(text);
        reason = j.at("reason").get<std::string>();
        message = j.at("message").get<std::string>();
      } catch (const std::exception&) {
        message = "unreadable end record: " + text;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        // The training thread may have moved on to the next generation
        // while this beat read the old one's end record: that record says
        // nothing about the new generation (a stale "join" would make every
        // member leave a generation the coordinator keeps).
        if (generation_ != generation) return;
        end_ = message;
        end_seen_ = Clock::now();
        if (reason == "join") join_wanted_ = true;
      }
      if (reason != "join") {
        abort_reason = fmt::format("elastic generation {} ended: {}", generation, message);
      }
    }
    if (abort_reason && comm) comm->abort(*abort_reason);
  }

  std::shared_ptr<Store> store_;
  const int id_;
  const Millis interval_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;                          // guarded by mutex_
  int64_t generation_ = -1;                    // guarded by mutex_
  std::shared_ptr<Communicator> comm_;         // guarded by mutex_
  std::optional<std::string> end_;             // guarded by mutex_
  std::optional<Clock::time_point> end_seen_;  // guarded by mutex_
  std::atomic<bool> join_wanted_{false};
  std::thread thread_;
};

ElasticMembership::ElasticMembership(const RendezvousInfo& info, const el::ElasticEnv& env,
                                     const InitOptions& init)
    : info_(info), env_(env), timeouts_(resolve_timeouts(init)), backend_(init.backend) {
  TANDEM_CHECK(env.enabled,
               "elastic membership needs TANDEM_ELASTIC (run under tandem-run "
               "with --min-workers or --max-workers)");
  TANDEM_CHECK(info.store_served,
               "elastic training needs the store that tandem-run serves (TANDEM_STORE_SERVED=1); "
               "under mpirun or srun it is not available");
  log::set_rank(info.rank);
  auto open = [&] {
    return with_prefix(
        make_tcp_store(info.master_addr, info.master_port, false, timeouts_.rendezvous_timeout),
        el::kElasticPrefix);
  };
  store_ = open();
  heartbeat_ = std::make_unique<Heartbeat>(open(), env.worker_id, el::kDefaultHeartbeatInterval);
}

ElasticMembership::~ElasticMembership() {
  heartbeat_.reset();  // before the communicator it may abort
}

const Generation& ElasticMembership::join() {
  const int64_t from = read_counter(*store_, "gen/decided");
  const int64_t k = store_->add("join/count", 1);
  store_->set(el::join_key(k), std::to_string(env_.worker_id));
  return enter(env_.joining ? from : 0, {}, -1);
}

bool ElasticMembership::should_reform() {
  at::Tensor vote = at::tensor({static_cast<int64_t>(heartbeat_->join_wanted() ? 1 : 0)});
  current_.comm->all_reduce(vote, ReduceOp::kMax);
  return vote.item<int64_t>() > 0;
}

const Generation& ElasticMembership::reform(int64_t committed_step) {
  const int64_t g = current_.number;
  std::vector<int> previous = current_.members;
  heartbeat_->watch(g, nullptr);
  current_.comm.reset();  // ends the old generation's communicator here
  store_->set(el::left_key(g, env_.worker_id), std::to_string(committed_step));
  return enter(g + 1, std::move(previous), committed_step);
}

// Waits for each generation from `from` on until one admits this worker and
// its communicator forms. A generation that ends before that (another
// member died meanwhile) is left as a failed one is, and the next awaited.
const Generation& ElasticMembership::enter(int64_t from, std::vector<int> previous,
                                           int64_t committed_step) {
  Deadline deadline(timeouts_.rendezvous_timeout + kDecisionSlack,
                    "elastic membership: waiting for the next generation");
  for (int64_t g = from;; ++g) {
    Millis poll = kFirstDecisionPoll;
    while (read_counter(*store_, "gen/decided") <= g) {
      if (store_->check(el::evicted_key(env_.worker_id))) {
        throw LeftJobError(fmt::format(
            "worker {}: evicted from the elastic job ({}); it exits, and the job continues "
            "without it",
            env_.worker_id, store_->get(el::evicted_key(env_.worker_id), deadline.remaining())));
      }
      if (store_->check("abort")) {
        throw LeftJobError(fmt::format("worker {}: the elastic job was aborted: {}", env_.worker_id,
                                       store_->get("abort", deadline.remaining())));
      }
      if (deadline.expired()) {
        throw TimeoutError(fmt::format(
            "worker {}: waited {} for elastic generation {} to form; the coordinator in "
            "tandem-run (node 0) decided nothing: is it running? (--rendezvous-timeout)",
            env_.worker_id, format_duration(deadline.elapsed()), g));
      }
      std::this_thread::sleep_for(poll);
      poll = std::min(poll * 2, kLastDecisionPoll);
    }
    std::vector<int> members =
        el::parse_members(store_->get(el::members_key(g), deadline.remaining()));
    auto it = std::find(members.begin(), members.end(), env_.worker_id);
    const bool was_member =
        std::find(previous.begin(), previous.end(), env_.worker_id) != previous.end();
    if (it == members.end()) {
      // Left out of a generation after one it belonged to: evicted.
      if (was_member || store_->check(el::evicted_key(env_.worker_id))) {
        throw LeftJobError(fmt::format(
            "worker {}: elastic generation {} (members {}) left this worker out{}; it exits, "
            "and the job continues without it",
            env_.worker_id, g, fmt::join(members, ","),
            store_->check(el::evicted_key(env_.worker_id))
                ? ": " + store_->get(el::evicted_key(env_.worker_id), deadline.remaining())
                : ""));
      }
      continue;  // a joiner: not admitted yet
    }
    Generation next;
    next.number = g;
    next.members = std::move(members);
    next.rank = static_cast<int>(it - next.members.begin());
    try {
      next.cause = nlohmann::json::parse(store_->get(el::cause_key(g), deadline.remaining()));
    } catch (const nlohmann::json::exception&) {
      next.cause = {{"cause", "unknown"}};
    }
    try {
      next.comm = build_comm(next);
    } catch (const std::exception& e) {
      if (!store_->check(el::end_key(g))) throw;
      log::info("elastic: worker {}: generation {} ended before it formed ({}); waiting for the "
                "next",
                env_.worker_id, g, e.what());
      store_->set(el::left_key(g, env_.worker_id), std::to_string(committed_step));
      previous = next.members;
      continue;
    }
    current_ = std::move(next);
    heartbeat_->watch(g, current_.comm);
    return current_;
  }
}

std::shared_ptr<Communicator> ElasticMembership::build_comm(const Generation& g) {
  RendezvousInfo gi = info_;
  gi.rank = g.rank;
  gi.world_size = g.world_size();
  gi.local_rank = 0;
  gi.local_world_size = 1;
  // A replacement has its own TANDEM_RESTART_COUNT; the generation's store
  // prefix already keeps generations apart, and the group names must agree.
  gi.restart_count = 0;
  log::set_rank(g.rank);
  auto view = std::make_shared<GenerationStore>(
      with_prefix(store_, fmt::format("gen/{}/rdzv", g.number)), store_, g.number);
  Rendezvous rdzv(gi, view, timeouts_.rendezvous_timeout);
  return rdzv.communicator(backend_, timeouts_.timeout);
}

std::optional<std::string> ElasticMembership::end_message() const {
  return heartbeat_->end_message();
}

bool ElasticMembership::generation_ended() {
  try {
    return current_.number >= 0 && store_->check(el::end_key(current_.number));
  } catch (const std::exception&) {
    return false;  // the caller is handling an error already; it keeps that one
  }
}

std::optional<Clock::time_point> ElasticMembership::end_seen_at() const {
  return heartbeat_->end_seen_at();
}

void ElasticMembership::complete() { store_->set("complete", "1"); }

void ElasticMembership::close_joins(const std::string& why) {
  store_->set(el::kJoinsClosedKey, why);
}

int ElasticMembership::first_world_size() {
  return static_cast<int>(
      el::parse_members(store_->get(el::members_key(0), timeouts_.rendezvous_timeout)).size());
}

}  // namespace tandem::train
