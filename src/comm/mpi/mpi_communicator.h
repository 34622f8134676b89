// MpiCommunicator: the Communicator over an MPI communicator (OpenMPI).
// Built by make_mpi_communicator (over MPI_COMM_WORLD) and by split.
//
// Every operation starts MPI's non-blocking form (MPI_Iallreduce, MPI_Isend,
// ...) and polls it with MPI_Test and backoff until it completes or the
// operation's deadline passes, so nothing waits without bound. See Note [MPI
// timeouts] in mpi_communicator.cpp for what a timeout leaves behind.
//
// Thread-safety follows the Communicator contract: collectives run one at a
// time on one duplicate of the group's MPI communicator; sends and receives,
// which may run on other threads at the same time, use a second duplicate, so
// their traffic never mixes with the collectives' (MPI_THREAD_MULTIPLE).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/mpi/mpi_runtime.h"
#include "tandem/comm/communicator.h"

namespace tandem::detail {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `collective_comm` and `p2p_comm`, two duplicates of
  // one MPI communicator in which this process has rank `rank` of `size`.
  MpiCommunicator(int rank, int size, Millis timeout, MpiCommHandle collective_comm,
                  MpiCommHandle p2p_comm);
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
  // Polls a collective's request until done or ctx.deadline; on the deadline
  // hands the request and `a`/`b` (its buffers) to the runtime and throws
  // TimeoutError. Throws PeerError if MPI reports an error.
  void wait_collective(MPI_Request& request, const OpContext& ctx, const at::Tensor& a,
                       const at::Tensor& b = at::Tensor());
  // The same for a send or receive with `peer`: on the deadline it cancels
  // the request first. Returns the status of the completed request.
  MPI_Status wait_p2p(MPI_Request& request, int peer, const OpContext& ctx,
                      const at::Tensor& buffer);
  // Throws PeerError naming the MPI call and the operation unless rc is
  // MPI_SUCCESS.
  void check_mpi(int rc, const char* call, const OpContext& ctx) const;
  // `numel` as an MPI count; throws NotSupported beyond INT_MAX.
  int mpi_count(int64_t numel, const OpContext& ctx) const;
  // "rank 2 (world rank 5)" or "rank 2" for the world communicator.
  std::string describe_peer(int peer) const;
  // Fills counts_ and displs_ with every rank's shard_range of `numel`.
  void fill_shard_counts(int64_t numel, const OpContext& ctx);

  MpiRuntime& runtime_;
  MpiCommHandle collective_comm_;
  MpiCommHandle p2p_comm_;
  // MPI_COMM_WORLD ranks of this group's members, by group rank.
  std::vector<int> world_ranks_;
  bool is_world_ = false;
  // Scratch for all_gather/reduce_scatter; used by collectives only, which
  // run one at a time (see the Communicator contract).
  std::vector<int> counts_;
  std::vector<int> displs_;
};

}  // namespace tandem::detail
