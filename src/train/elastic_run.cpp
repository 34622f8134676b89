#include "train/elastic_run.h"

#include <ATen/ops/full.h>
#include <ATen/ops/tensor.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <thread>

#include "tandem/core/check.h"
#include "tandem/train/data/distributed_sampler.h"

namespace tandem::train {
namespace {
using Clock = std::chrono::steady_clock;
using Seconds = std::chrono::duration<double>;

// The wall-clock time (ms since the epoch) of a steady-clock instant.
int64_t unix_ms_at(Clock::time_point t) {
  const auto wall =
      std::chrono::system_clock::now() -
      std::chrono::duration_cast<std::chrono::system_clock::duration>(Clock::now() - t);
  return std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
}
}  // namespace

GlobalCursor::GlobalCursor(int64_t num_samples, uint64_t seed)
    : num_samples_(num_samples), seed_(seed) {}

void GlobalCursor::set_split(int64_t global_batch, int world_size, int rank) {
  TANDEM_CHECK(global_batch >= 1 && global_batch <= num_samples_,
               "elastic: the global batch of {} samples does not fit the data set's {}; lower "
               "--batch-size or use more data (--dataset-size)",
               global_batch, num_samples_);
  TANDEM_CHECK(world_size <= global_batch,
               "elastic: {} ranks cannot split a global batch of {} samples; raise --batch-size",
               world_size, global_batch);
  global_batch_ = global_batch;
  world_size_ = world_size;
  rank_ = rank;
}

void GlobalCursor::resume_at(int64_t epoch, int64_t samples_in_epoch) {
  epoch_ = epoch;
  consumed_ = samples_in_epoch;
}

std::span<const int64_t> GlobalCursor::next() {
  if (consumed_ + global_batch_ > num_samples_) {
    ++epoch_;
    consumed_ = 0;
  }
  if (order_epoch_ != epoch_) {
    order_ = epoch_order(num_samples_, true, seed_, epoch_);
    order_epoch_ = epoch_;
  }
  const ShardRange mine = shard_range(global_batch_, world_size_, rank_);
  const auto* first = order_.data() + consumed_ + mine.offset;
  batch_.assign(first, first + mine.numel);
  consumed_ += global_batch_;
  return batch_;
}

int64_t GlobalCursor::steps_per_epoch(int64_t global_batch) const {
  return num_samples_ / global_batch;
}

double GlobalCursor::loss_scale() const {
  const ShardRange mine = shard_range(global_batch_, world_size_, rank_);
  return static_cast<double>(mine.numel * world_size_) / static_cast<double>(global_batch_);
}

nlohmann::json MembershipChange::to_json() const {
  return {{"membership_change", true},
          {"generation", generation},
          {"members", members},
          {"world_size", members.size()},
          {"cause", cause},
          {"detect_s", detect_seconds},
          {"recovery_s", recovery_seconds},
          {"membership_s", membership_seconds},
          {"state_s", state_seconds},
          {"seen_unix_ms", seen_unix_ms},
          {"step", step},
          {"steps_redone", steps_redone}};
}

std::string MembershipChange::describe() const {
  auto text = [this](const char* key) {
    const auto it = cause.find(key);
    return it == cause.end() ? std::string("?")
           : it->is_string() ? it->get<std::string>()
                             : it->dump();
  };
  const std::string why = text("cause");
  std::string what = why;
  if (why == "failure") {
    what = fmt::format("rank {} (worker {}) left ({})", text("rank"), text("worker"), text("how"));
  } else if (why == "join") {
    what = "workers joined";
  }
  return fmt::format(
      "elastic: generation {}: {} workers (members {}) after {}; recovered in {:.2f} s "
      "(detection {:.2f} s), continuing at step {} ({} step{} redone)\n",
      generation, members.size(), fmt::join(members, ","), what, recovery_seconds, detect_seconds,
      step, steps_redone, steps_redone == 1 ? "" : "s");
}

ElasticRun::ElasticRun(const TrainerOptions& o, std::unique_ptr<ElasticMembership> membership)
    : o_(o), membership_(std::move(membership)), replica_(o) {
  membership_->join();
  first_world_ = membership_->first_world_size();
}

ElasticRun::~ElasticRun() = default;

int64_t ElasticRun::global_batch() const {
  const int world =
      o_.elastic.batch == ElasticBatch::kGlobal ? first_world_ : generation().world_size();
  return o_.run.batch_size * world;
}

double ElasticRun::lr_factor() const {
  if (o_.elastic.batch == ElasticBatch::kGlobal) return 1.0;
  return static_cast<double>(generation().world_size()) / static_cast<double>(first_world_);
}

void ElasticRun::split(GlobalCursor& cursor) const {
  cursor.set_split(global_batch(), generation().world_size(), generation().rank);
}

// The commit comes before the vote: a rank passes the vote only once every
// rank has completed its commit, so no rank starts a step whose commit
// another lacks, and a failure costs at most one step.
bool ElasticRun::at_boundary(Strategy& strategy, const RunPosition& at) {
  if (commit_generation_ != generation().number) {
    replica_.clear();
    commit_generation_ = generation().number;
  }
  replica_.commit(strategy, *comm(), at);
  return membership_->should_reform();
}

bool ElasticRun::failed() const {
  // An error may come from a communicator the strategy derived (a split),
  // before the generation's own has heard: wait for the coordinator's word,
  // which the heartbeat thread turns into an abort, up to a stall's time.
  const auto until = Clock::now() + membership_->env().heartbeat_timeout + std::chrono::seconds(2);
  while (true) {
    if (comm() && !comm()->failure().empty()) return true;
    if (membership_->end_message() || membership_->generation_ended()) return true;
    if (Clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

ElasticRun::Recovered ElasticRun::recover(int64_t step, Clock::time_point since, bool mid_step) {
  if (auto seen = membership_->end_seen_at()) since = std::min(since, *seen);
  const std::vector<int64_t> held = replica_.committed_steps();
  membership_->reform(held.empty() ? -1 : held.front());
  // How far this rank got: the steps it completed, and the one it was in.
  return gather(step + (mid_step ? 1 : 0), since, Clock::now());
}

MembershipChange ElasticRun::reform_async(int servers, Clock::time_point since, int64_t step,
                                          bool mid_step) {
  if (auto seen = membership_->end_seen_at()) since = std::min(since, *seen);
  const std::vector<int> before = generation().members;
  membership_->reform(-1);
  const auto reformed = Clock::now();
  const Generation& g = generation();
  if (servers > 0) {
    const auto n = static_cast<size_t>(servers);
    const std::vector<int> had(
        before.end() - static_cast<std::ptrdiff_t>(std::min(n, before.size())), before.end());
    const std::vector<int> has(
        g.members.end() - static_cast<std::ptrdiff_t>(std::min(n, g.members.size())),
        g.members.end());
    if (had != has || g.members.size() <= n) {
      throw NotSupported(fmt::format(
          "elastic generation {} (members {}) lost a parameter server: generation {}'s last {} "
          "member{} (worker{} {}) served. An asynchronous elastic job survives the loss of "
          "workers, not of a server; the job stops",
          g.number, fmt::join(g.members, ","), g.number - 1, n, n == 1 ? "" : "s",
          n == 1 ? "" : "s", fmt::join(had, ",")));
    }
  }
  MembershipChange c;
  c.generation = g.number;
  c.members = g.members;
  c.cause = g.cause;
  const auto detect = g.cause.find("detect_s");
  c.detect_seconds = detect != g.cause.end() && detect->is_number() ? detect->get<double>() : 0.0;
  c.membership_seconds = Seconds(reformed - since).count();
  c.recovery_seconds = c.membership_seconds;
  c.seen_unix_ms = unix_ms_at(since);
  c.step = step;
  c.steps_redone = mid_step ? 1 : 0;
  return c;
}

ElasticRun::Recovered ElasticRun::catch_up() {
  const auto now = Clock::now();
  return gather(0, now, now);
}

ElasticRun::Recovered ElasticRun::gather(int64_t reached, Clock::time_point since,
                                         Clock::time_point reformed) {
  const std::vector<int64_t> held = replica_.committed_steps();
  const std::optional<StateReplica::Place> place = replica_.committed_place();
  const Generation& g = membership_->current();
  const int world = g.world_size();
  // One max-reduction: the newest commit every holder has (they are at most
  // one step apart), how far any rank got, and each rank's rank and world
  // size in the generation of its commits and that generation's number,
  // which each knows itself (a generation that ended while it formed
  // trained nothing, so the commits may be older than the one before).
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  at::Tensor v = at::full({4 + world}, -1, at::kLong);
  auto* p = v.data_ptr<int64_t>();
  p[0] = held.empty() ? -kNone : -held.front();
  p[1] = reached;
  p[2] = place ? place->world : 0;
  p[3] = place ? commit_generation_ : -1;
  if (place) p[4 + g.rank] = place->rank;
  g.comm->all_reduce(v, ReduceOp::kMax);
  p = v.data_ptr<int64_t>();
  const int64_t agreed = -p[0];
  const int64_t furthest = p[1];
  TANDEM_CHECK(agreed != kNone,
               "elastic generation {}: no member holds a committed state (every earlier member "
               "is gone)",
               g.number);
  std::vector<int> old_rank;
  for (int r = 0; r < world; ++r) old_rank.push_back(static_cast<int>(p[4 + r]));
  const int old_world = static_cast<int>(p[2]);
  Recovered out;
  replica_.set_generation(p[3]);
  out.point = replica_.recover(*g.comm, agreed, old_rank, old_world);
  MembershipChange& c = out.change;
  c.generation = g.number;
  c.members = g.members;
  c.cause = g.cause;
  const auto detect = g.cause.find("detect_s");
  c.detect_seconds = detect != g.cause.end() && detect->is_number() ? detect->get<double>() : 0.0;
  const auto now = Clock::now();
  c.recovery_seconds = Seconds(now - since).count();
  c.membership_seconds = Seconds(reformed - since).count();
  c.state_seconds = Seconds(now - reformed).count();
  c.seen_unix_ms = unix_ms_at(since);
  c.step = out.point.base.step;
  const auto why = g.cause.find("cause");
  const bool failure = why != g.cause.end() && *why == "failure";
  c.steps_redone = failure ? std::max<int64_t>(furthest - c.step, 0) : 0;
  return out;
}

}  // namespace tandem::train
