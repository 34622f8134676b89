#include "tandem/comm/rendezvous.h"

#include <fmt/format.h>
#include <unistd.h>
#include <xxhash.h>

#include <charconv>
#include <climits>
#include <map>
#include <random>
#include <string_view>

#include "comm/join.h"
#include "comm/timeout_hints.h"
#include "tandem/comm/backend.h"
#include "tandem/core/check.h"
#include "tandem/core/log.h"

namespace tandem {
namespace {

// An integer variable that becomes an int: bounded by INT_MAX, so that a
// value too large for an int is an error rather than a silent wrap.
std::optional<int> get_int32(const env::Lookup& lookup, const std::string& name, int min) {
  auto v = env::get_int(lookup, name, min, INT_MAX);
  if (!v) return std::nullopt;
  return static_cast<int>(*v);
}

// One count of SLURM_NTASKS_PER_NODE: a whole number in [1, INT_MAX].
int parse_slurm_count(std::string_view text, const std::string& value) {
  int out = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  const bool whole = ptr == end && (ec == std::errc() || ec == std::errc::result_out_of_range);
  TANDEM_CHECK(whole && !text.empty(),
               "environment variable SLURM_NTASKS_PER_NODE='{}' is not a list of task counts "
               "like '4', '4(x2)' or '2(x3),1'",
               value);
  TANDEM_CHECK(ec == std::errc() && out >= 1,
               "environment variable SLURM_NTASKS_PER_NODE='{}' holds the count '{}', out of "
               "range [1, {}]",
               value, text, INT_MAX);
  return out;
}

// "2(x3),1" -> 2: Slurm's compressed per-node task counts; the first node's
// count is this job's tasks per node when all nodes are alike. The whole
// value is checked, so that "4x" is an error, not 4.
std::optional<int> slurm_tasks_per_node(const env::Lookup& lookup) {
  auto v = env::get(lookup, "SLURM_NTASKS_PER_NODE");
  if (!v) return std::nullopt;
  std::optional<int> first;
  std::string_view rest(*v);
  while (true) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    const size_t paren = item.find('(');
    if (paren != std::string_view::npos) {
      std::string_view repeat = item.substr(paren);
      TANDEM_CHECK(repeat.size() > 3 && repeat.substr(0, 2) == "(x" && repeat.back() == ')',
                   "environment variable SLURM_NTASKS_PER_NODE='{}' is not a list of task "
                   "counts like '4', '4(x2)' or '2(x3),1'",
                   *v);
      parse_slurm_count(repeat.substr(2, repeat.size() - 3), *v);
      item = item.substr(0, paren);
    }
    const int count = parse_slurm_count(item, *v);
    if (!first) first = count;
    if (comma == std::string_view::npos) return first;
    rest = rest.substr(comma + 1);
  }
}

void read_master(const env::Lookup& lookup, RendezvousInfo& info, bool required) {
  auto addr = env::get(lookup, "MASTER_ADDR");
  auto port = env::get_int(lookup, "MASTER_PORT", 1, 65535);
  if (required && info.world_size > 1) {
    TANDEM_CHECK(addr && port,
                 "rendezvous: RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not; "
                 "launch with tandem-run or torchrun, or set both");
  }
  if (addr) info.master_addr = *addr;
  if (port) info.master_port = static_cast<int>(*port);
}

std::string token_digest(const std::string& salt, const std::string& token) {
  std::string data = salt + '\0' + token;
  XXH128_hash_t h = XXH3_128bits(data.data(), data.size());
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}

std::string random_hex(int bytes) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bytes; ++i) out += fmt::format("{:02x}", rd() & 0xff);
  return out;
}

