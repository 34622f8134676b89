#include "train/elastic_state.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/core/ScalarType.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <array>
#include <exception>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "tandem/comm/work.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"
#include "tandem/train/checkpoint.h"

namespace tandem::train {
namespace {

using nlohmann::json;

// Tags of the buddy exchange, which nothing else on a generation's
// communicator sends point to point.
constexpr int kHeaderTag = 15001;
constexpr int kLayoutTag = 15002;
constexpr int kPayloadTag = 15003;
// Tensors of a packed shard start at multiples of this, so that every
// dtype's view of the bytes is aligned.
constexpr int64_t kAlign = 64;

// One tensor of a packed shard: group `group`'s parameters (field "param")
// or one optimizer field, or the CPU RNG state (group -1).
struct Entry {
  int group = -1;
  std::string field;
  c10::ScalarType dtype = c10::kByte;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t nbytes = 0;
  bool operator==(const Entry&) const = default;
};

Entry entry(int group, std::string field) {
  Entry e;
  e.group = group;
  e.field = std::move(field);
  return e;
}

// A rank's shard at one commit, in one uint8 buffer: what goes to the buddy
// in one message.
struct Packed {
  std::vector<Entry> entries;
  at::Tensor bytes;
};

at::Tensor region(const at::Tensor& bytes, const Entry& e) {
  return bytes.narrow(0, e.offset, e.nbytes).view(e.dtype).view(e.shape);
}

std::string layout_text(const std::vector<Entry>& entries) {
  json out = json::array();
  for (const auto& e : entries) {
    out.push_back({e.group, e.field, static_cast<int>(e.dtype), e.shape, e.offset, e.nbytes});
  }
  return out.dump();
}

std::vector<Entry> layout_from_text(std::string_view text) {
  std::vector<Entry> out;
  for (const auto& j : json::parse(text)) {
    out.push_back({j[0].get<int>(), j[1].get<std::string>(),
                   static_cast<c10::ScalarType>(j[2].get<int>()), j[3].get<std::vector<int64_t>>(),
                   j[4].get<int64_t>(), j[5].get<int64_t>()});
  }
  return out;
}

// One commit: the state at the step boundary before `step`.
struct Commit {
  int64_t step = -1;  // -1: empty, or a commit that did not complete
  RunPosition at;
  int rank = 0;  // in the generation that committed it
  int world = 0;
  Checkpoint whole;  // none/ddp: the whole model and optimizer state
  // zero1-3: the groups' layouts and names (no tensors), this rank's shard,
  // the module's buffers, and the shard of rank (rank - 1 + world) % world.
  std::vector<ShardGroup> groups;
  Packed own;
  std::vector<std::pair<std::string, at::Tensor>> buffers;
  Packed buddy;
};

bool is_sharded_kind(StrategyKind k) {
  return k == StrategyKind::kZero1 || k == StrategyKind::kZero2 || k == StrategyKind::kZero3;
}

// Copies `src` into `dst`'s tensors where names, shapes and dtypes match,
// else makes `dst` clones of `src`.
void copy_named(std::vector<std::pair<std::string, at::Tensor>>& dst,
                const torch::OrderedDict<std::string, at::Tensor>& src) {
  bool same = dst.size() == src.size();
  for (size_t i = 0; same && i < src.size(); ++i) {
    const at::Tensor& t = src[i].value();
    same = dst[i].first == src[i].key() && dst[i].second.sizes() == t.sizes() &&
           dst[i].second.scalar_type() == t.scalar_type();
  }
  if (!same) {
    dst.clear();
    for (const auto& item : src) dst.emplace_back(item.key(), item.value().detach().clone());
    return;
  }
  for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].value().detach());
}

