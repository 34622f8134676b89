#include "comm/mpi/mpi_communicator.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <type_traits>

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
// so collective timeouts name the group instead; the operation's number
// (#seq, the same on every rank) tells which ranks' logs stop earlier.

// Note [MPI setup]
// MPI has no non-blocking MPI_Comm_split, and MPI_Comm_dup/MPI_Comm_split
// block until every member calls them. To keep setup bounded they run only
// after a bounded wait has shown that every member got there: the factory
// first waits on an MPI_Ibarrier over MPI_COMM_WORLD, and split() runs just
// after the base class's all_gather of the colours, which every rank of the
// group completed.

namespace {

constexpr Millis kCancelGrace{100};
constexpr size_t kMaxRanksNamed = 16;

// Polls `request` until it completes or `deadline` passes (false). An MPI
// error ends the wait early, with `rc` set to it.
bool poll_until(MPI_Request& request, const Deadline& deadline, MPI_Status* status, int& rc) {
  Backoff backoff;
  int done = 0;
  while (true) {
    rc = MPI_Test(&request, &done, status);
    if (rc != MPI_SUCCESS || done) return true;
    if (deadline.expired()) return false;
    backoff.pause();
  }
}

template <typename T>
void divide_in_place(void* data, int64_t n, int divisor) {
  T* p = static_cast<T*>(data);
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_integral_v<T>) {
      p[i] /= divisor;  // truncates toward zero, as torch.div(..., rounding_mode="trunc")
    } else if constexpr (std::is_floating_point_v<T>) {
      p[i] /= static_cast<T>(divisor);
    } else {
      p[i] = static_cast<T>(static_cast<float>(p[i]) / static_cast<float>(divisor));
    }
  }
}

// kAvg: the sum divided by the group size.
void divide(const at::Tensor& t, int divisor) {
  void* p = t.data_ptr();
  int64_t n = t.numel();
  switch (t.scalar_type()) {
    case at::kFloat:
      return divide_in_place<float>(p, n, divisor);
    case at::kDouble:
      return divide_in_place<double>(p, n, divisor);
    case at::kInt:
      return divide_in_place<int32_t>(p, n, divisor);
    case at::kLong:
      return divide_in_place<int64_t>(p, n, divisor);
    case at::kHalf:
      return divide_in_place<c10::Half>(p, n, divisor);
    case at::kBFloat16:
      return divide_in_place<c10::BFloat16>(p, n, divisor);
    default:
      throw InternalError(
          fmt::format("MPI backend: cannot average dtype {}", c10::toString(t.scalar_type())));
  }
}

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
                                 MpiCommHandle p2p_comm)
    : Communicator(rank, size, timeout),
      runtime_(MpiRuntime::instance()),
      collective_comm_(std::move(collective_comm)),
      p2p_comm_(std::move(p2p_comm)) {
  // Errors come back as codes, which become tandem errors, instead of
  // aborting the job.
  MPI_Comm_set_errhandler(collective_comm_.get(), MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(p2p_comm_.get(), MPI_ERRORS_RETURN);
  world_ranks_ = world_ranks_of(collective_comm_.get(), size);
  is_world_ = size == runtime_.world_size();
  for (int r = 0; r < size; ++r) is_world_ = is_world_ && world_ranks_[static_cast<size_t>(r)] == r;
  counts_.resize(static_cast<size_t>(size));
  displs_.resize(static_cast<size_t>(size));
  runtime_.attach();
}

MpiCommunicator::~MpiCommunicator() {
  stop_executor();
  collective_comm_ = MpiCommHandle();
  p2p_comm_ = MpiCommHandle();
  runtime_.detach();
}

void MpiCommunicator::check_mpi(int rc, const char* call, const OpContext& ctx) const {
  if (rc == MPI_SUCCESS) return;
  throw PeerError(
      fmt::format("rank {}: {} failed in {}: {}; this communicator is unusable now, "
                  "rebuild it",
                  rank(), call, ctx.description, mpi_error_text(rc)));
}

int MpiCommunicator::mpi_count(int64_t numel, const OpContext& ctx) const {
  if (numel > INT_MAX) {
    throw NotSupported(fmt::format(
        "rank {}: {}: {} elements exceed MPI's 32-bit count limit ({}); split the tensor", rank(),
        ctx.description, numel, INT_MAX));
  }
  return static_cast<int>(numel);
}

std::string MpiCommunicator::describe_peer(int peer) const {
  if (is_world_) return fmt::format("rank {}", peer);
  return fmt::format("rank {} (world rank {})", peer, world_ranks_[static_cast<size_t>(peer)]);
}

void MpiCommunicator::fill_shard_counts(int64_t numel, const OpContext& ctx) {
  mpi_count(numel, ctx);
  for (int r = 0; r < size(); ++r) {
    ShardRange s = shard_range(numel, size(), r);
    counts_[static_cast<size_t>(r)] = static_cast<int>(s.numel);
    displs_[static_cast<size_t>(r)] = static_cast<int>(s.offset);
  }
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
  throw TimeoutError(fmt::format(
      "rank {}: {} timed out after {} waiting for the other {} rank(s) of this {}-rank MPI "
      "group{} to reach it; MPI cannot tell which ranks are missing, but collectives are "
      "numbered alike on every rank, so look for ranks whose logs stop before #{}. Raise the "
      "communicator timeout (BackendOptions::timeout) or the call's timeout argument if they "
      "are only slow. This communicator is unusable now (MPI cannot cancel a started "
      "collective); rebuild it",
      rank(), ctx.description, format_duration(ctx.deadline.elapsed()), size() - 1, size(), members,
      ctx.seq));
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
      "with the same tag and is not stuck, or raise the communicator timeout "
      "(BackendOptions::timeout) or the call's timeout argument",
      rank(), ctx.description, format_duration(ctx.deadline.elapsed()), describe_peer(peer), peer,
      ctx.name == "send" ? "recv" : "send"));
}

