#include "lab/virtual_workers.h"

#include <ATen/ops/cat.h>
#include <fmt/format.h>

#include <algorithm>

#include "lab/virtual_run.h"
#include "tandem/core/check.h"

namespace tandem::lab {
namespace detail {

// ddp: the workers' gradients averaged, one step.
VirtualResult run_sync(Run& run, const VirtualOptions& o) {
  const VirtualProblem& p = run.problem();
  Worker w = run.make_worker(true);
  run.set_buffers_source(w.model.get());
  // Without buffers (BatchNorm's statistics are per worker) and without
  // worker 0's own loss to watch, one forward of all the batches at once.
  const bool one_batch = w.model->buffers().empty() && !o.target_on_worker0 && o.workers > 1;
  double now = 0;
  for (int64_t s = 0; s < o.max_steps; ++s) {
    p.set_lr(*w.opt, p.lr(s));
    Run::zero_grad(w.params);
    std::vector<at::Tensor> buffers;
    int64_t samples = 0;
    if (one_batch) {
      // The mean loss of the workers' batches side by side: its gradient is
      // the mean of theirs (equal batch sizes, mean losses).
      std::vector<at::Tensor> inputs, targets;
      for (int k = 0; k < o.workers; ++k) {
        const train::Batch batch = p.batch(k, o.workers, s);
        inputs.push_back(batch.input);
        targets.push_back(batch.target);
        samples += batch.input.size(0);
      }
      p.loss(*w.model, {at::cat(inputs), at::cat(targets)}).backward();
    }
    for (int k = 0; k < o.workers && !one_batch; ++k) {
      const train::Batch batch = p.batch(k, o.workers, s);
      samples += batch.input.size(0);
      at::Tensor loss = p.loss(*w.model, batch);
      loss.backward();  // the gradients add up
      if (k == 0) {
        buffers = clones(w.model->buffers());
        run.note_worker0_loss(loss.item<double>());
      }
    }
    {
      at::NoGradGuard no_grad;
      auto live = w.model->buffers();
      for (size_t i = 0; i < buffers.size(); ++i) live[i].copy_(buffers[i]);
      for (auto& t : w.params) {
        at::Tensor q = t;
        if (q.grad().defined() && !one_batch) q.mutable_grad().div_(static_cast<double>(o.workers));
      }
    }
    if (p.clip_grad_norm > 0) torch::nn::utils::clip_grad_norm_(w.params, p.clip_grad_norm);
    w.opt->step();
    run.add_steps(o.workers, samples);
    now += o.times ? o.times->sync_step_s() : 1.0;
    if (run.worker0_reached(now)) break;
    if (run.maybe_evaluate(now, [&] { return flat_of(w.params); })) break;
  }
  return run.finish(now, flat_of(w.params));
}

namespace {

// The workers' floating-point buffers (BatchNorm's running statistics)
// replaced by their mean, as LocalSgd averages them with the parameters.
void average_buffers(std::vector<Worker>& ws) {
  at::NoGradGuard no_grad;
  const auto first = ws[0].model->buffers();
  for (size_t i = 0; i < first.size(); ++i) {
    if (!at::isFloatingType(first[i].scalar_type())) continue;
    at::Tensor sum = first[i].clone();
    for (size_t k = 1; k < ws.size(); ++k) sum.add_(ws[k].model->buffers()[i]);
    sum.div_(static_cast<double>(ws.size()));
    for (auto& w : ws) w.model->buffers()[i].copy_(sum);
  }
}

}  // namespace

// local-sgd: local steps, then every sync_every a barrier and the average.
VirtualResult run_local_sgd(Run& run, const VirtualOptions& o) {
  std::vector<Worker> ws;
  for (int k = 0; k < o.workers; ++k) ws.push_back(run.make_worker(true));
  run.set_buffers_source(ws[0].model.get());
  std::vector<double> clock(o.workers, 0.0);
  auto average = [&] {
    at::Tensor sum = flat_of(ws[0].params);
    for (int k = 1; k < o.workers; ++k) sum.add_(flat_of(ws[k].params));
    return sum.div_(static_cast<double>(o.workers));
  };
  double now = 0;
  bool stop = false;
  for (int64_t s = 0; s < o.max_steps && !stop; ++s) {
    for (int k = 0; k < o.workers; ++k) {
      run.local_step(ws[k], k, true);
      clock[k] += run.compute_s(k, true);
    }
    if (run.worker0_reached(clock[0])) {
      now = clock[0];
      break;
    }
    now = *std::max_element(clock.begin(), clock.end());
    if ((s + 1) % o.sync_every == 0 && o.workers > 1) {
      now += o.times ? o.times->op_s(LinkOp::kAllReduce, o.times->param_bytes(), o.workers) : 0;
      const at::Tensor mean = average();
      for (auto& w : ws) copy_into(mean, w.params);
      average_buffers(ws);
      std::fill(clock.begin(), clock.end(), now);
    }
    stop = run.maybe_evaluate(now, average);
  }
  return run.finish(now, average());
}

}  // namespace detail

VirtualStrategy parse_virtual_strategy(const std::string& text) {
  if (text == "ddp") return VirtualStrategy::kSync;
  if (text == "ps") return VirtualStrategy::kPs;
  if (text == "easgd") return VirtualStrategy::kEasgd;
  if (text == "gossip") return VirtualStrategy::kGossip;
  if (text == "local-sgd") return VirtualStrategy::kLocalSgd;
  throw InvalidArgument(
      fmt::format("--strategy: '{}' is not one of ddp, ps, easgd, gossip, local-sgd", text));
}

std::string name_of(VirtualStrategy s) {
  switch (s) {
    case VirtualStrategy::kSync:
      return "ddp";
    case VirtualStrategy::kPs:
      return "ps";
    case VirtualStrategy::kEasgd:
      return "easgd";
    case VirtualStrategy::kGossip:
      return "gossip";
    case VirtualStrategy::kLocalSgd:
      return "local-sgd";
  }
  return "?";
}

VirtualResult run_virtual_workers(const VirtualProblem& problem, const VirtualOptions& o) {
  TANDEM_CHECK(o.workers >= 1, "lab converge: --workers must be at least 1 (got {})", o.workers);
  TANDEM_CHECK(o.max_steps >= 1, "lab converge: --max-steps must be at least 1 (got {})",
               o.max_steps);
  TANDEM_CHECK(o.eval_every >= 1, "lab converge: --eval-every must be at least 1 (got {})",
               o.eval_every);
  TANDEM_CHECK(o.tau >= 1, "lab converge: --tau must be at least 1 (got {})", o.tau);
  TANDEM_CHECK(o.sync_every >= 1, "lab converge: --sync-every must be at least 1 (got {})",
               o.sync_every);
  TANDEM_CHECK(!o.times || o.times->workers() == o.workers,
               "lab converge: the cost model has {} workers, the run {}",
               o.times ? o.times->workers() : 0, o.workers);
  detail::Run run(problem, o);
  switch (o.strategy) {
    case VirtualStrategy::kSync:
      return run_sync(run, o);
    case VirtualStrategy::kLocalSgd:
      return run_local_sgd(run, o);
    case VirtualStrategy::kPs:
    case VirtualStrategy::kEasgd:
      return run_server(run, o);
    case VirtualStrategy::kGossip:
      return run_gossip(run, o);
  }
  throw InternalError("lab converge: unknown strategy");
}

}  // namespace tandem::lab
