#include "tests/parallel/support/equivalence.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <ostream>

#include "tandem/comm/backend.h"
#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tandem/parallel/zero/zero_optimizer.h"

namespace tandem::testing {

Workload mlp_workload(int64_t hidden, int64_t out) {
  Workload w;
  w.make = [=] {
    at::manual_seed(0);
    torch::nn::Sequential m(torch::nn::Linear(6, hidden), torch::nn::Tanh(),
                            torch::nn::Linear(hidden, hidden), torch::nn::Tanh(),
                            torch::nn::Linear(hidden, out));
    m->to(at::kDouble);
    return m.ptr();
  };
  w.batch = [=](int rank, int step, int micro) {
    at::manual_seed(1000 + step * 97 + rank * 13 + micro * 7);
    at::Tensor x = at::randn({4, 6}, at::kDouble);
    at::Tensor y = at::randn({4, out}, at::kDouble);
    return std::pair{x, y};
  };
  w.loss = [](torch::nn::Module& m, const at::Tensor& x, const at::Tensor& y) {
    return torch::nn::functional::mse_loss(dynamic_cast<torch::nn::SequentialImpl&>(m).forward(x),
                                           y);
  };
  return w;
}

TwoHeads::TwoHeads() {
  at::manual_seed(0);
  used = register_module("used", torch::nn::Linear(6, 3));
  unused = register_module("unused", torch::nn::Linear(6, 3));
  to(at::kDouble);
}

Workload two_heads_workload() {
  Workload w = mlp_workload();
  w.make = [] { return std::make_shared<TwoHeads>(); };
  w.loss = [](torch::nn::Module& m, const at::Tensor& x, const at::Tensor& y) {
    return torch::nn::functional::mse_loss(dynamic_cast<TwoHeads&>(m).forward(x), y);
  };
  return w;
}

void expect_unused_head_named(const std::function<void()>& backward) {
  try {
    backward();
    ADD_FAILURE() << "a backward that left parameters without gradients passed";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unused.weight, unused.bias got no gradient"), std::string::npos) << msg;
    EXPECT_NE(msg.find("find_unused_parameters"), std::string::npos) << msg;
  }
}

train::GptMiniOptions small_gpt() {
  train::GptMiniOptions o;
  o.vocab = 61;
  o.context = 16;
  o.layers = 2;
  o.width = 32;
  o.heads = 2;
  return o;
}

Workload gpt_workload(const train::GptMiniOptions& options, at::ScalarType dtype) {
  Workload w;
  w.make = [=] {
    at::manual_seed(0);
    auto m = std::make_shared<train::GptMiniImpl>(options);
    m->to(dtype);
    return std::static_pointer_cast<torch::nn::Module>(m);
  };
  w.batch = [=](int rank, int step, int micro) {
    at::manual_seed(2000 + step * 97 + rank * 13 + micro * 7);
    at::Tensor tokens = at::randint(options.vocab, {2, 8}, at::kLong);
    at::Tensor targets = at::randint(options.vocab, {2, 8}, at::kLong);
    return std::pair{tokens, targets};
  };
  w.loss = [vocab = options.vocab](torch::nn::Module& m, const at::Tensor& x,
                                   const at::Tensor& y) {
    at::Tensor logits = dynamic_cast<train::GptMiniImpl&>(m).forward(x);
    return torch::nn::functional::cross_entropy(logits.reshape({-1, vocab}), y.reshape({-1}));
  };
  return w;
}

at::Tensor rank_loss(const Workload& w, torch::nn::Module& m, int rank, int step, int micro,
                     int micros) {
  auto [x, y] = w.batch(rank, step, micro);
  return w.loss(m, x, y) / micros;
}

at::Tensor one_process_loss(const Workload& w, torch::nn::Module& m, int world, int step,
                            int micros) {
  std::vector<at::Tensor> xs, ys;
  for (int r = 0; r < world; ++r) {
    for (int k = 0; k < micros; ++k) {
      auto [x, y] = w.batch(r, step, k);
      xs.push_back(x);
      ys.push_back(y);
    }
  }
  return w.loss(m, at::cat(xs), at::cat(ys));
}

std::string opt_name(Opt opt) {
  switch (opt) {
    case Opt::kSgd: return "Sgd";
    case Opt::kSgdNesterov: return "SgdNesterov";
    case Opt::kAdam: return "Adam";
    case Opt::kAdamW: return "AdamW";
    case Opt::kAdagrad: return "Adagrad";
    case Opt::kRmsprop: return "RMSprop";
  }
  return "?";
}

void PrintTo(Opt opt, std::ostream* os) { *os << opt_name(opt); }

// Each with the options that give it the most state: AMSGrad's maximum,
// Adagrad's decaying rate, RMSprop's momentum and centring.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(Opt opt, std::vector<at::Tensor> params) {
  namespace optim = torch::optim;
  switch (opt) {
    case Opt::kSgd: return std::make_unique<optim::SGD>(params, optim::SGDOptions(0.1));
    case Opt::kSgdNesterov:
      return std::make_unique<optim::SGD>(
          params, optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
    case Opt::kAdam:
      return std::make_unique<optim::Adam>(
          params, optim::AdamOptions(1e-2).weight_decay(0.01).amsgrad(true));
    case Opt::kAdamW:
      return std::make_unique<optim::AdamW>(params, optim::AdamWOptions(1e-2).weight_decay(0.01));
    case Opt::kAdagrad:
      return std::make_unique<optim::Adagrad>(
          params,
          optim::AdagradOptions(0.1).lr_decay(0.01).weight_decay(0.01).initial_accumulator_value(
              0.1));
    case Opt::kRmsprop:
      return std::make_unique<optim::RMSprop>(
          params, optim::RMSpropOptions(1e-2).weight_decay(0.01).momentum(0.9).centered(true));
  }
  throw InternalError("make_optimizer: unknown Opt");
}

std::shared_ptr<torch::nn::Module> train_one_process(const Workload& w, Opt opt, int world,
                                                     int steps, int micros) {
  auto model = w.make();
  auto optimizer = make_optimizer(opt, model->parameters());
  for (int s = 0; s < steps; ++s) {
    optimizer->zero_grad();
    one_process_loss(w, *model, world, s, micros).backward();
    optimizer->step();
  }
  return model;
}

torch::OrderedDict<std::string, at::Tensor> parameters_of(torch::nn::Module& m) {
  torch::OrderedDict<std::string, at::Tensor> out;
  for (const auto& item : m.named_parameters()) out.insert(item.key(), item.value().detach());
  return out;
}

void expect_same_parameters(const torch::OrderedDict<std::string, at::Tensor>& got,
                            const torch::OrderedDict<std::string, at::Tensor>& want, double rtol,
                            double atol, const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  for (const auto& item : want) {
    const at::Tensor* other = got.find(item.key());
    if (other == nullptr) {
      ADD_FAILURE() << what << ": no parameter " << item.key();
      continue;
    }
    EXPECT_TRUE(at::allclose(*other, item.value(), rtol, atol))
        << what << ": " << item.key() << " differs by "
        << (*other - item.value()).abs().max().item<double>();
  }
}

void expect_same_parameters(torch::nn::Module& got, torch::nn::Module& want, double rtol,
                            double atol, const std::string& what) {
  expect_same_parameters(parameters_of(got), parameters_of(want), rtol, atol, what);
}

void expect_same_on_every_rank(Communicator& comm, const at::Tensor& t, const std::string& what) {
  at::Tensor high = t.detach().clone();
  at::Tensor low = t.detach().clone();
  comm.all_reduce(high, ReduceOp::kMax);
  comm.all_reduce(low, ReduceOp::kMin);
  EXPECT_TRUE(at::equal(high, low)) << what << " differs between ranks";
}

// Small buckets and units, so that several collectives overlap backward.
torch::OrderedDict<std::string, at::Tensor> train_with_ddp(const Workload& w, Opt opt,
                                                           const std::shared_ptr<Communicator>& comm,
                                                           int steps) {
  auto model = w.make();
  parallel::DdpOptions o;
  o.bucket_cap_mb = 300.0 / (1024 * 1024);
  parallel::DistributedDataParallel ddp(model, comm, o);
  auto optimizer = make_optimizer(opt, model->parameters());
  for (int s = 0; s < steps; ++s) {
    optimizer->zero_grad();
    rank_loss(w, *model, comm->rank(), s).backward();
    EXPECT_GE(ddp.last_stats().buckets_launched_during_backward, 1);
    optimizer->step();
  }
  return parameters_of(*model);
}

torch::OrderedDict<std::string, at::Tensor> train_with_zero(
    const Workload& w, Opt opt, const std::shared_ptr<Communicator>& comm, int steps, int stage) {
  auto model = w.make();
  parallel::ZeroOptions o;
  o.stage = stage;
  o.bucket_cap_mb = 1200.0 / (1024 * 1024);
  parallel::ZeroRedundancyOptimizer zero(
      model, comm, [opt](std::vector<at::Tensor> p) { return make_optimizer(opt, std::move(p)); },
      o);
  for (int s = 0; s < steps; ++s) {
    zero.zero_grad();
    rank_loss(w, *model, comm->rank(), s).backward();
    EXPECT_GE(zero.last_stats().buckets_launched_during_backward, 1);
    zero.step();
  }
  return parameters_of(*model);
}

torch::OrderedDict<std::string, at::Tensor> train_with_fsdp(
    const Workload& w, Opt opt, const std::shared_ptr<Communicator>& comm, int steps) {
  auto model = w.make();
  parallel::FsdpOptions o;
  o.wrap.module_types = {"LinearImpl"};
  parallel::FullyShardedDataParallel fsdp(model, comm, o);
  auto optimizer = make_optimizer(opt, fsdp.parameters());
  for (int s = 0; s < steps; ++s) {
    optimizer->zero_grad();
    rank_loss(w, *model, comm->rank(), s).backward();
    EXPECT_GE(fsdp.last_stats().reduce_scatters_during_backward, 1);
    optimizer->step();
  }
  return fsdp.full_state_dict();
}

std::string backend_name(Backend backend) {
  switch (backend) {
    case Backend::kShm: return "Shm";
    case Backend::kGloo: return "Gloo";
    case Backend::kHierarchical: return "Hierarchical";
  }
  return "?";
}

void PrintTo(Backend backend, std::ostream* os) { *os << backend_name(backend); }

std::shared_ptr<Communicator> connect(Backend backend, int rank, int size, int port,
                                      const std::string& name, Millis timeout) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  auto options = [&](int r, int n, const std::string& group) {
    return BackendOptions{r, n, with_prefix(store, group), timeout,
                          group + "-test-" + std::to_string(port)};
  };
  if (backend == Backend::kShm) return make_shm_communicator(options(rank, size, name));
  if (backend == Backend::kGloo) {
    return make_gloo_communicator(options(rank, size, name), "127.0.0.1");
  }
  // As init() composes one across hosts: shared memory among a host's
  // ranks, Gloo among the ranks of equal local rank, a flat Gloo world.
  TANDEM_ASSERT(size % 2 == 0, "connect: a hierarchical communicator of {} ranks", size);
  const int per_host = size / 2;
  const int host = rank / per_host;
  const int local_rank = rank % per_host;
  auto world = make_gloo_communicator(options(rank, size, name + "-world"), "127.0.0.1");
  auto local = make_shm_communicator(
      options(local_rank, per_host, name + "-host" + std::to_string(host)));
  auto cross = make_gloo_communicator(
      options(host, 2, name + "-cross" + std::to_string(local_rank)), "127.0.0.1");
  return make_hierarchical_communicator(rank, size, local, cross, world, timeout);
}

}  // namespace tandem::testing