// Who holds what after a membership change; every rank computes the same.
struct Plan {
  std::vector<int> new_rank_of;  // old rank -> new rank; -1: it died
  // zero1-3: the new rank holding each old rank's shard, and whether as its
  // own (else as the buddy's copy). none/ddp: `source` holds the state.
  std::vector<int> holder;
  std::vector<bool> own;
  int source = -1;
  int lost = -1;  // an old rank whose state nobody holds; -1: none
};

Plan make_plan(const std::vector<int>& old_rank, int old_world, bool sharded) {
  Plan p;
  p.new_rank_of.assign(old_world, -1);
  for (size_t r = 0; r < old_rank.size(); ++r) {
    if (old_rank[r] >= 0) p.new_rank_of[old_rank[r]] = static_cast<int>(r);
  }
  if (!sharded) {
    for (size_t r = 0; r < old_rank.size() && p.source < 0; ++r) {
      if (old_rank[r] >= 0) p.source = static_cast<int>(r);
    }
    if (p.source < 0) p.lost = 0;
    return p;
  }
  for (int q = 0; q < old_world; ++q) {
    const int buddy = old_world > 1 ? p.new_rank_of[(q + 1) % old_world] : -1;
    p.holder.push_back(p.new_rank_of[q] >= 0 ? p.new_rank_of[q] : buddy);
    p.own.push_back(p.new_rank_of[q] >= 0);
    if (p.holder.back() < 0 && p.lost < 0) p.lost = q;
  }
  return p;
}

void check_arguments(const Communicator& comm, const std::vector<int>& old_rank, int old_world) {
  TANDEM_CHECK(static_cast<int>(old_rank.size()) == comm.size(),
               "rank {}: elastic recover: {} old ranks given for a generation of {} ranks",
               comm.rank(), old_rank.size(), comm.size());
  TANDEM_CHECK(old_world >= 1, "rank {}: elastic recover: the old generation has {} ranks",
               comm.rank(), old_world);
  std::vector<bool> seen(old_world, false);
  for (size_t r = 0; r < old_rank.size(); ++r) {
    const int q = old_rank[r];
    TANDEM_CHECK(q >= -1 && q < old_world && (q < 0 || !seen[q]),
                 "rank {}: elastic recover: new rank {} has old rank {}, which is not a fresh "
                 "rank of the {}-rank old generation (-1 for a joiner)",
                 comm.rank(), r, q, old_world);
    if (q >= 0) seen[q] = true;
  }
}

// Collective: rank `root`'s checkpoint bytes, decoded on every rank.
Checkpoint broadcast_checkpoint(Communicator& comm, int root, std::string& bytes,
                                const std::string& source) {
  at::Tensor length = at::empty({1}, at::kLong);
  length.data_ptr<int64_t>()[0] = static_cast<int64_t>(bytes.size());
  comm.broadcast(length, root);
  const int64_t n = length.data_ptr<int64_t>()[0];
  at::Tensor data =
      comm.rank() == root ? at::from_blob(bytes.data(), {n}, at::kByte) : at::empty({n}, at::kByte);
  comm.broadcast(data, root);
  return decode_checkpoint(
      std::string_view(static_cast<const char*>(data.data_ptr()), static_cast<size_t>(n)), source);
}

}  // namespace

struct StateReplica::Impl {
  explicit Impl(const TrainerOptions& options)
      : o(options), sharded(is_sharded_kind(options.strategy.kind)) {}

  TrainerOptions o;
  bool sharded;
  int64_t generation = 0;
  std::array<Commit, 2> commits;
  size_t next = 0;  // the slot the next commit overwrites: the older one
  // The buddy exchange sends a shard's layout only when it changed: the
  // last layout sent and received, on the communicator they belong to.
  const Communicator* exchange_comm = nullptr;
  std::optional<std::vector<Entry>> sent_layout;
  std::optional<std::vector<Entry>> received_layout;

  Commit* find(int64_t step) {
    Commit* best = nullptr;
    for (size_t k = 0; k < 2; ++k) {
      Commit& c = commits[(next + k) % 2];  // older first, so the newer one wins
      if (c.step == step) best = &c;
    }
    return best;
  }

