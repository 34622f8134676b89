#include "lab/converge_problem.h"

#include <torch/nn/modules/container/any.h>
#include <torch/optim/optimizer.h>

#include <map>

#include "src/train/trainer_support.h"
#include "tandem/core/check.h"
#include "tandem/train/losses.h"
#include "tandem/train/lr_schedule.h"
#include "tandem/train/models/models.h"

namespace tandem::lab {

// The models built, by module, so that loss() can call their forward; the
// data, and one cursor per worker.
struct ProblemState {
  train::TrainerOptions o;
  train::ModelInput spec;
  train::Datasets sets;
  std::map<const torch::nn::Module*, torch::nn::AnyModule> models;
  std::vector<train::EpochCursor> cursors;
  std::vector<int64_t> next_step;
  std::vector<train::Batch> eval;
};

VirtualProblem problem_from_options(const train::TrainerOptions& options, int workers,
                                    int64_t eval_batches) {
  TANDEM_CHECK(workers >= 1, "lab converge: --workers must be at least 1 (got {})", workers);
  auto st = std::make_shared<ProblemState>();
  st->o = options;
  st->spec = train::input_spec(options.model.kind);
  st->sets = train::make_datasets(options, st->spec);
  const int64_t batch = options.run.batch_size;
  for (int w = 0; w < workers; ++w) {
    train::SamplerOptions so{.num_samples = st->sets.train->size(),
                             .world_size = workers,
                             .rank = w,
                             .shuffle = true,
                             .seed = options.run.seed,
                             .drop_last = false,
                             .epoch = 0,
                             .start_offset = 0};
    st->cursors.emplace_back(so, batch);
  }
  st->next_step.assign(workers, 0);
  {
    const train::Dataset& set = st->sets.eval();
    for (int64_t b = 0; b < eval_batches && (b + 1) * batch <= set.size(); ++b) {
      std::vector<int64_t> idx;
      for (int64_t i = b * batch; i < (b + 1) * batch; ++i) idx.push_back(i);
      train::Example ex = set.batch(idx);
      st->eval.push_back({train::model_input(ex.input, st->spec, options), ex.target});
    }
    TANDEM_CHECK(!st->eval.empty(),
                 "lab converge: the evaluation data holds fewer than one batch of {}", batch);
  }
  const double base_lr = options.optimizer.lr * (options.optimizer.scale_lr ? workers : 1);
  const int64_t total = options.run.steps;

  VirtualProblem p;
  p.make_model = [st] {
    at::manual_seed(st->o.run.seed);
    torch::nn::AnyModule m = train::make_model(st->o.model.kind);
    if (st->o.model.dtype == train::Dtype::kFloat64) m.ptr()->to(at::kDouble);
    auto ptr = m.ptr();
    st->models[ptr.get()] = std::move(m);
    return ptr;
  };
  p.make_optimizer = [st](std::vector<at::Tensor> params) {
    return train::make_optimizer(st->o, std::move(params));
  };
  p.set_lr = [](torch::optim::Optimizer& opt, double lr) { train::set_lr(opt, lr); };
  p.batch = [st](int worker, int, int64_t step) {
    TANDEM_CHECK(step == st->next_step[worker],
                 "lab converge: worker {} asked for batch {} after {}", worker, step,
                 st->next_step[worker] - 1);
    ++st->next_step[worker];
    const auto idx = st->cursors[worker].next();
    train::Example ex = st->sets.train->batch(idx);
    return train::Batch{train::model_input(ex.input, st->spec, st->o), ex.target};
  };
  p.loss = [st](torch::nn::Module& model, const train::Batch& b) {
    return train::loss_of(st->models.at(&model).forward(b.input), b.target);
  };
  p.lr = [st, base_lr, total](int64_t step) {
    const train::OptimizerConfig& c = st->o.optimizer;
    return train::learning_rate(c.schedule, base_lr, step, c.warmup_steps, total);
  };
  p.eval_loss = [st](torch::nn::Module& model) {
    at::NoGradGuard no_grad;
    model.eval();
    train::EvalSums sums;
    for (const auto& b : st->eval)
      sums += train::eval_sums(st->models.at(&model).forward(b.input), b.target);
    model.train();
    return sums.count > 0 ? sums.loss / sums.count : 0.0;
  };
  p.clip_grad_norm = options.optimizer.clip_grad_norm;
  return p;
}

}  // namespace tandem::lab
