// ParameterClient: a worker's side of the parameter-server strategies (see
// parameter_server.h for the modes). It cuts the worker's flat vectors into
// the servers' shards, sends each shard's request to its server and waits
// for every reply; other workers are never waited for, except where a mode
// makes the server hold the reply (the staleness bound, a backup quorum).
//
// Called on worker ranks only, from one thread. Every call blocks until all
// servers replied, each receive bounded by the communicator's timeout
// (TimeoutError naming the server). No collectives.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>

#include "tandem/comm/communicator.h"
#include "tandem/parallel/async/parameter_server.h"

namespace tandem::parallel {

// What the servers said about a push.
struct PsReply {
  int64_t version = 0;    // updates (kAsync, kElastic) or steps (kSync) applied, at server 0
  // kAsync: the staleness the servers recorded for this gradient; kElastic:
  // the exchanges of other workers since this worker's previous one.
  int64_t staleness = 0;
  bool finished = false;  // kSync: total_steps reached; stop training
  bool dropped = false;   // kSync: this gradient came too late and was dropped
};

class ParameterClient {
 public:
  // `numel` and `dtype`: the flat parameter vector every call works on.
  ParameterClient(std::shared_ptr<Communicator> comm, PsRoles roles, int64_t numel,
                  at::ScalarType dtype);
  ParameterClient(const ParameterClient&) = delete;
  ParameterClient& operator=(const ParameterClient&) = delete;

  // The servers' current parameters into `params` (flat, numel elements).
  PsReply pull(const at::Tensor& params);
  // kAsync: sends the gradient and the learning rate to apply it with;
  // `params` receives the parameters after the update.
  PsReply push_gradient(const at::Tensor& grad, double lr, const at::Tensor& params);
  // kSync: the gradient of server step `step` (the PsReply::version of the
  // parameters it was computed on); `params` receives the parameters after
  // that step (after the next one if the gradient was dropped).
  PsReply push_sync(const at::Tensor& grad, int64_t step, double lr, const at::Tensor& params);
  // kElastic: one elastic exchange; `params` (the worker's own) moves toward
  // the center by alpha times their difference, in place.
  PsReply elastic_exchange(const at::Tensor& params);
  // Tells every server this worker is finished. Call once, last.
  void done();

 private:
  PsReply request(int64_t kind, int64_t step, double lr, const at::Tensor* payload,
                  const at::Tensor& out, bool subtract);

  std::shared_ptr<Communicator> comm_;
  const PsRoles roles_;
  const int64_t numel_;
  const at::ScalarType dtype_;
  at::Tensor header_;        // float64 [kHeaderLength]
  at::Tensor reply_header_;  // float64 [kHeaderLength]
  at::Tensor scratch_;       // kElastic: the replies alpha (x - c)
  bool done_ = false;
};

}  // namespace tandem::parallel
