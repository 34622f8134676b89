// MpiCommunicator: the Communicator over an MPI communicator (OpenMPI).
// Built by make_mpi_communicator (over MPI_COMM_WORLD) and by split.
//
// Every operation starts MPI's non-blocking form (MPI_Iallreduce, MPI_Isend,
// ...) and polls it with MPI_Test and backoff until it completes or the
// operation's deadline passes, so nothing waits without bound. See Note [MPI
// timeouts] in mpi_communicator.cpp for what a timeout leaves behind, and
// Note [MPI counts] in mpi_collectives.cpp for tensors of more elements than
// an MPI count (an int) can hold.
//
// Thread-safety follows the Communicator contract: collectives run one at a
// time on one duplicate of the group's MPI communicator; sends and receives,
// which may run on other threads at the same time, use a second duplicate, so
// their traffic never mixes with the collectives' (MPI_THREAD_MULTIPLE).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/mpi/mpi_runtime.h"
#include "comm/progress_board.h"
#include "tandem/comm/backend.h"
#include "tandem/comm/communicator.h"

namespace tandem::detail {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `collective_comm` and `p2p_comm`, two duplicates of
  // one MPI communicator in which this process has rank `rank` of `size`.
  // `store` (may be null) carries the progress board that lets timeouts name
  // the ranks missing. Every MPI call moves at most `max_count` elements
  // (at most INT_MAX, MPI's count type).
  MpiCommunicator(int rank, int size, Millis timeout, MpiCommHandle collective_comm,
                  MpiCommHandle p2p_comm, std::shared_ptr<Store> store, int64_t max_count);
  ~MpiCommunicator() override;

  std::string backend() const override { return "mpi"; }

 protected:
  void do_all_reduce(const at::Tensor& tensor, ReduceOp op, const OpContext& ctx) override;
  void do_broadcast(const at::Tensor& tensor, int root, const OpContext& ctx) override;
  void do_all_gather(const at::Tensor& output, const at::Tensor& input,
                     const OpContext& ctx) override;
  void do_reduce_scatter(const at::Tensor& output, const at::Tensor& input, ReduceOp op,
                         const OpContext& ctx) override;
  void do_all_to_all(const at::Tensor& output, const at::Tensor& input,
                     const OpContext& ctx) override;
  void do_barrier(const OpContext& ctx) override;
  void do_send(const at::Tensor& tensor, int dst, int tag, const OpContext& ctx) override;
  void do_recv(const at::Tensor& tensor, int src, int tag, const OpContext& ctx) override;
  std::shared_ptr<Communicator> do_split(const std::vector<int>& members, const std::string& name,
                                         const OpContext& ctx) override;

 private:
  // Records that this rank entered collective ctx.seq, for the board.
  void enter(const OpContext& ctx);
  // Polls a collective's request until done or ctx.deadline; on the deadline
  // hands the request and `a`/`b` (its buffers) to the runtime and throws
  // TimeoutError naming the ranks missing (from the board, when there is
  // one). Throws PeerError if MPI reports an error.
  void wait_collective(MPI_Request& request, const OpContext& ctx, const at::Tensor& a,
                       const at::Tensor& b = at::Tensor());
  // The same for a send or receive with `peer`: on the deadline it cancels
  // the request first. Returns the status of the completed request.
  MPI_Status wait_p2p(MPI_Request& request, int peer, const OpContext& ctx,
                      const at::Tensor& buffer);
  // Sends or receives `count` elements at `data` (of `buffer`) as one MPI
  // message; a receive checks the length that arrived.
  void send_piece(const at::Tensor& buffer, const void* data, int count, MPI_Datatype type, int dst,
                  int tag, const OpContext& ctx);
  void recv_piece(const at::Tensor& buffer, void* data, int count, MPI_Datatype type, int src,
                  int tag, const OpContext& ctx);
  // Throws PeerError naming the MPI call and the operation unless rc is
  // MPI_SUCCESS.
  void check_mpi(int rc, const char* call, const OpContext& ctx) const;
  // Throws InvalidArgument for a tag above MPI's largest (MPI_TAG_UB).
  void check_tag(int tag, const OpContext& ctx) const;
  // "rank 2 (world rank 5)" or "rank 2" for the world communicator.
  std::string describe_peer(int peer) const;

  MpiRuntime& runtime_;
  MpiCommHandle collective_comm_;
  MpiCommHandle p2p_comm_;
  std::shared_ptr<Store> store_;          // null: built without one
  std::unique_ptr<ProgressBoard> board_;  // null without a store
  const int64_t max_count_;
  // MPI_COMM_WORLD ranks of this group's members, by group rank.
  std::vector<int> world_ranks_;
  bool is_world_ = false;
};

// make_mpi_communicator with every MPI call cut into pieces of at most
// `max_count` elements (the public factory: INT_MAX, the most an MPI count
// holds). Tests lower it to check the pieced paths against whole calls.
std::shared_ptr<Communicator> make_pieced_mpi_communicator(const BackendOptions& options,
                                                           int64_t max_count);

}  // namespace tandem::detail
