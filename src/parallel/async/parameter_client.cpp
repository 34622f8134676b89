#include "tandem/parallel/async/parameter_client.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

#include "parallel/async/ps_protocol.h"
#include "tandem/core/check.h"

namespace tandem::parallel {

using detail::kHeaderLength;
using detail::kHeaderTag;
using detail::kPayloadTag;
using detail::PsKind;

ParameterClient::ParameterClient(std::shared_ptr<Communicator> comm, PsRoles roles, int64_t numel,
                                 at::ScalarType dtype)
    : comm_(std::move(comm)), roles_(roles), numel_(numel), dtype_(dtype) {
  TANDEM_CHECK(comm_ != nullptr, "ParameterClient: the communicator is null");
  TANDEM_CHECK(roles_.workers + roles_.servers == comm_->size(),
               "ParameterClient: {} workers + {} servers do not make the {} ranks",
               roles_.workers, roles_.servers, comm_->size());
  TANDEM_CHECK(!roles_.is_server(comm_->rank()),
               "ParameterClient: rank {} is a server (ranks [{}, {})); build a ParameterServer "
               "there",
               comm_->rank(), roles_.workers, comm_->size());
  header_ = at::zeros({kHeaderLength}, at::kDouble);
  reply_header_ = at::zeros({kHeaderLength}, at::kDouble);
  scratch_ = at::empty({numel_}, at::TensorOptions().dtype(dtype_));
}

PsReply ParameterClient::request(int64_t kind, int64_t step, double lr, const at::Tensor* payload,
                                 const at::Tensor& out, bool subtract) {
  TANDEM_CHECK(!done_, "ParameterClient: rank {} already said done", comm_->rank());
  TANDEM_CHECK(out.numel() == numel_ && out.is_contiguous() && out.scalar_type() == dtype_,
               "ParameterClient: the flat tensor must be contiguous with {} elements of {} (got "
               "{} of {})",
               numel_, c10::toString(dtype_), out.numel(), c10::toString(out.scalar_type()));
  double* h = header_.data_ptr<double>();
  h[0] = static_cast<double>(kind);
  h[1] = static_cast<double>(step);
  h[2] = lr;
  // Every request goes out before any reply is awaited, so the servers work
  // on their shards at the same time.
  for (int s = 0; s < roles_.servers; ++s) {
    const ShardRange r = roles_.shard(numel_, s);
    comm_->send(header_, roles_.server_rank(s), kHeaderTag);
    if (payload != nullptr) {
      comm_->send(payload->narrow(0, r.offset, r.numel).contiguous(), roles_.server_rank(s),
                  kPayloadTag);
    }
  }
  PsReply reply;
  for (int s = 0; s < roles_.servers; ++s) {
    const ShardRange r = roles_.shard(numel_, s);
    comm_->recv(reply_header_, roles_.server_rank(s), kHeaderTag);
    const at::Tensor into = (subtract ? scratch_ : out).narrow(0, r.offset, r.numel);
    comm_->recv(into, roles_.server_rank(s), kPayloadTag);
    const double* rh = reply_header_.data_ptr<double>();
    if (s == 0) reply.version = static_cast<int64_t>(rh[0]);
    reply.staleness = std::max(reply.staleness, static_cast<int64_t>(rh[1]));
    reply.finished = reply.finished || rh[2] != 0.0;
    reply.dropped = reply.dropped || rh[3] != 0.0;
  }
  if (subtract) out.sub_(scratch_);
  return reply;
}

PsReply ParameterClient::pull(const at::Tensor& params) {
  return request(static_cast<int64_t>(PsKind::kPull), 0, 0.0, nullptr, params, false);
}

PsReply ParameterClient::push_gradient(const at::Tensor& grad, double lr,
                                       const at::Tensor& params) {
  TANDEM_CHECK(grad.numel() == numel_, "ParameterClient: the gradient has {} elements, not {}",
               grad.numel(), numel_);
  return request(static_cast<int64_t>(PsKind::kPushGradient), 0, lr, &grad, params, false);
}

PsReply ParameterClient::push_sync(const at::Tensor& grad, int64_t step, double lr,
                                   const at::Tensor& params) {
  TANDEM_CHECK(grad.numel() == numel_, "ParameterClient: the gradient has {} elements, not {}",
               grad.numel(), numel_);
  return request(static_cast<int64_t>(PsKind::kPushSync), step, lr, &grad, params, false);
}

PsReply ParameterClient::elastic_exchange(const at::Tensor& params) {
  return request(static_cast<int64_t>(PsKind::kElastic), 0, 0.0, &params, params, true);
}

void ParameterClient::done() {
  if (done_) return;
  header_.data_ptr<double>()[0] = static_cast<double>(PsKind::kDone);
  for (int s = 0; s < roles_.servers; ++s) comm_->send(header_, roles_.server_rank(s), kHeaderTag);
  done_ = true;
}

}  // namespace tandem::parallel
