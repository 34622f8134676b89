#include "comm/shm/shm_communicator.h"

#include <fmt/format.h>

#include <algorithm>

#include "tandem/core/check.h"

namespace tandem {
namespace comm::detail {
namespace {

std::byte* bytes_of(const at::Tensor& t) { return static_cast<std::byte*>(t.data_ptr()); }

size_t byte_size(const at::Tensor& t) {
  return static_cast<size_t>(t.numel()) * static_cast<size_t>(t.element_size());
}

}  // namespace

ShmCommunicator::ShmCommunicator(const BackendOptions& options, Millis setup_timeout)
    : Communicator(options.rank, options.size, options.timeout),
      store_(options.store),
      group_name_(options.group_name),
      segment_(ShmSegment::attach(options, setup_timeout)),
      collectives_(*segment_, wait_policy_for(options.size)) {
  WaitPolicy policy = wait_policy_for(options.size);
  sends_.resize(static_cast<size_t>(size()));
  recvs_.resize(static_cast<size_t>(size()));
  for (int peer = 0; peer < size(); ++peer) {
    if (peer == rank()) continue;
    sends_[peer] = std::make_unique<ShmChannel>(*segment_, rank(), peer, policy);
    recvs_[peer] = std::make_unique<ShmChannel>(*segment_, peer, rank(), policy);
  }
}

// Queued asynchronous operations finish (each bounded by its deadline) before
// the segment is unmapped. Peers keep their own mappings, so unmapping here
// never pulls memory from under them.
ShmCommunicator::~ShmCommunicator() { stop_executor(); }

void ShmCommunicator::do_all_reduce(const at::Tensor& tensor, ReduceOp op, const OpContext& ctx) {
  collectives_.all_reduce(bytes_of(tensor), tensor.numel(), tensor.scalar_type(), op, ctx);
}

void ShmCommunicator::do_broadcast(const at::Tensor& tensor, int root, const OpContext& ctx) {
  collectives_.broadcast(bytes_of(tensor), tensor.numel(), tensor.element_size(), root, ctx);
}

void ShmCommunicator::do_all_gather(const at::Tensor& output, const at::Tensor& input,
                                    const OpContext& ctx) {
  collectives_.all_gather(bytes_of(output), bytes_of(input), output.numel(), output.element_size(),
                          ctx);
}

void ShmCommunicator::do_reduce_scatter(const at::Tensor& output, const at::Tensor& input,
                                        ReduceOp op, const OpContext& ctx) {
  collectives_.reduce_scatter(bytes_of(output), bytes_of(input), input.numel(), input.scalar_type(),
                              op, ctx);
}

void ShmCommunicator::do_all_to_all(const at::Tensor& output, const at::Tensor& input,
                                    const OpContext& ctx) {
  collectives_.all_to_all(bytes_of(output), bytes_of(input), input.numel(), input.element_size(),
                          ctx);
}

void ShmCommunicator::do_barrier(const OpContext& ctx) { collectives_.barrier(ctx); }

void ShmCommunicator::do_abort(const std::string& reason) {
  segment_->post_abort(AbortKind::kPeer, reason);
}

void ShmCommunicator::do_send(const at::Tensor& tensor, int dst, int tag, const OpContext& ctx) {
  sends_[dst]->send(bytes_of(tensor), byte_size(tensor), tag, ctx);
}

void ShmCommunicator::do_recv(const at::Tensor& tensor, int src, int tag, const OpContext& ctx) {
  recvs_[src]->recv(bytes_of(tensor), byte_size(tensor), tag, ctx);
}

// Members build a communicator of their own over a new segment, meeting
// through the parent's store under the split's name; the others return at
// once. No parent state is touched, so the parent stays usable.
std::shared_ptr<Communicator> ShmCommunicator::do_split(const std::vector<int>& members,
                                                        const std::string& name,
                                                        const OpContext& ctx) {
  collectives_.enter(ctx);
  auto it = std::find(members.begin(), members.end(), rank());
  if (it == members.end()) return nullptr;
  BackendOptions options;
  options.rank = static_cast<int>(it - members.begin());
  options.size = static_cast<int>(members.size());
  options.store = store_ ? with_prefix(store_, name) : nullptr;
  options.timeout = timeout();
  options.group_name = group_name_ + "." + name;
  Millis setup = std::max(ctx.deadline.remaining(), Millis(1));
  return std::make_shared<ShmCommunicator>(options, setup);
}

}  // namespace comm::detail

std::shared_ptr<Communicator> make_shm_communicator(const BackendOptions& options) {
  TANDEM_CHECK(options.size >= 1, "make_shm_communicator: size must be >= 1 (got {})",
               options.size);
  TANDEM_CHECK(options.rank >= 0 && options.rank < options.size,
               "make_shm_communicator: rank {} is outside [0, {})", options.rank, options.size);
  TANDEM_CHECK(options.timeout.count() > 0,
               "make_shm_communicator: timeout must be positive (got {} ms)",
               options.timeout.count());
  TANDEM_CHECK(options.store || options.size == 1,
               "make_shm_communicator: rank {} of {}: BackendOptions::store is null; the ranks "
               "meet through a store",
               options.rank, options.size);
  TANDEM_CHECK(!options.group_name.empty(), "make_shm_communicator: group_name is empty");
  return std::make_shared<comm::detail::ShmCommunicator>(options, options.timeout);
}

}  // namespace tandem