std::string host_id() {
  if (const char* v = std::getenv("TANDEM_HOST_ID"); v && *v) return v;
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

// Rank 0 publishes a salted digest of its token; every other process checks
// its own against it before it writes any key of its rank, so a refused
// process leaves the job untouched. The digest is not a cryptographic proof:
// the token keeps processes of another job (or a stale restart) out; it does
// not make the store safe on a hostile network.
void check_token(Store& store, const RendezvousInfo& info, Millis timeout) {
  if (info.rank == 0) {
    std::string salt = random_hex(16);
    store.set("rdzv/token_salt", salt);
    store.set("rdzv/token_digest", token_digest(salt, info.token));
    return;
  }
  std::string salt = store.get("rdzv/token_salt", timeout);
  std::string want = store.get("rdzv/token_digest", timeout);
  if (token_digest(salt, info.token) != want) {
    throw InvalidArgument(fmt::format(
        "rank {}: rendezvous at {}:{} refused this process: its TANDEM_RDZV_TOKEN {} the job's; "
        "it was not admitted and the job carries on without it",
        info.rank, info.master_addr, info.master_port,
        info.token.empty() ? "is unset, which does not match" : "does not match"));
  }
}

BackendOptions backend_options(int rank, int size, std::shared_ptr<Store> store,
                               const std::string& name, Millis timeout) {
  BackendOptions o;
  o.rank = rank;
  o.size = size;
  o.store = with_prefix(std::move(store), name);
  o.timeout = timeout;
  o.group_name = name;
  return o;
}

}  // namespace

struct Rendezvous::Layout {
  std::vector<std::vector<int>> hosts;  // world ranks per host, in order of first rank
  int my_host = 0;
  bool regular = true;  // numbered host by host, equal counts
};

namespace {

std::unique_ptr<Rendezvous::Layout> exchange_hosts(Store& store, const RendezvousInfo& info,
                                                   Millis timeout) {
  store.set(fmt::format("rdzv/host/{}", info.rank), host_id());
  detail::join_group(store, info.rank, info.world_size, timeout, "rendezvous",
                     detail::kRendezvousTimeoutHint);
  std::map<std::string, int> index;
  auto l = std::make_unique<Rendezvous::Layout>();
  for (int r = 0; r < info.world_size; ++r) {
    std::string h = store.get(fmt::format("rdzv/host/{}", r), timeout);
    auto [it, fresh] = index.emplace(h, static_cast<int>(l->hosts.size()));
    if (fresh) l->hosts.emplace_back();
    l->hosts[it->second].push_back(r);
    if (r == info.rank) l->my_host = it->second;
  }
  size_t per = l->hosts[0].size();
  for (size_t h = 0; h < l->hosts.size(); ++h) {
    if (l->hosts[h].size() != per) l->regular = false;
    for (size_t i = 0; i < l->hosts[h].size(); ++i) {
      if (l->hosts[h][i] != static_cast<int>(h * per + i)) l->regular = false;
    }
  }
  return l;
}

}  // namespace

Backend parse_backend(std::string_view name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "shm") return Backend::kShm;
  if (name == "gloo") return Backend::kGloo;
  if (name == "mpi") return Backend::kMpi;
  if (name == "nccl") {
    throw NotSupported(
        "backend 'nccl': no NCCL backend exists yet (Tandem's backends run on CPU tensors); "
        "choose auto, shm, gloo or mpi");
  }
  throw InvalidArgument(fmt::format("unknown backend '{}'; choose auto, shm, gloo or mpi", name));
}

std::string_view to_string(Backend backend) {
  switch (backend) {
    case Backend::kAuto:
      return "auto";
    case Backend::kShm:
      return "shm";
    case Backend::kGloo:
      return "gloo";
    case Backend::kMpi:
      return "mpi";
  }
  return "?";
}

namespace {

// An explicit InitOptions value, else the variable, else the default.
Millis resolve_timeout(const std::optional<Millis>& given, std::string_view field,
                       const env::Lookup& lookup, const std::string& variable, Millis fallback) {
  if (given) {
    TANDEM_CHECK(given->count() > 0,
                 "InitOptions::{} must be positive (got {} ms); there is no 'wait forever'", field,
                 given->count());
    return *given;
  }
  return env::get_seconds(lookup, variable).value_or(fallback);
}

}  // namespace

InitTimeouts resolve_timeouts(const InitOptions& options, const env::Lookup& lookup) {
  InitTimeouts out;
  out.timeout =
      resolve_timeout(options.timeout, "timeout", lookup, "TANDEM_COMM_TIMEOUT", kDefaultTimeout);
  out.rendezvous_timeout = resolve_timeout(options.rendezvous_timeout, "rendezvous_timeout", lookup,
                                           "TANDEM_RDZV_TIMEOUT", kDefaultRendezvousTimeout);
  return out;
}

