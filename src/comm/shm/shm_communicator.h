// The shared-memory backend: a Communicator among processes of one host over
// one POSIX shm segment (see shm_segment.h). Collectives go through
// ShmCollectives, point-to-point through one ShmChannel per direction of each
// pair. Built by make_shm_communicator (backend.h). Thread-safety as for
// every Communicator: collectives one at a time; sends to one peer and
// receives from one peer each on their own lane, concurrently with them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/shm/shm_channel.h"
#include "comm/shm/shm_collectives.h"
#include "comm/shm/shm_segment.h"
#include "tandem/comm/backend.h"
#include "tandem/comm/communicator.h"

namespace tandem::comm::detail {

class ShmCommunicator final : public Communicator {
 public:
  // Collective over options.size ranks; setup is bounded by `setup_timeout`.
  ShmCommunicator(const BackendOptions& options, Millis setup_timeout);
  ~ShmCommunicator() override;

  std::string backend() const override { return "shm"; }

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
  // Posts the abort in the segment: every rank's waits end with PeerError.
  void do_abort(const std::string& reason) override;
  void do_send(const at::Tensor& tensor, int dst, int tag, const OpContext& ctx) override;
  void do_recv(const at::Tensor& tensor, int src, int tag, const OpContext& ctx) override;
  std::shared_ptr<Communicator> do_split(const std::vector<int>& members, const std::string& name,
                                         const OpContext& ctx) override;

 private:
  const std::shared_ptr<Store> store_;
  const std::string group_name_;
  const std::unique_ptr<ShmSegment> segment_;
  ShmCollectives collectives_;                      // collective lane only
  std::vector<std::unique_ptr<ShmChannel>> sends_;  // by destination; null for this rank
  std::vector<std::unique_ptr<ShmChannel>> recvs_;  // by source; null for this rank
};

}  // namespace tandem::comm::detail
