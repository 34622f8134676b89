#include "tandem/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <xxhash.h>

#include <map>
#include <mutex>
#include <sstream>

#include "tandem/core/error.h"

namespace tandem::train {

void capture_module(const torch::nn::Module& module, Checkpoint& ckpt) {
  ckpt.parameters.clear();
  ckpt.buffers.clear();
  for (const auto& item : module.named_parameters(true)) {
    ckpt.parameters.emplace_back(item.key(), item.value().detach().to(at::kCPU).clone());
  }
  for (const auto& item : module.named_buffers(true)) {
    ckpt.buffers.emplace_back(item.key(), item.value().detach().to(at::kCPU).clone());
  }
}

uint64_t state_digest(const torch::nn::Module& module) {
  return state_digest(module.named_parameters(true), module.named_buffers(true));
}

uint64_t state_digest(const torch::OrderedDict<std::string, at::Tensor>& parameters,
                      const torch::OrderedDict<std::string, at::Tensor>& buffers) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  auto add = [&](const std::string& kind, const std::string& name, const at::Tensor& value) {
    at::Tensor t = value.detach().to(at::kCPU).contiguous();
    const std::string head = fmt::format("{} {} {} [{}];", kind, name,
                                         c10::toString(t.scalar_type()), fmt::join(t.sizes(), ","));
    XXH3_64bits_update(state, head.data(), head.size());
    XXH3_64bits_update(state, t.data_ptr(), t.nbytes());
  };
  for (const auto& item : parameters) add("parameter", item.key(), item.value());
  for (const auto& item : buffers) add("buffer", item.key(), item.value());
  const uint64_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return digest;
}

void capture_optimizer(torch::optim::Optimizer& optimizer, Checkpoint& ckpt) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream os;
  archive.save_to(os);
  ckpt.optimizer_state = os.str();
}

void capture_rng(Checkpoint& ckpt) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  ckpt.rng_state = gen.get_state();
}

void check_world_size(const Checkpoint& ckpt, int world_size) {
  if (ckpt.world_size == world_size) return;
  throw_checkpoint_error(
      ckpt.path, "world_size",
      fmt::format("written by {} ranks but this run has {}. Under DDP the model and optimizer "
                  "state would carry over, but the sampler position (epoch {}, {} samples "
                  "consumed per rank) belongs to {}-rank shards and resharding it is not "
                  "supported yet; resume with {} ranks",
                  ckpt.world_size, world_size, ckpt.epoch, ckpt.samples_in_epoch, ckpt.world_size,
                  ckpt.world_size));
}

namespace {

std::string shape_text(const at::Tensor& t) {
  return fmt::format("[{}]", fmt::join(t.sizes(), ", "));
}

void check_tensors(const std::string& path, const char* kind,
                   const std::vector<std::pair<std::string, at::Tensor>>& saved,
                   const torch::OrderedDict<std::string, at::Tensor>& model) {
  std::map<std::string, const at::Tensor*> by_name;
  for (const auto& [n, t] : saved) by_name[n] = &t;
  for (const auto& item : model) {
    const std::string field = fmt::format("{} '{}'", kind, item.key());
    auto it = by_name.find(item.key());
    if (it == by_name.end()) {
      throw_checkpoint_error(
          path, field,
          fmt::format("the model has {} '{}' {} but the checkpoint does not; it was written for "
                      "another model",
                      kind, item.key(), shape_text(item.value())));
    }
    const at::Tensor& t = *it->second;
    if (t.sizes() != item.value().sizes() || t.scalar_type() != item.value().scalar_type()) {
      throw_checkpoint_error(
          path, field,
          fmt::format("{} {} in the checkpoint but {} {} in the model; it was written for "
                      "another model",
                      shape_text(t), c10::toString(t.scalar_type()), shape_text(item.value()),
                      c10::toString(item.value().scalar_type())));
    }
    by_name.erase(it);
  }
  if (!by_name.empty()) {
    throw_checkpoint_error(
        path, fmt::format("{} '{}'", kind, by_name.begin()->first),
        fmt::format("the checkpoint has {} '{}' but the model does not; it was written for "
                    "another model",
                    kind, by_name.begin()->first));
  }
}

}  // namespace

void restore_module(const Checkpoint& ckpt, torch::nn::Module& module) {
  auto params = module.named_parameters(true);
  check_tensors(ckpt.path, "parameter", ckpt.parameters, params);
  check_tensors(ckpt.path, "buffer", ckpt.buffers, module.named_buffers(true));
  {
    at::NoGradGuard no_grad;
    for (const auto& [n, t] : ckpt.parameters) params[n].copy_(t);
  }
  restore_buffers(ckpt, module);
}

void restore_buffers(const Checkpoint& ckpt, torch::nn::Module& module) {
  auto buffers = module.named_buffers(true);
  check_tensors(ckpt.path, "buffer", ckpt.buffers, buffers);
  at::NoGradGuard no_grad;
  for (const auto& [n, t] : ckpt.buffers) buffers[n].copy_(t);
}

void restore_optimizer(const Checkpoint& ckpt, torch::optim::Optimizer& optimizer) {
  if (ckpt.optimizer_state.empty()) {
    throw_checkpoint_error(ckpt.path, "optimizer", "the checkpoint has no state");
  }
  try {
    torch::serialize::InputArchive archive;
    std::istringstream in(ckpt.optimizer_state);
    archive.load_from(in);
    optimizer.load(archive);
  } catch (const tandem::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw_checkpoint_error(
        ckpt.path, "optimizer",
        fmt::format("cannot be loaded into this optimizer ({}); was it written for another "
                    "--optimizer or model?",
                    e.what()));
  }
}

void restore_rng(const Checkpoint& ckpt) {
  if (!ckpt.rng_state.defined()) return;
  try {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(ckpt.rng_state);
  } catch (const std::exception& e) {
    throw_checkpoint_error(ckpt.path, "rng 'cpu'",
                           fmt::format("not a CPU generator state ({})", e.what()));
  }
}

}  // namespace tandem::train