  void commit_whole(Strategy& strategy, Commit& c);
  void commit_shard(Strategy& strategy, Commit& c);
  void exchange(Commit& c, Communicator& comm);

  void agree(Communicator& comm, int64_t step, const std::vector<int>& old_rank, int old_world,
             const Plan& plan);
  Checkpoint shard_file_of(const Commit& c, int q, int old_world) const;
  ResumePoint recover_whole(Communicator& comm, int64_t step, const std::vector<int>& old_rank,
                            int old_world, const Plan& plan);
  ResumePoint recover_shards(Communicator& comm, int64_t step, const std::vector<int>& old_rank,
                             int old_world, const Plan& plan);
  ResumePoint fall_back(Communicator& comm, const Plan& plan, int old_world) const;
};

// capture() clones the parameters and buffers and serializes the optimizer
// state: the Strategy interface offers no other way to the replicated
// strategies' optimizer.
void StateReplica::Impl::commit_whole(Strategy& strategy, Commit& c) {
  Checkpoint ck;
  strategy.capture(ck);
  ck.step = c.at.step;
  ck.epoch = c.at.epoch;
  ck.samples_in_epoch = c.at.samples_in_epoch;
  ck.seed = o.run.seed;
  ck.world_size = c.world;
  ck.meta = run_meta(o, c.world);
  capture_rng(ck);
  c.whole = std::move(ck);
}

void StateReplica::Impl::commit_shard(Strategy& strategy, Commit& c) {
  at::NoGradGuard no_grad;
  // Parameters come as views of the live shards, the optimizer fields as
  // copies (optimizer_state_of); both are copied into the commit's buffer.
  ShardedState state = strategy.sharded_state();
  Checkpoint rng;
  capture_rng(rng);
  std::vector<std::pair<Entry, at::Tensor>> items;
  c.groups.clear();
  for (size_t g = 0; g < state.groups.size(); ++g) {
    ShardGroup& grp = state.groups[g];
    items.push_back({entry(static_cast<int>(g), "param"), grp.params});
    for (auto& [field, t] : grp.optimizer) items.push_back({entry(static_cast<int>(g), field), t});
    c.groups.push_back({grp.layout, grp.names, {}, {}});
  }
  items.push_back({entry(-1, "rng"), rng.rng_state});
  std::vector<Entry> entries;
  int64_t offset = 0;
  for (auto& [e, t] : items) {
    e.dtype = t.scalar_type();
    e.shape = t.sizes().vec();
    e.offset = offset;
    e.nbytes = static_cast<int64_t>(t.nbytes());
    offset += (e.nbytes + kAlign - 1) / kAlign * kAlign;
    entries.push_back(e);
  }
  if (!c.own.bytes.defined() || c.own.bytes.numel() != offset) {
    c.own.bytes = at::empty({offset}, at::kByte);
  }
  c.own.entries = std::move(entries);
  for (size_t i = 0; i < items.size(); ++i) {
    region(c.own.bytes, c.own.entries[i]).copy_(items[i].second.detach());
  }
  copy_named(c.buffers, strategy.module()->named_buffers(true));
}

