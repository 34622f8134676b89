#include "comm/mpi/mpi_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <climits>

#include "comm/join.h"
#include "comm/mpi/mpi_pieces.h"
#include "comm/timeout_hints.h"
#include "tandem/comm/backend.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem {
namespace detail {

// Note [MPI timeouts]
// Each operation starts MPI's non-blocking form and polls MPI_Test with
// backoff until ctx.deadline. A timed-out receive is cancelled (MPI_Cancel);
// a send usually cannot be, and a started collective never can be (MPI
// forbids cancelling or freeing its request). Such requests go to the
// runtime with their tensors, which stay allocated because MPI may still
// touch them. The communicator is then unusable (the base class marks it):
// its collective sequence no longer matches the other ranks'. MPI cannot
// say which ranks have not reached a collective without another collective,
// so each rank also posts the last collective it entered to the job's store
// (the progress board, when the communicator has a store: every one init()
// builds does), and a collective timeout names the ranks behind or silent.
// Without a store it names the group, and the operation's number (#seq, the
// same on every rank) tells which ranks' logs stop earlier.

// Note [MPI setup]
// MPI has no non-blocking MPI_Comm_split, and MPI_Comm_dup/MPI_Comm_split
// block until every member calls them. To keep setup bounded they run only
// after a bounded wait has shown that every member got there: the factory
// first waits for every rank at the store (naming those missing), when it
// has one, and then on an MPI_Ibarrier over MPI_COMM_WORLD; split() runs just
// after the base class's all_gather of the colours, which every rank of the
// group completed.

namespace {

constexpr Millis kCancelGrace{100};
constexpr size_t kMaxRanksNamed = 16;

std::vector<int> world_ranks_of(MPI_Comm comm, int size) {
  MPI_Group group;
  MPI_Group world_group;
  MPI_Comm_group(comm, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  std::vector<int> ranks(static_cast<size_t>(size));
  std::vector<int> out(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) ranks[static_cast<size_t>(r)] = r;
  MPI_Group_translate_ranks(group, size, ranks.data(), world_group, out.data());
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
  return out;
}

}  // namespace

MpiCommunicator::MpiCommunicator(int rank, int size, Millis timeout, MpiCommHandle collective_comm,
                                 MpiCommHandle p2p_comm, std::shared_ptr<Store> store,
                                 int64_t max_count)
    : Communicator(rank, size, timeout),
      runtime_(MpiRuntime::instance()),
      collective_comm_(std::move(collective_comm)),
      p2p_comm_(std::move(p2p_comm)),
      store_(std::move(store)),
      max_count_(max_count) {
  TANDEM_ASSERT(max_count_ >= 1 && max_count_ <= INT_MAX, "MPI piece of {} elements", max_count_);
  // Errors come back as codes, which become tandem errors, instead of
  // aborting the job.
  MPI_Comm_set_errhandler(collective_comm_.get(), MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(p2p_comm_.get(), MPI_ERRORS_RETURN);
  world_ranks_ = world_ranks_of(collective_comm_.get(), size);
  is_world_ = size == runtime_.world_size();
  for (int r = 0; r < size; ++r) is_world_ = is_world_ && world_ranks_[static_cast<size_t>(r)] == r;
  if (store_) board_ = std::make_unique<ProgressBoard>(with_prefix(store_, "board"), rank, size);
  runtime_.attach();
}

MpiCommunicator::~MpiCommunicator() {
  stop_executor();
  board_.reset();
  collective_comm_ = MpiCommHandle();
  p2p_comm_ = MpiCommHandle();
  runtime_.detach();
}

void MpiCommunicator::enter(const OpContext& ctx) {
  if (board_) board_->enter(ctx.seq);
}

void MpiCommunicator::check_mpi(int rc, const char* call, const OpContext& ctx) const {
  if (rc == MPI_SUCCESS) return;
  // A collective that failed: the board says which ranks are behind or gone.
  const std::string peers =
      board_ && ctx.seq > 0 ? fmt::format(" ({})", board_->describe_peers(ctx.seq)) : "";
  throw PeerError(
      fmt::format("rank {}: {} failed in {}: {}{}; this communicator is unusable now, "
                  "rebuild it",
                  rank(), call, ctx.description, mpi_error_text(rc), peers));
}

void MpiCommunicator::check_tag(int tag, const OpContext& ctx) const {
  TANDEM_CHECK(tag <= runtime_.tag_ub(), "rank {}: {}: tag {} exceeds MPI's largest tag {}", rank(),
               ctx.name, tag, runtime_.tag_ub());
}

std::string MpiCommunicator::describe_peer(int peer) const {
  if (is_world_) return fmt::format("rank {}", peer);
  return fmt::format("rank {} (world rank {})", peer, world_ranks_[static_cast<size_t>(peer)]);
}

void MpiCommunicator::wait_collective(MPI_Request& request, const OpContext& ctx,
                                      const at::Tensor& a, const at::Tensor& b) {
  int rc = MPI_SUCCESS;
  if (poll_until(request, ctx.deadline, MPI_STATUS_IGNORE, rc)) {
    check_mpi(rc, "MPI_Test", ctx);
    return;
  }
  std::vector<at::Tensor> buffers;
  if (a.defined()) buffers.push_back(a);
  if (b.defined()) buffers.push_back(b);
  runtime_.abandon(request, std::move(buffers));
  std::string members;
  if (!is_world_) {
    std::vector<int> named(world_ranks_.begin(),
                           world_ranks_.begin() + std::min(world_ranks_.size(), kMaxRanksNamed));
    members = fmt::format(" (world ranks {}{})", fmt::join(named, ", "),
                          world_ranks_.size() > kMaxRanksNamed ? ", ..." : "");
  }
  const std::string missing =
      board_ ? board_->describe_peers(ctx.seq)
             : fmt::format(
                   "MPI cannot tell which ranks are missing and this communicator has no store "
                   "to ask (build it through init(), or pass BackendOptions::store), but "
                   "collectives are numbered alike on every rank, so look for ranks whose logs "
                   "stop before #{}",
                   ctx.seq);
  throw TimeoutError(fmt::format(
      "rank {}: {} timed out after {} waiting for the other {} rank(s) of this {}-rank MPI "
      "group{}: {}; read those ranks' logs, or {} if they are only slow. This communicator is "
      "unusable now (MPI cannot cancel a started collective); rebuild it",
      rank(), ctx.description, format_duration(ctx.deadline.elapsed()), size() - 1, size(), members,
      missing, kCommTimeoutHint));
}

MPI_Status MpiCommunicator::wait_p2p(MPI_Request& request, int peer, const OpContext& ctx,
                                     const at::Tensor& buffer) {
  // MPI_Test leaves status.MPI_ERROR undefined; it carries MPI_Test's code here.
  MPI_Status status;
  int rc = MPI_SUCCESS;
  if (poll_until(request, ctx.deadline, &status, rc)) {
    status.MPI_ERROR = rc;
    return status;
  }
  // Cancelling a receive is local; give MPI a short, bounded while to do it.
  MPI_Cancel(&request);
  Deadline grace(kCancelGrace);
  if (poll_until(request, grace, &status, rc) && rc == MPI_SUCCESS) {
    int cancelled = 0;
    MPI_Test_cancelled(&status, &cancelled);
    if (!cancelled) {  // it completed after all
      status.MPI_ERROR = MPI_SUCCESS;
      return status;
    }
  } else {
    runtime_.abandon(request, {buffer});
  }
  throw TimeoutError(fmt::format(
      "rank {}: {} timed out after {} waiting for {}; check that rank {} posts the matching {} "
      "with the same tag and is not stuck, or {}",
      rank(), ctx.description, format_duration(ctx.deadline.elapsed()), describe_peer(peer), peer,
      ctx.name == "send" ? "recv" : "send", kCommTimeoutHint));
}

void MpiCommunicator::send_piece(const at::Tensor& buffer, const void* data, int count,
                                 MPI_Datatype type, int dst, int tag, const OpContext& ctx) {
  MPI_Request request;
  check_mpi(MPI_Isend(data, count, type, dst, tag, p2p_comm_.get(), &request), "MPI_Isend", ctx);
  MPI_Status status = wait_p2p(request, dst, ctx, buffer);
  check_mpi(status.MPI_ERROR, "MPI_Isend", ctx);
}

void MpiCommunicator::recv_piece(const at::Tensor& buffer, void* data, int count, MPI_Datatype type,
                                 int src, int tag, const OpContext& ctx) {
  MPI_Request request;
  check_mpi(MPI_Irecv(data, count, type, src, tag, p2p_comm_.get(), &request), "MPI_Irecv", ctx);
  MPI_Status status = wait_p2p(request, src, ctx, buffer);
  int error_class = MPI_SUCCESS;
  if (status.MPI_ERROR != MPI_SUCCESS) MPI_Error_class(status.MPI_ERROR, &error_class);
  int got = 0;
  if (error_class == MPI_SUCCESS) MPI_Get_count(&status, type, &got);
  TANDEM_CHECK(error_class != MPI_ERR_TRUNCATE && got == count,
               "rank {}: {}: {} sent {} than the {} elements this tensor holds; sender and "
               "receiver must use the same length and dtype",
               rank(), ctx.description, describe_peer(src),
               error_class == MPI_ERR_TRUNCATE ? "more" : fmt::format("{}, fewer", got), count);
  check_mpi(status.MPI_ERROR, "MPI_Irecv", ctx);
}

// A message longer than max_count_ goes as a header (its length, one int64)
// and then pieces of at most max_count_ elements, in order (MPI keeps the
// order of messages with one source, tag and communicator), so that the
// receiver can check the length before it takes the pieces.
void MpiCommunicator::do_send(const at::Tensor& tensor, int dst, int tag, const OpContext& ctx) {
  check_tag(tag, ctx);
  MPI_Datatype type = runtime_.datatype(tensor.scalar_type());
  const int64_t n = tensor.numel();
  if (n > max_count_) {
    const int64_t header = n;
    send_piece(tensor, &header, 1, MPI_INT64_T, dst, tag, ctx);
  }
  for_each_piece(n, max_count_, /*at_least_one=*/true, [&](int64_t offset, int count) {
    send_piece(tensor, element_at(tensor, offset), count, type, dst, tag, ctx);
  });
}

void MpiCommunicator::do_recv(const at::Tensor& tensor, int src, int tag, const OpContext& ctx) {
  check_tag(tag, ctx);
  MPI_Datatype type = runtime_.datatype(tensor.scalar_type());
  const int64_t n = tensor.numel();
  if (n > max_count_) {
    int64_t header = -1;
    recv_piece(tensor, &header, 1, MPI_INT64_T, src, tag, ctx);
    TANDEM_CHECK(header == n,
                 "rank {}: {}: {} sent {} elements but this tensor holds {}; sender and receiver "
                 "must use the same length and dtype",
                 rank(), ctx.description, describe_peer(src), header, n);
  }
  for_each_piece(n, max_count_, /*at_least_one=*/true, [&](int64_t offset, int count) {
    recv_piece(tensor, element_at(tensor, offset), count, type, src, tag, ctx);
  });
}

std::shared_ptr<Communicator> MpiCommunicator::do_split(const std::vector<int>& members,
                                                        const std::string& name,
                                                        const OpContext& ctx) {
  // See Note [MPI setup]. Groups are disjoint, so the smallest member names
  // each one; the MPI key puts members in new-rank order.
  auto me = std::find(members.begin(), members.end(), rank());
  int color = MPI_UNDEFINED;
  int key = 0;
  if (me != members.end()) {
    color = *std::min_element(members.begin(), members.end());
    key = static_cast<int>(me - members.begin());
  }
  MpiCommHandle collective;
  check_mpi(MPI_Comm_split(collective_comm_.get(), color, key, collective.reset()),
            "MPI_Comm_split", ctx);
  if (collective.get() == MPI_COMM_NULL) return nullptr;
  MpiCommHandle p2p;
  check_mpi(MPI_Comm_dup(collective.get(), p2p.reset()), "MPI_Comm_dup", ctx);
  int new_rank = -1;
  MPI_Comm_rank(collective.get(), &new_rank);
  TANDEM_ASSERT(new_rank == key, "MPI_Comm_split gave rank {} where {} was expected", new_rank,
                key);
  MPI_Comm_set_name(collective.get(), fmt::format("tandem:{}", name).c_str());
  return std::make_shared<MpiCommunicator>(
      key, static_cast<int>(members.size()), timeout(), std::move(collective), std::move(p2p),
      store_ ? with_prefix(store_, name) : nullptr, max_count_);
}

namespace {

// See Note [MPI setup]: every rank of MPI_COMM_WORLD has called the factory
// once this returns; else TimeoutError (naming the missing ranks, with a
// store) or PeerError.
void wait_for_world(const BackendOptions& options, MpiRuntime& runtime) {
  Deadline deadline(options.timeout, "BackendOptions::timeout");
  if (options.store) {
    join_group(*options.store, options.rank, options.size, options.timeout,
               fmt::format("mpi setup of group '{}'", options.group_name), kCommTimeoutHint);
  }
  MPI_Request request;
  int rc = MPI_Ibarrier(MPI_COMM_WORLD, &request);
  if (rc == MPI_SUCCESS && !poll_until(request, deadline, MPI_STATUS_IGNORE, rc)) {
    runtime.abandon(request, {});
    throw TimeoutError(fmt::format(
        "rank {}: make_mpi_communicator timed out after {} waiting for the other {} rank(s) of "
        "MPI_COMM_WORLD to call it; check that every rank creates the MPI communicator, or {}",
        options.rank, format_duration(deadline.elapsed()), options.size - 1, kCommTimeoutHint));
  }
  if (rc != MPI_SUCCESS) {
    throw PeerError(fmt::format("rank {}: make_mpi_communicator: MPI_Ibarrier failed: {}",
                                options.rank, mpi_error_text(rc)));
  }
}

}  // namespace

std::shared_ptr<Communicator> make_pieced_mpi_communicator(const BackendOptions& options,
                                                           int64_t max_count) {
  auto& runtime = MpiRuntime::instance();
  TANDEM_CHECK(options.rank == runtime.world_rank() && options.size == runtime.world_size(),
               "make_mpi_communicator: BackendOptions says rank {} of {}, but this process is "
               "rank {} of {} in MPI_COMM_WORLD; pass the MPI world rank and size (the job was "
               "launched with -np {}) and use split()/new_group() for sub-groups",
               options.rank, options.size, runtime.world_rank(), runtime.world_size(),
               runtime.world_size());
  TANDEM_CHECK(max_count >= 1 && max_count <= INT_MAX,
               "make_pieced_mpi_communicator: max_count {} is outside [1, {}]", max_count, INT_MAX);
  wait_for_world(options, runtime);
  MpiCommHandle collective;
  MpiCommHandle p2p;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, collective.reset());
  if (rc == MPI_SUCCESS) rc = MPI_Comm_dup(MPI_COMM_WORLD, p2p.reset());
  if (rc != MPI_SUCCESS) {
    throw PeerError(
        fmt::format("rank {}: make_mpi_communicator: setting up over "
                    "MPI_COMM_WORLD failed: {}",
                    options.rank, mpi_error_text(rc)));
  }
  MPI_Comm_set_name(collective.get(), fmt::format("tandem:{}", options.group_name).c_str());
  return std::make_shared<MpiCommunicator>(options.rank, options.size, options.timeout,
                                           std::move(collective), std::move(p2p), options.store,
                                           max_count);
}

}  // namespace detail

std::shared_ptr<Communicator> make_mpi_communicator(const BackendOptions& options) {
  return detail::make_pieced_mpi_communicator(options, INT_MAX);
}

bool mpi_available() { return true; }

}  // namespace tandem