void MpiCommunicator::do_all_reduce(const at::Tensor& tensor, ReduceOp op, const OpContext& ctx) {
  const int count = mpi_count(tensor.numel(), ctx);
  if (count == 0) return;  // every rank has the same length, so all skip
  const at::ScalarType dtype = tensor.scalar_type();
  MPI_Request request;
  check_mpi(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(), count, runtime_.datatype(dtype),
                           runtime_.op(dtype, op), collective_comm_.get(), &request),
            "MPI_Iallreduce", ctx);
  wait_collective(request, ctx, tensor);
  if (op == ReduceOp::kAvg) divide(tensor, size());
}

void MpiCommunicator::do_broadcast(const at::Tensor& tensor, int root, const OpContext& ctx) {
  const int count = mpi_count(tensor.numel(), ctx);
  if (count == 0) return;
  MPI_Request request;
  check_mpi(MPI_Ibcast(tensor.data_ptr(), count, runtime_.datatype(tensor.scalar_type()), root,
                       collective_comm_.get(), &request),
            "MPI_Ibcast", ctx);
  wait_collective(request, ctx, tensor);
}

void MpiCommunicator::do_all_gather(const at::Tensor& output, const at::Tensor& input,
                                    const OpContext& ctx) {
  if (output.numel() == 0) return;
  fill_shard_counts(output.numel(), ctx);
  MPI_Datatype type = runtime_.datatype(output.scalar_type());
  // MPI forbids overlapping send and receive buffers; an input that is this
  // rank's own slice of the output (ZeRO's flat buffers) goes in place.
  const void* send = input.data_ptr();
  const char* own_slice = static_cast<const char*>(output.data_ptr()) +
                          displs_[static_cast<size_t>(rank())] * output.element_size();
  if (send == own_slice) send = MPI_IN_PLACE;
  MPI_Request request;
  check_mpi(MPI_Iallgatherv(send, counts_[static_cast<size_t>(rank())], type, output.data_ptr(),
                            counts_.data(), displs_.data(), type, collective_comm_.get(), &request),
            "MPI_Iallgatherv", ctx);
  wait_collective(request, ctx, output, input);
}

void MpiCommunicator::do_reduce_scatter(const at::Tensor& output, const at::Tensor& input,
                                        ReduceOp op, const OpContext& ctx) {
  if (input.numel() == 0) return;
  fill_shard_counts(input.numel(), ctx);
  const at::ScalarType dtype = input.scalar_type();
  MPI_Request request;
  check_mpi(MPI_Ireduce_scatter(input.data_ptr(), output.data_ptr(), counts_.data(),
                                runtime_.datatype(dtype), runtime_.op(dtype, op),
                                collective_comm_.get(), &request),
            "MPI_Ireduce_scatter", ctx);
  wait_collective(request, ctx, output, input);
  if (op == ReduceOp::kAvg) divide(output, size());
}

