#include "launch/elastic_group.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>

#include "tandem/core/error.h"
#include "tandem/launch/elastic_protocol.h"

namespace tandem::launch {
namespace {

constexpr Millis kPollInterval{50};  // one turn of the watch loop, as ProcessGroup's
// While the coordinator forms a generation the survivors wait on it, so a
// turn saved is time the whole job gets back: the turns start at this and
// double up to kPollInterval (a turn costs a few store round trips per
// member, too many to repeat every 2 ms through a long wait for a quorum).
constexpr Millis kFirstFormingPoll{2};
constexpr Millis kAfterKill = ChildProcesses::kAfterKill;
constexpr size_t kKeptOutputBytes = 64 * 1024;

std::string key(const std::string& k) { return std::string(elastic::kElasticPrefix) + "/" + k; }

bool has_ended(const ChildResult& r) { return r.exit_code >= 0 || r.signal != 0; }

}  // namespace

ElasticGroup::ElasticGroup(const LaunchOptions& options, const LaunchOutput& output,
                           const SignalRelay& signals, std::shared_ptr<Store> store,
                           int master_port)
    : options_(options),
      output_(output),
      signals_(signals),
      store_(std::move(store)),
      master_port_(master_port),
      relays_(options, output),
      children_(
          {.on_data = [this](size_t i, Stream s, std::string_view d) { relays_.relay(i, s, d); },
           .on_closed = [this](size_t i, Stream s) { relays_.end_stream(i, s); },
           .keep_output_bytes = kKeptOutputBytes,
           .reap_groups = true}) {
  if (options_.node_rank == 0) {
    elastic::CoordinatorOptions c;
    c.min_workers = options_.min_workers;
    c.max_workers = options_.max_workers;
    c.heartbeat_timeout = options_.heartbeat_timeout;
    coordinator_ = std::make_unique<elastic::Coordinator>(
        store_, c, [this](const std::string& line) { say(line); });
  }
}

ElasticGroup::~ElasticGroup() = default;

template <typename F>
bool ElasticGroup::guarded(const char* what, F&& call) {
  if (store_lost_) return false;
  try {
    call();
    return true;
  } catch (const std::exception& e) {
    store_lost_ = true;
    say(
        fmt::format("tandem-run: node {}: the job's store {} failed ({}): {}; stopping this "
                    "node's workers",
                    options_.node_rank, store_->address(), what, e.what()));
    return false;
  }
}

void ElasticGroup::start(const std::string& program_path,
                         const std::vector<std::string>& base_env) {
  program_path_ = program_path;
  base_env_ = base_env;
  for (int local_rank = 0; local_rank < options_.nproc_per_node; ++local_rank) {
    const int rank = options_.node_rank * options_.nproc_per_node + local_rank;
    workers_.push_back({rank, local_rank, rank, false});
    relays_.add(rank, "");
    children_.start_program(rank, program_path_, options_.command,
                            worker_environment(base_env_, options_,
                                               {.local_rank = local_rank,
                                                .restart_count = 0,
                                                .master_port = master_port_,
                                                .worker_id = rank,
                                                .joining = false,
                                                .store_served = true}));
  }
}

LaunchResult ElasticGroup::wait() {
  while (true) {
    children_.poll(next_poll_interval());
    const auto now = Clock::now();
    handle_signals(now);
    read_job_state(now);
    // Exits before the coordinator: it then sees a death in this very turn.
    handle_exits();
    poll_coordinator();
    end_game(now);
    const bool serving =
        coordinator_ && options_.nnodes > 1 && !over_since_ && !store_lost_ && signal_ == 0;
    if (children_.all_gone()) {
      if (!serving) break;
      if (!said_serving_) {
        say("tandem-run: every worker of node 0 has exited; serving the store until the job "
            "completes or aborts");
        said_serving_ = true;
      }
    }
    if (sigkill_at_ && !give_up_at_ && now >= *sigkill_at_) {
      say(fmt::format("tandem-run: {} still running {} after SIGTERM; sending SIGKILL",
                      children_.survivors(), format_duration(options_.grace_period)));
      children_.signal_all(SIGKILL);
      give_up_at_ = now + kAfterKill;
    }
    if (give_up_at_ && now >= *give_up_at_) children_.give_up_on_survivors();
  }
  children_.drain();
  const int attempts = restarts_ + 1;
  if (signal_ != 0) return {128 + signal_, attempts, signal_};
  if (complete_) return {0, attempts, 0};
  std::string reason = abort_reason_.value_or(
      "every worker of this node has exited and the elastic job is not complete");
  if (reason.rfind("tandem-run: ", 0) == 0) reason = reason.substr(12);
  say(fmt::format("tandem-run: node {} ends with exit code 1: {}", options_.node_rank, reason));
  return {1, attempts, 0};
}

Millis ElasticGroup::next_poll_interval() {
  if (!coordinator_ || store_lost_ || !coordinator_->forming()) {
    forming_turns_ = 0;
    return kPollInterval;
  }
  const int doublings = std::min(forming_turns_++, 5);
  return std::min(Millis(kFirstFormingPoll.count() << doublings), kPollInterval);
}

void ElasticGroup::poll_coordinator() {
  if (!coordinator_ || coordinator_->finished() || store_lost_) return;
  try {
    coordinator_->poll();
  } catch (const InvalidArgument& e) {
    // A garbled record: the coordinator has skipped it and goes on.
    say(fmt::format("tandem-run: elastic coordinator: {}", e.what()));
  } catch (const Error& e) {
    const std::string reason = fmt::format("the elastic coordinator failed: {}", e.what());
    guarded("set abort", [&] { store_->set(key("abort"), reason); });
  }
}

// `complete` and `abort` are read from the store on every node, so that a
// node's launcher stops replacing workers once the job is over.
void ElasticGroup::read_job_state(Clock::time_point now) {
  if (over_since_ || store_lost_) return;
  guarded("read complete/abort", [&] {
    if (store_->check(key("complete"))) {
      complete_ = true;
    } else if (store_->check(key("abort"))) {
      abort_reason_ = store_->get(key("abort"), Millis(5000));
    }
  });
  if (complete_ || abort_reason_) over_since_ = now;
}

void ElasticGroup::handle_exits() {
  const auto& results = children_.results();
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (workers_[i].ended || !has_ended(results[i])) continue;
    workers_[i].ended = true;
    const Worker w = workers_[i];  // replace() may grow workers_
    const std::string how = results[i].how();
    guarded("record an exit", [&] { elastic::record_exit(*store_, w.id, how); });
    if (results[i].ok()) continue;
    const std::string who = fmt::format("tandem-run: rank {} (worker {}, pid {}) failed ({})",
                                        w.rank, w.id, results[i].pid, how);
    if (over_since_ || signal_ != 0 || store_lost_) {
      say(who + (complete_ ? " after the job completed" : ""));
      continue;
    }
    say(fmt::format("{}; the others continue (elastic, --min-workers {})", who,
                    options_.min_workers));
    if (restarts_ >= options_.max_restarts) {
      say(fmt::format("tandem-run: no restart is left for node {} (--max-restarts {})",
                      options_.node_rank, options_.max_restarts));
      continue;
    }
    replace(w, how);
  }
}