// Sends this rank's shard to rank (r + 1) % W and receives the shard of rank
// (r - 1 + W) % W: a header {step, payload bytes, layout bytes}, the layout
// when it changed, then the payload. Each call bounded by the
// communicator's timeout.
void StateReplica::Impl::exchange(Commit& c, Communicator& comm) {
  const int world = comm.size();
  const int right = (comm.rank() + 1) % world;
  const int left = (comm.rank() - 1 + world) % world;
  if (exchange_comm != &comm) {
    exchange_comm = &comm;
    sent_layout.reset();
    received_layout.reset();
  }
  std::string layout;
  if (sent_layout != c.own.entries) layout = layout_text(c.own.entries);
  at::Tensor header = at::empty({3}, at::kLong);
  auto* h = header.data_ptr<int64_t>();
  h[0] = c.at.step;
  h[1] = c.own.bytes.numel();
  h[2] = static_cast<int64_t>(layout.size());
  std::vector<std::shared_ptr<Work>> sends;
  sends.push_back(comm.send_async(header, right, kHeaderTag));
  if (!layout.empty()) {
    sends.push_back(comm.send_async(
        at::from_blob(layout.data(), {static_cast<int64_t>(layout.size())}, at::kByte), right,
        kLayoutTag));
  }
  sends.push_back(comm.send_async(c.own.bytes, right, kPayloadTag));

  std::exception_ptr error;
  try {
    at::Tensor theirs = at::empty({3}, at::kLong);
    comm.recv(theirs, left, kHeaderTag);
    const auto* t = theirs.data_ptr<int64_t>();
    TANDEM_ASSERT(t[0] == c.at.step,
                  "rank {}: elastic commit of step {}: rank {} sent its shard of step {}; every "
                  "rank commits at the same step boundaries",
                  comm.rank(), c.at.step, left, t[0]);
    if (t[2] > 0) {
      std::string text(static_cast<size_t>(t[2]), '\0');
      comm.recv(at::from_blob(text.data(), {t[2]}, at::kByte), left, kLayoutTag);
      received_layout = layout_from_text(text);
    }
    TANDEM_ASSERT(received_layout.has_value(),
                  "rank {}: elastic commit of step {}: rank {} sent no layout of its shard",
                  comm.rank(), c.at.step, left);
    c.buddy.entries = *received_layout;
    if (!c.buddy.bytes.defined() || c.buddy.bytes.numel() != t[1]) {
      c.buddy.bytes = at::empty({t[1]}, at::kByte);
    }
    comm.recv(c.buddy.bytes, left, kPayloadTag);
  } catch (...) {
    error = std::current_exception();
  }
  for (auto& w : sends) {
    try {
      w->wait(comm.timeout());
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  sent_layout = c.own.entries;
}

StateReplica::StateReplica(const TrainerOptions& o) : impl_(std::make_unique<Impl>(o)) {}
StateReplica::~StateReplica() = default;

void StateReplica::set_generation(int64_t generation) { impl_->generation = generation; }

void StateReplica::commit(Strategy& strategy, Communicator& comm, const RunPosition& at) {
  Impl& m = *impl_;
  if (!strategy.synchronous() || is_asynchronous(m.o)) {
    throw NotSupported(fmt::format(
        "elastic commits: --strategy {} is asynchronous; in-memory commits cover none, ddp and "
        "zero1-3",
        name_of(m.o.strategy.kind)));
  }
  TANDEM_ASSERT(strategy.sharded() == m.sharded,
                "elastic commit: --strategy {} but the strategy is {}sharded",
                name_of(m.o.strategy.kind), strategy.sharded() ? "" : "not ");
  Commit& c = m.commits[m.next];
  c.step = -1;  // until complete: a failure below leaves the other slot intact
  c.at = at;
  c.rank = comm.rank();
  c.world = comm.size();
  if (m.sharded) {
    m.commit_shard(strategy, c);
    if (comm.size() > 1) m.exchange(c, comm);
  } else {
    m.commit_whole(strategy, c);
  }
  c.step = at.step;
  m.next ^= 1;
}

std::vector<int64_t> StateReplica::committed_steps() const {
  std::vector<int64_t> steps;
  for (const auto& c : impl_->commits) {
    if (c.step >= 0) steps.push_back(c.step);
  }
  std::sort(steps.rbegin(), steps.rend());
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  return steps;
}

std::optional<StateReplica::Place> StateReplica::committed_place() const {
  for (const auto& c : impl_->commits) {
    if (c.step >= 0) return Place{.rank = c.rank, .world = c.world};
  }
  return std::nullopt;
}

void StateReplica::clear() {
  for (auto& c : impl_->commits) c = Commit{};
  impl_->next = 0;
  impl_->exchange_comm = nullptr;
  impl_->sent_layout.reset();
  impl_->received_layout.reset();
}

// Every rank learns every rank's (step, old world, holds its own commit of
// `step`, holds its buddy's); each checks that all agree and that the
// holders the plan names hold what it needs from them. Collective.
void StateReplica::Impl::agree(Communicator& comm, int64_t step, const std::vector<int>& old_rank,
                               int old_world, const Plan& plan) {
  const int me = comm.rank();
  const int world = comm.size();
  const Commit* c = find(step);
  const bool mine =
      old_rank[me] >= 0 && c != nullptr && c->rank == old_rank[me] && c->world == old_world;
  at::Tensor all = at::empty({4 * world}, at::kLong);
  at::Tensor in = at::empty({4}, at::kLong);
  auto* v = in.data_ptr<int64_t>();
  v[0] = step;
  v[1] = old_world;
  v[2] = mine ? 1 : 0;
  v[3] = mine && (!sharded || old_world == 1 || c->buddy.bytes.defined()) ? 1 : 0;
  comm.all_gather(all, in);
  const auto* a = all.data_ptr<int64_t>();
  for (int r = 0; r < world; ++r) {
    TANDEM_CHECK(a[4 * r] == step && a[4 * r + 1] == old_world,
                 "rank {}: elastic recover: this rank recovers step {} of a {}-rank generation "
                 "but rank {} step {} of a {}-rank one; every rank passes the same",
                 me, step, old_world, r, a[4 * r], a[4 * r + 1]);
  }
  if (plan.lost >= 0) return;
  auto need = [&](int r, bool own, int q) {
    TANDEM_CHECK(a[4 * r + (own ? 2 : 3)] == 1,
                 "rank {}: elastic recover: rank {} (rank {} of the old generation) holds no "
                 "in-memory commit of step {} {}; recover a step every survivor committed (the "
                 "oldest of their latest commits)",
                 me, r, old_rank[r], step,
                 own ? "of its own state" : fmt::format("of rank {}'s shard", q));
  };
  if (!sharded) {
    need(plan.source, true, -1);
    return;
  }
  for (int q = 0; q < old_world; ++q) need(plan.holder[q], plan.own[q], q);
}

// The file rank q of the old generation would have written at commit `c`
// (sharded_checkpoint.h), from this rank's own shard or its buddy's copy.
Checkpoint StateReplica::Impl::shard_file_of(const Commit& c, int q, int old_world) const {
  const Packed& packed = q == c.rank ? c.own : c.buddy;
  ShardedState state;
  state.groups = c.groups;
  Checkpoint base;
  base.step = c.at.step;
  base.epoch = c.at.epoch;
  base.samples_in_epoch = c.at.samples_in_epoch;
  base.seed = o.run.seed;
  base.meta = run_meta(o, old_world);
  // Rank 0's file holds the buffers: the holder's own, which every rank
  // keeps equal to rank 0's as the strategies broadcast them.
  base.buffers = c.buffers;
  for (const auto& e : packed.entries) {
    const at::Tensor t = region(packed.bytes, e);
    if (e.group < 0) {
      base.rng_state = t;
    } else if (e.field == "param") {
      state.groups.at(e.group).params = t;
    } else {
      state.groups.at(e.group).optimizer.emplace_back(e.field, t);
    }
  }
  return shard_checkpoint(std::move(base), state, q, old_world);
}

ResumePoint StateReplica::Impl::recover_whole(Communicator& comm, int64_t step,
                                              const std::vector<int>& old_rank, int old_world,
                                              const Plan& plan) {
  std::string bytes;
  if (comm.rank() == plan.source) bytes = encode_checkpoint(find(step)->whole);
  ResumePoint point;
  point.base = broadcast_checkpoint(
      comm, plan.source, bytes,
      fmt::format("the in-memory commit of step {} of rank {} of generation {}", step,
                  old_rank[plan.source], generation));
  rescale_sampler_position(point.base, old_world, comm.size());
  point.base.world_size = comm.size();
  return point;
}

ResumePoint StateReplica::Impl::recover_shards(Communicator& comm, int64_t step,
                                               const std::vector<int>& old_rank, int old_world,
                                               const Plan& plan) {
  std::vector<Checkpoint> files;
  for (int q = 0; q < old_world; ++q) {
    const int holder = plan.holder[q];
    std::string bytes;
    if (comm.rank() == holder) bytes = encode_checkpoint(shard_file_of(*find(step), q, old_world));
    files.push_back(broadcast_checkpoint(
        comm, holder, bytes,
        fmt::format("the in-memory commit of step {} of rank {}'s shard of generation {} (held "
                    "by rank {})",
                    step, q, generation, old_rank[holder])));
  }
  ResumePoint point;
  point.shards = reshard_checkpoints(std::move(files), comm.rank(), comm.size());
  point.base = point.shards->base;
  point.base.path =
      fmt::format("the in-memory commits of step {} of generation {}", step, generation);
  rescale_sampler_position(point.base, old_world, comm.size());
  point.base.world_size = comm.size();
  return point;
}

// Redundancy lost: the last on-disk checkpoint, at the new world size.
ResumePoint StateReplica::Impl::fall_back(Communicator& comm, const Plan& plan,
                                          int old_world) const {
  const int q = plan.lost;
  std::string cause;
  if (!sharded) {
    cause = fmt::format("all {} ranks of generation {} died, so no rank holds the model's state",
                        old_world, generation);
  } else if (old_world == 1) {
    cause = fmt::format("rank 0 of generation {} died, so its shard has no copy left", generation);
  } else {
    cause = fmt::format(
        "ranks {} and {} of generation {} both died, so rank {}'s shard has no "
        "copy left",
        q, (q + 1) % old_world, generation, q);
  }
  const std::string& dir = o.checkpoint.dir;
  const std::optional<std::string> latest =
      dir.empty() ? std::nullopt : find_latest_checkpoint(dir);
  if (!latest) {
    throw CheckpointError(fmt::format(
        "rank {}: elastic: {}, and {}; the redundancy is lost and nothing is left to resume from",
        comm.rank(), cause,
        dir.empty() ? std::string("--checkpoint-dir is unset")
                    : fmt::format("--checkpoint-dir '{}' holds no checkpoint", dir)));
  }
  ResumePoint point = read_resume_point(o, *latest, comm.rank(), comm.size(), old_world);
  if (comm.rank() == 0) {
    log::warn("elastic: {}; falling back to the checkpoint at step {} in {}", cause,
              point.base.step, dir);
  }
  return point;
}

ResumePoint StateReplica::recover(Communicator& comm, int64_t step,
                                  const std::vector<int>& old_rank, int old_world) {
  Impl& m = *impl_;
  if (is_asynchronous(m.o)) {
    throw NotSupported(
        fmt::format("elastic recover: --strategy {} is asynchronous", name_of(m.o.strategy.kind)));
  }
  check_arguments(comm, old_rank, old_world);
  // The new generation's exchanges start afresh, whatever its address.
  m.exchange_comm = nullptr;
  m.sent_layout.reset();
  m.received_layout.reset();
  const Plan plan = make_plan(old_rank, old_world, m.sharded);
  m.agree(comm, step, old_rank, old_world, plan);
  ResumePoint point;
  if (plan.lost >= 0) {
    point = m.fall_back(comm, plan, old_world);
  } else if (m.sharded) {
    point = m.recover_shards(comm, step, old_rank, old_world, plan);
  } else {
    point = m.recover_whole(comm, step, old_rank, old_world, plan);
  }
  ++m.generation;
  return point;
}

}  // namespace tandem::train