void MpiCommunicator::do_all_to_all(const at::Tensor& output, const at::Tensor& input,
                                    const OpContext& ctx) {
  mpi_count(input.numel(), ctx);
  const int chunk = static_cast<int>(input.numel() / size());
  if (chunk == 0) return;
  MPI_Datatype type = runtime_.datatype(input.scalar_type());
  MPI_Request request;
  check_mpi(MPI_Ialltoall(input.data_ptr(), chunk, type, output.data_ptr(), chunk, type,
                          collective_comm_.get(), &request),
            "MPI_Ialltoall", ctx);
  wait_collective(request, ctx, output, input);
}

void MpiCommunicator::do_barrier(const OpContext& ctx) {
  MPI_Request request;
  check_mpi(MPI_Ibarrier(collective_comm_.get(), &request), "MPI_Ibarrier", ctx);
  wait_collective(request, ctx, at::Tensor());
}

void MpiCommunicator::do_send(const at::Tensor& tensor, int dst, int tag, const OpContext& ctx) {
  TANDEM_CHECK(tag <= runtime_.tag_ub(), "rank {}: send: tag {} exceeds MPI's largest tag {}",
               rank(), tag, runtime_.tag_ub());
  MPI_Request request;
  check_mpi(MPI_Isend(tensor.data_ptr(), mpi_count(tensor.numel(), ctx),
                      runtime_.datatype(tensor.scalar_type()), dst, tag, p2p_comm_.get(), &request),
            "MPI_Isend", ctx);
  MPI_Status status = wait_p2p(request, dst, ctx, tensor);
  check_mpi(status.MPI_ERROR, "MPI_Isend", ctx);
}

void MpiCommunicator::do_recv(const at::Tensor& tensor, int src, int tag, const OpContext& ctx) {
  TANDEM_CHECK(tag <= runtime_.tag_ub(), "rank {}: recv: tag {} exceeds MPI's largest tag {}",
               rank(), tag, runtime_.tag_ub());
  const int count = mpi_count(tensor.numel(), ctx);
  MPI_Datatype type = runtime_.datatype(tensor.scalar_type());
  MPI_Request request;
  check_mpi(MPI_Irecv(tensor.data_ptr(), count, type, src, tag, p2p_comm_.get(), &request),
            "MPI_Irecv", ctx);
  MPI_Status status = wait_p2p(request, src, ctx, tensor);
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
  return std::make_shared<MpiCommunicator>(key, static_cast<int>(members.size()), timeout(),
                                           std::move(collective), std::move(p2p));
}

}  // namespace detail

std::shared_ptr<Communicator> make_mpi_communicator(const BackendOptions& options) {
  auto& runtime = detail::MpiRuntime::instance();
  TANDEM_CHECK(options.rank == runtime.world_rank() && options.size == runtime.world_size(),
               "make_mpi_communicator: BackendOptions says rank {} of {}, but this process is "
               "rank {} of {} in MPI_COMM_WORLD; pass the MPI world rank and size (the job was "
               "launched with -np {}) and use split()/new_group() for sub-groups",
               options.rank, options.size, runtime.world_rank(), runtime.world_size(),
               runtime.world_size());
  Deadline deadline(options.timeout, "BackendOptions::timeout");
  // See Note [MPI setup].
  MPI_Request request;
  int rc = MPI_Ibarrier(MPI_COMM_WORLD, &request);
  if (rc == MPI_SUCCESS && !detail::poll_until(request, deadline, MPI_STATUS_IGNORE, rc)) {
    runtime.abandon(request, {});
    throw TimeoutError(fmt::format(
        "rank {}: make_mpi_communicator timed out after {} waiting for the other {} rank(s) of "
        "MPI_COMM_WORLD to call it; check that every rank creates the MPI communicator, or "
        "raise BackendOptions::timeout",
        options.rank, format_duration(deadline.elapsed()), options.size - 1));
  }
  detail::MpiCommHandle collective;
  detail::MpiCommHandle p2p;
  if (rc == MPI_SUCCESS) rc = MPI_Comm_dup(MPI_COMM_WORLD, collective.reset());
  if (rc == MPI_SUCCESS) rc = MPI_Comm_dup(MPI_COMM_WORLD, p2p.reset());
  if (rc != MPI_SUCCESS) {
    throw PeerError(
        fmt::format("rank {}: make_mpi_communicator: setting up over "
                    "MPI_COMM_WORLD failed: {}",
                    options.rank, detail::mpi_error_text(rc)));
  }
  MPI_Comm_set_name(collective.get(), fmt::format("tandem:{}", options.group_name).c_str());
  return std::make_shared<detail::MpiCommunicator>(options.rank, options.size, options.timeout,
                                                   std::move(collective), std::move(p2p));
}

bool mpi_available() { return true; }

}  // namespace tandem
