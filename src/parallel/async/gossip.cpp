#include "tandem/parallel/async/gossip.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>

#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/core/log.h"

namespace tandem::parallel {
namespace {

// A message is float64 [kind, weight, x...]; one length for every kind, so a
// service thread can receive whatever its peer sends next with one tag.
constexpr int kGossipTag = 7200;
constexpr double kPush = 1, kAsk = 2, kAnswer = 3, kBye = 4;
constexpr int64_t kHeader = 2;

int64_t total_numel(const std::vector<at::Tensor>& params) {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

}  // namespace

GossipMixer::GossipMixer(std::shared_ptr<Communicator> comm, std::vector<at::Tensor> params,
                         GossipOptions options)
    : comm_(std::move(comm)),
      params_(std::move(params)),
      options_(options),
      numel_(total_numel(params_)),
      peers_(options.seed, comm_ ? comm_->rank() : 0) {
  TANDEM_CHECK(comm_ != nullptr, "GossipMixer: the communicator is null");
  TANDEM_CHECK(comm_->size() >= 2, "gossip needs at least 2 workers (got {})", comm_->size());
  said_bye_.assign(static_cast<size_t>(comm_->size()), false);
  said_bye_[static_cast<size_t>(comm_->rank())] = true;
  for (int p = 0; p < comm_->size(); ++p) {
    if (p == comm_->rank()) continue;
    threads_.emplace_back([this, p] {
      try {
        serve(p);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!failure_) failure_ = std::current_exception();
        answered_.notify_all();
      }
    });
  }
}

GossipMixer::~GossipMixer() {
  if (finished_) return;
  try {
    finish();
  } catch (const std::exception& e) {
    log::warn("rank {}: gossip did not finish cleanly: {}", comm_->rank(), e.what());
  }
}

at::Tensor GossipMixer::message(double kind, double weight) {
  at::Tensor m = at::empty({kHeader + numel_}, at::kDouble);
  m[0] = kind;
  m[1] = weight;
  int64_t offset = kHeader;
  for (const auto& p : params_) {
    m.narrow(0, offset, p.numel()).copy_(p.detach().reshape(-1));
    offset += p.numel();
  }
  return m;
}

void GossipMixer::merge(const at::Tensor& m) {
  weight_ = push_sum_merge(params_, weight_, m.narrow(0, kHeader, numel_), m[1].item<double>());
}

void GossipMixer::serve(int peer) {
  at::Tensor in = at::empty({kHeader + numel_}, at::kDouble);
  for (;;) {
    comm_->recv(in, peer, kGossipTag);
    const double kind = in[0].item<double>();
    std::unique_lock<std::mutex> lock(mutex_);
    if (kind == kPush) {
      pending_.push_back(in.clone());
      ++pushes_received_;
    } else if (kind == kAsk) {
      weight_ /= 2;
      at::Tensor out = message(kAnswer, weight_);
      lock.unlock();
      comm_->send(out, peer, kGossipTag);
      lock.lock();
    } else if (kind == kAnswer) {
      TANDEM_ASSERT(asking_ == peer, "rank {}: gossip answer from rank {} that was not asked",
                    comm_->rank(), peer);
      answer_ = in.clone();
      asking_ = -1;  // here, not in mix(): a goodbye may follow before mix() wakes
      answered_.notify_all();
    } else if (kind == kBye) {
      said_bye_[static_cast<size_t>(peer)] = true;
    } else {
      throw InternalError(fmt::format("rank {}: gossip message of unknown kind {} from rank {}",
                                      comm_->rank(), kind, peer));
    }
    // After its goodbye a peer sends only the answer we may still await.
    if (said_bye_[static_cast<size_t>(peer)] && asking_ != peer) return;
  }
}

int GossipMixer::pick_peer() { return peers_.pick(said_bye_); }

void GossipMixer::rethrow_failure() {
  if (failure_) std::rethrow_exception(failure_);
}

void GossipMixer::mix() {
  TANDEM_CHECK(!finished_, "GossipMixer: mix() after finish()");
  std::unique_lock<std::mutex> lock(mutex_);
  rethrow_failure();
  const int peer = pick_peer();
  if (peer >= 0) last_peer_ = peer;
  if (peer >= 0 && options_.variant == GossipVariant::kPush) {
    weight_ /= 2;
    at::Tensor out = message(kPush, weight_);
    lock.unlock();
    comm_->send(out, peer, kGossipTag);
    lock.lock();
    ++exchanges_;
  } else if (peer >= 0) {
    asking_ = peer;
    answer_ = at::Tensor();
    lock.unlock();
    at::Tensor ask = at::zeros({kHeader + numel_}, at::kDouble);
    ask[0] = kAsk;
    comm_->send(ask, peer, kGossipTag);
    lock.lock();
    const bool ok =
        answered_.wait_for(lock, comm_->timeout(), [&] { return answer_.defined() || failure_; });
    asking_ = -1;
    rethrow_failure();
    if (!ok) {
      throw TimeoutError(fmt::format(
          "rank {}: gossip pull from rank {} got no answer within {}; is rank {} alive?",
          comm_->rank(), peer, format_duration(comm_->timeout()), peer));
    }
    merge(answer_);
    answer_ = at::Tensor();
    ++exchanges_;
  }
  while (!pending_.empty()) {
    merge(pending_.front());
    pending_.pop_front();
  }
}

void GossipMixer::finish() {
  if (finished_) return;
  finished_ = true;
  at::Tensor bye = at::zeros({kHeader + numel_}, at::kDouble);
  bye[0] = kBye;
  std::exception_ptr error;
  try {
    for (int p = 0; p < comm_->size(); ++p) {
      if (p != comm_->rank()) comm_->send(bye, p, kGossipTag);
    }
  } catch (...) {
    error = std::current_exception();
  }
  // Each thread ends on its peer's goodbye, or by its receive's deadline.
  for (auto& t : threads_) t.join();
  threads_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  while (!pending_.empty()) {
    merge(pending_.front());
    pending_.pop_front();
  }
  if (error) std::rethrow_exception(error);
  rethrow_failure();
}

double GossipMixer::weight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return weight_;
}

int64_t GossipMixer::pushes_received() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pushes_received_;
}

}  // namespace tandem::parallel