void ElasticGroup::replace(const Worker& failed, const std::string& how) {
  int id = -1;
  if (!guarded("get a new worker id", [&] {
        id = elastic::new_worker_id(*store_, options_.nnodes * options_.nproc_per_node);
      })) {
    return;
  }
  ++restarts_;
  say(fmt::format("tandem-run: rank {} (worker {}): restarting it as worker {} (restart {} of {})",
                  failed.rank, failed.id, id, restarts_, options_.max_restarts));
  workers_.push_back({failed.rank, failed.local_rank, id, false});
  relays_.add(failed.rank,
              fmt::format("---- tandem-run: worker {} ({}) replaced by worker {} (restart {} of "
                          "{}, TANDEM_ELASTIC_JOIN=1) ----",
                          failed.id, how, id, restarts_, options_.max_restarts));
  children_.start_program(failed.rank, program_path_, options_.command,
                          worker_environment(base_env_, options_,
                                             {.local_rank = failed.local_rank,
                                              .restart_count = restarts_,
                                              .master_port = master_port_,
                                              .worker_id = id,
                                              .joining = true,
                                              .store_served = true}));
}

// Once the job is over, workers that do not exit by themselves are stopped:
// right away when only evicted ones are left (a stopped process never exits
// by itself), and after the grace period otherwise.
void ElasticGroup::end_game(Clock::time_point now) {
  if (sigkill_at_ || children_.all_gone()) return;
  if (children_.all_exited()) {
    say(fmt::format("tandem-run: every worker has exited, but {} still running; stopping them",
                    children_.survivors()));
    stop(SIGTERM, now);
    return;
  }
  if (store_lost_) {
    stop(SIGTERM, now);
    return;
  }
  if (!over_since_) return;
  const auto& results = children_.results();
  bool only_evicted = true;
  for (size_t i = 0; i < workers_.size() && only_evicted; ++i) {
    if (!has_ended(results[i]) && !is_evicted(workers_[i].id)) only_evicted = false;
  }
  if (complete_ && only_evicted) {
    say(fmt::format("tandem-run: the job is complete; stopping the evicted workers left: {}",
                    children_.survivors()));
    stop(SIGTERM, now);
  } else if (now - *over_since_ >= options_.grace_period) {
    say(fmt::format("tandem-run: the job is {}, but {} still running {} later; stopping them",
                    complete_ ? "complete" : "aborted", children_.survivors(),
                    format_duration(options_.grace_period)));
    stop(SIGTERM, now);
  }
}

bool ElasticGroup::is_evicted(int id) {
  if (coordinator_) {
    for (int e : coordinator_->evicted()) {
      if (e == id) return true;
    }
    return false;
  }
  bool evicted = false;
  guarded("read evictions", [&] { evicted = store_->check(key(elastic::evicted_key(id))); });
  return evicted;
}

// As ProcessGroup: the first SIGINT/SIGTERM is forwarded, a second one means
// SIGKILL now. No worker is replaced after a signal.
void ElasticGroup::handle_signals(Clock::time_point now) {
  const int received = signals_.count();
  if (received == signals_seen_) return;
  if (signals_seen_ == 0) {
    signal_ = signals_.first();
    say(fmt::format("tandem-run: received {}; forwarding it to the workers (SIGKILL after {})",
                    signal_name(signal_), format_duration(options_.grace_period)));
    stop(signal_, now);
  } else if (!give_up_at_) {
    say("tandem-run: received another signal; sending SIGKILL to the workers now");
    children_.signal_all(SIGKILL);
    give_up_at_ = now + kAfterKill;
  }
  signals_seen_ = received;
}

void ElasticGroup::stop(int sig, Clock::time_point now) {
  children_.signal_all(sig);
  if (!sigkill_at_) sigkill_at_ = now + options_.grace_period;
}

void ElasticGroup::say(const std::string& line) const { output_.status(line + "\n"); }

}  // namespace tandem::launch