namespace {

void read_torchrun(const env::Lookup& lookup, int rank, int world, RendezvousInfo& info) {
  info.source = "torchrun";
  info.rank = rank;
  info.world_size = world;
  info.local_rank = get_int32(lookup, "LOCAL_RANK", 0).value_or(rank);
  info.local_world_size = get_int32(lookup, "LOCAL_WORLD_SIZE", 1).value_or(world);
  auto node = get_int32(lookup, "GROUP_RANK", 0);
  if (!node) node = get_int32(lookup, "TANDEM_NODE_RANK", 0);
  info.node_rank = node.value_or(0);
  read_master(lookup, info, /*required=*/true);
}

// A launcher's rank and world size: `rank` (read from `rank_var`) and
// `size_var`, which must be set with it.
void read_launcher_world(const env::Lookup& lookup, const char* source, int rank,
                         const char* rank_var, const char* size_var, RendezvousInfo& info) {
  info.source = source;
  info.rank = rank;
  auto size = get_int32(lookup, size_var, 1);
  TANDEM_CHECK(size, "rendezvous: {} is set but {} is not", rank_var, size_var);
  info.world_size = *size;
}

void read_open_mpi(const env::Lookup& lookup, int rank, RendezvousInfo& info) {
  read_launcher_world(lookup, "mpi", rank, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", info);
  info.local_rank = get_int32(lookup, "OMPI_COMM_WORLD_LOCAL_RANK", 0).value_or(info.rank);
  info.local_world_size =
      get_int32(lookup, "OMPI_COMM_WORLD_LOCAL_SIZE", 1).value_or(info.world_size);
  info.node_rank = info.rank / std::max(info.local_world_size, 1);
  read_master(lookup, info, /*required=*/false);
}

void read_slurm(const env::Lookup& lookup, int rank, RendezvousInfo& info) {
  read_launcher_world(lookup, "slurm", rank, "SLURM_PROCID", "SLURM_NTASKS", info);
  info.local_rank = get_int32(lookup, "SLURM_LOCALID", 0).value_or(0);
  info.local_world_size = slurm_tasks_per_node(lookup).value_or(1);
  info.node_rank = get_int32(lookup, "SLURM_NODEID", 0).value_or(0);
  if (auto launch = env::get(lookup, "SLURM_LAUNCH_NODE_IPADDR")) info.master_addr = *launch;
  read_master(lookup, info, /*required=*/false);
}

}  // namespace

RendezvousInfo read_rendezvous_env(const env::Lookup& lookup) {
  RendezvousInfo info;
  auto rank = get_int32(lookup, "RANK", 0);
  auto world = get_int32(lookup, "WORLD_SIZE", 1);
  if (rank || world) {
    TANDEM_CHECK(rank && world, "rendezvous: {} is set but {} is not; set both (tandem-run does)",
                 rank ? "RANK" : "WORLD_SIZE", rank ? "WORLD_SIZE" : "RANK");
    read_torchrun(lookup, *rank, *world, info);
  } else if (auto orank = get_int32(lookup, "OMPI_COMM_WORLD_RANK", 0)) {
    read_open_mpi(lookup, *orank, info);
  } else if (auto srank = get_int32(lookup, "SLURM_PROCID", 0)) {
    read_slurm(lookup, *srank, info);
  }
  TANDEM_CHECK(info.rank < info.world_size,
               "rendezvous ({}): rank {} is not below the world size {}", info.source, info.rank,
               info.world_size);
  TANDEM_CHECK(info.local_rank >= 0 && info.local_rank < std::max(info.local_world_size, 1),
               "rendezvous ({}): local rank {} is not below the local world size {}", info.source,
               info.local_rank, info.local_world_size);
  info.restart_count = get_int32(lookup, "TANDEM_RESTART_COUNT", 0).value_or(0);
  if (auto token = env::get(lookup, "TANDEM_RDZV_TOKEN")) info.token = *token;
  if (auto served = env::get(lookup, "TANDEM_STORE_SERVED")) {
    TANDEM_CHECK(*served == "0" || *served == "1",
                 "environment variable TANDEM_STORE_SERVED='{}' must be 0 or 1", *served);
    info.store_served = *served == "1";
  }
  return info;
}

namespace {

// The job's store: in-process for a lone process; else a TCP client, or the
// server on rank 0 unless the launcher serves it. Under a served store each
// restart's keys go under their own prefix, since the store outlives them.
std::shared_ptr<Store> open_store(const RendezvousInfo& info, Millis timeout) {
  if (info.world_size == 1 && info.source == "single") return make_memory_store();
  const bool serve = info.rank == 0 && !info.store_served;
  auto store = make_tcp_store(info.master_addr, info.master_port, serve, timeout);
  if (!info.store_served) return store;
  return with_prefix(std::move(store), fmt::format("r{}", info.restart_count));
}

}  // namespace

Rendezvous::Rendezvous(const RendezvousInfo& info, Millis timeout)
    : Rendezvous(info, nullptr, timeout) {}

Rendezvous::Rendezvous(const RendezvousInfo& info, std::shared_ptr<Store> store, Millis timeout)
    : info_(info), store_(std::move(store)) {
  log::set_rank(info.rank);
  try {
    if (!store_) store_ = open_store(info, timeout);
    check_token(*store_, info, timeout);
    if (info.rank == 0) store_->set("rdzv/job", random_hex(6));
    job_ = store_->get("rdzv/job", timeout);
    layout_ = exchange_hosts(*store_, info, timeout);
  } catch (const TimeoutError& e) {
    // The store's own messages cannot know which setting bounded the wait.
    std::string what = e.what();
    if (what.find("TANDEM_RDZV_TIMEOUT") != std::string::npos) throw;
    throw TimeoutError(fmt::format("rank {}: rendezvous: {}; {}", info.rank, what,
                                   detail::kRendezvousTimeoutHint));
  }
}

Rendezvous::~Rendezvous() = default;

int Rendezvous::hosts() const { return static_cast<int>(layout_->hosts.size()); }

int Rendezvous::local_world_size() const {
  return static_cast<int>(layout_->hosts[layout_->my_host].size());
}

int Rendezvous::local_rank() const {
  const auto& mine = layout_->hosts[layout_->my_host];
  return static_cast<int>(std::find(mine.begin(), mine.end(), info_.rank) - mine.begin());
}

std::shared_ptr<Communicator> Rendezvous::communicator(Backend b, Millis timeout) {
  const auto& info = info_;
  const bool one_host = hosts() == 1;
  const std::string world = fmt::format("tandem-{}-r{}-g{}", job_, info.restart_count, groups_++);
  auto world_opts = backend_options(info.rank, info.world_size, store_, world, timeout);

  if (b == Backend::kMpi) return make_mpi_communicator(world_opts);
  if (b == Backend::kGloo) return make_gloo_communicator(world_opts, one_host ? "127.0.0.1" : "");
  if (b == Backend::kShm) {
    TANDEM_CHECK(one_host,
                 "init: backend 'shm' needs every rank on one host, but the job spans "
                 "{} hosts; use 'auto' or 'gloo'",
                 hosts());
    return make_shm_communicator(world_opts);
  }
  // auto
  if (one_host) return make_shm_communicator(world_opts);
  auto global = make_gloo_communicator(world_opts, "");
  int per_host = local_world_size();
  if (per_host == 1 || !layout_->regular) {
    if (!layout_->regular) {
      log::info("init: ranks are not numbered host by host with equal counts; using flat gloo");
    }
    return global;
  }
  auto local = make_shm_communicator(backend_options(
      local_rank(), per_host, store_, fmt::format("{}-host{}", world, layout_->my_host), timeout));
  auto cross = make_gloo_communicator(
      backend_options(layout_->my_host, hosts(), store_,
                      fmt::format("{}-cross{}", world, local_rank()), timeout),
      "");
  return make_hierarchical_communicator(info.rank, info.world_size, local, cross, global, timeout);
}

std::shared_ptr<Communicator> init(const RendezvousInfo& info, const InitOptions& options) {
  const InitTimeouts timeouts = resolve_timeouts(options);
  // The communicator keeps the store alive; the rendezvous object itself may go.
  Rendezvous rdzv(info, timeouts.rendezvous_timeout);
  return rdzv.communicator(options.backend, timeouts.timeout);
}

std::shared_ptr<Communicator> init(const InitOptions& options) {
  return init(read_rendezvous_env(), options);
}

}  // namespace tandem
