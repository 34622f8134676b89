#include "tandem/train/sharded_checkpoint.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/ones.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "tandem/core/check.h"
#include "tandem/core/error.h"
#include "tandem/parallel/optimizer_state.h"

namespace tandem::train {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

[[noreturn]] void fail(const std::string& path, std::string_view field, const std::string& what) {
  throw_checkpoint_error(path, field, what);
}

std::string rank_file(const std::string& step_dir, int rank) {
  return (fs::path(step_dir) / fmt::format("rank-{}.ckpt", rank)).string();
}

// A field is a per-group counter (Adam's step) when integral, else a flat slice.
bool is_counter(const at::Tensor& t) { return !at::isFloatingType(t.scalar_type()); }

json layout_json(const ShardedState& state) {
  json groups = json::array();
  for (const auto& g : state.groups) {
    TANDEM_CHECK(g.names.size() == g.layout.entries.size(),
                 "ShardGroup: {} names for {} layout entries", g.names.size(),
                 g.layout.entries.size());
    json entries = json::array();
    for (size_t e = 0; e < g.names.size(); ++e) {
      const auto& en = g.layout.entries[e];
      entries.push_back({{"name", g.names[e]},
                         {"shape", en.shape},
                         {"offset", en.offset},
                         {"numel", en.numel}});
    }
    groups.push_back({{"dtype", c10::toString(g.layout.dtype)},
                      {"numel", g.layout.numel},
                      {"entries", entries}});
  }
  return groups;
}

// The groups of one rank's file, with its shards by name.
struct RankFile {
  Checkpoint ckpt;
  json groups;
  std::map<std::string, at::Tensor> shards;
};

// Rank `rank`'s checkpoint with its sharding header checked.
RankFile rank_file_of(Checkpoint ckpt, int rank) {
  RankFile f;
  f.ckpt = std::move(ckpt);
  const std::string& path = f.ckpt.path;
  if (f.ckpt.sharding.empty()) fail(path, "sharding", "absent: this is not a sharded checkpoint");
  try {
    json sharding = json::parse(f.ckpt.sharding);
    if (sharding.at("rank").get<int>() != rank) {
      fail(path, "sharding", fmt::format("the file says it is rank {}'s shard, not rank {}'s",
                                         sharding.at("rank").get<int>(), rank));
    }
    f.groups = sharding.at("groups");
  } catch (const json::exception& e) {
    fail(path, "sharding", fmt::format("unreadable: {}", e.what()));
  }
  for (auto& [n, t] : f.ckpt.shards) f.shards.emplace(n, t);
  return f;
}

Checkpoint read_rank_file(const std::string& step_dir, int rank) {
  const std::string path = rank_file(step_dir, rank);
  if (!fs::exists(path)) {
    fail(path, "file",
         fmt::format("missing: the sharded checkpoint in '{}' lacks rank {}'s shard; it is "
                     "incomplete (was the run killed while writing it?)",
                     step_dir, rank));
  }
  return read_checkpoint(path);
}

parallel::FlatLayout layout_from_json(const json& g, const std::string& path,
                                      std::vector<std::string>& names) {
  parallel::FlatLayout layout;
  try {
    c10::ScalarType dtype = c10::kFloat;
    const auto dtype_name = g.at("dtype").get<std::string>();
    bool known = false;
    for (auto t : {c10::kFloat, c10::kDouble, c10::kHalf, c10::kBFloat16}) {
      if (dtype_name == c10::toString(t)) dtype = t, known = true;
    }
    if (!known) fail(path, "sharding", fmt::format("unknown dtype '{}'", dtype_name));
    layout.dtype = dtype;
    layout.numel = g.at("numel").get<int64_t>();
    int64_t offset = 0;
    for (const auto& e : g.at("entries")) {
      parallel::FlatLayout::Entry en;
      en.index = layout.entries.size();
      en.shape = e.at("shape").get<std::vector<int64_t>>();
      en.offset = e.at("offset").get<int64_t>();
      en.numel = e.at("numel").get<int64_t>();
      if (en.offset != offset || en.numel < 0) {
        fail(path, "sharding", fmt::format("entry '{}' is not back to back", e.at("name").dump()));
      }
      offset += en.numel;
      names.push_back(e.at("name").get<std::string>());
      layout.entries.push_back(std::move(en));
    }
    if (offset != layout.numel) {
      fail(path, "sharding",
           fmt::format("the entries hold {} elements but the group says {}", offset, layout.numel));
    }
  } catch (const json::exception& e) {
    fail(path, "sharding", fmt::format("unreadable: {}", e.what()));
  }
  return layout;
}

at::Tensor shard_of(const RankFile& f, const std::string& name) {
  auto it = f.shards.find(name);
  return it == f.shards.end() ? at::Tensor() : it->second;
}

// Group g's flat vector of `field` ("param" or an optimizer field) over all
// files, checking each slice's length.
at::Tensor gather_flat(const std::vector<RankFile>& files, size_t g, const std::string& field,
                       int64_t numel) {
  const int world = static_cast<int>(files.size());
  std::vector<at::Tensor> parts;
  for (int r = 0; r < world; ++r) {
    const ShardRange range = shard_range(numel, world, r);
    const std::string key = fmt::format("g{}/{}", g, field);
    at::Tensor t = shard_of(files[r], key);
    if (!t.defined() && range.numel == 0) continue;
    if (!t.defined() || t.numel() != range.numel) {
      fail(files[r].ckpt.path, fmt::format("shard '{}'", key),
           t.defined() ? fmt::format("{} elements, but rank {} of {} owns {}", t.numel(), r, world,
                                     range.numel)
                       : "missing");
    }
    parts.push_back(t.reshape({-1}));
  }
  return parts.empty() ? at::Tensor() : at::cat(parts);
}

}  // namespace

Checkpoint shard_checkpoint(Checkpoint base, const ShardedState& state, int rank, int world_size) {
  TANDEM_CHECK(base.parameters.empty() && base.optimizer_state.empty(),
               "shard_checkpoint: whole parameters and optimizer blobs do not belong in a "
               "sharded checkpoint");
  TANDEM_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
               "shard_checkpoint: rank {} of world size {}", rank, world_size);
  base.world_size = world_size;
  if (rank != 0) base.buffers.clear();
  base.sharding = json{{"rank", rank}, {"groups", layout_json(state)}}.dump();
  base.shards.clear();
  for (size_t g = 0; g < state.groups.size(); ++g) {
    const auto& grp = state.groups[g];
    base.shards.emplace_back(fmt::format("g{}/param", g), grp.params);
    for (const auto& [field, t] : grp.optimizer) {
      TANDEM_CHECK(field != "param", "ShardGroup: an optimizer field may not be named 'param'");
      base.shards.emplace_back(fmt::format("g{}/{}", g, field), t);
    }
  }
  return base;
}

std::string write_sharded_checkpoint(const std::string& dir, Checkpoint base,
                                     const ShardedState& state, Communicator& comm) {
  TANDEM_CHECK(base.parameters.empty() && base.optimizer_state.empty(),
               "write_sharded_checkpoint: whole parameters and optimizer blobs do not belong in a "
               "sharded checkpoint");
  const std::string name = fmt::format("step-{}", base.step);
  const std::string step_dir = (fs::path(dir) / name).string();
  std::string error;
  try {
    std::error_code ec;
    fs::create_directories(step_dir, ec);
    if (ec) fail(step_dir, "directory", fmt::format("cannot create: {}", ec.message()));
    write_checkpoint_file(rank_file(step_dir, comm.rank()),
                          shard_checkpoint(std::move(base), state, comm.rank(), comm.size()));
  } catch (const std::exception& e) {
    error = e.what();
  }
  // Every rank learns whether all shards were written before `latest` moves.
  at::Tensor ok = at::ones({1}, at::kInt);
  if (!error.empty()) ok.zero_();
  comm.all_reduce(ok, ReduceOp::kMin);
  if (!error.empty()) throw CheckpointError(error);
  if (ok.item<int>() == 0) {
    throw CheckpointError(fmt::format(
        "rank {}: the sharded checkpoint '{}' was not written: another rank failed to write its "
        "shard (its own error names the file); DIR/latest still names the previous checkpoint",
        comm.rank(), step_dir));
  }
  if (comm.rank() == 0) write_latest(dir, name);
  comm.barrier();
  return step_dir;
}

bool is_sharded_checkpoint(const std::string& path) {
  return fs::is_directory(path) && fs::exists(rank_file(path, 0));
}

LoadedShards read_sharded_checkpoint(const std::string& step_dir, int rank, int world_size) {
  TANDEM_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
               "read_sharded_checkpoint: rank {} of world size {}", rank, world_size);
  std::vector<Checkpoint> files;
  files.push_back(read_rank_file(step_dir, 0));
  for (int r = 1; r < files[0].world_size; ++r) files.push_back(read_rank_file(step_dir, r));
  return reshard_checkpoints(std::move(files), rank, world_size);
}

LoadedShards reshard_checkpoints(std::vector<Checkpoint> checkpoints, int rank, int world_size) {
  TANDEM_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
               "reshard_checkpoints: rank {} of world size {}", rank, world_size);
  TANDEM_CHECK(!checkpoints.empty(), "reshard_checkpoints: no rank's checkpoint given");
  const int saved = checkpoints[0].world_size;
  if (static_cast<int>(checkpoints.size()) != saved) {
    fail(checkpoints[0].path, "world_size",
         fmt::format("written by {} ranks, but {} ranks' shards are at hand", saved,
                     checkpoints.size()));
  }
  std::vector<RankFile> files;
  for (int r = 0; r < saved; ++r) {
    files.push_back(rank_file_of(std::move(checkpoints[r]), r));
    const Checkpoint& c = files.back().ckpt;
    if (r == 0) continue;
    if (c.world_size != saved || c.step != files[0].ckpt.step) {
      fail(c.path, "step",
           fmt::format("step {} of a {}-rank run, but rank 0's file is step {} of a {}-rank run; "
                       "the files come from different checkpoints",
                       c.step, c.world_size, files[0].ckpt.step, saved));
    }
    if (files.back().groups != files[0].groups) {
      fail(c.path, "sharding", "the group layout differs from rank 0's");
    }
  }
  LoadedShards out;
  out.saved_world_size = saved;
  out.base = files[0].ckpt;
  out.base.shards.clear();
  out.base.rng_state = rank < saved ? files[rank].ckpt.rng_state : files[0].ckpt.rng_state;
  const std::string& path0 = files[0].ckpt.path;
  for (size_t g = 0; g < files[0].groups.size(); ++g) {
    ShardGroup grp;
    grp.layout = layout_from_json(files[0].groups[g], path0, grp.names);
    const ShardRange mine = shard_range(grp.layout.numel, world_size, rank);
    at::Tensor flat = gather_flat(files, g, "param", grp.layout.numel);
    grp.params = flat.defined() ? flat.narrow(0, mine.offset, mine.numel).clone()
                                : at::empty({0}, at::TensorOptions().dtype(grp.layout.dtype));
    // Optimizer fields, named as on the first rank that has any.
    std::map<std::string, at::Tensor> counters;
    std::vector<std::string> fields;
    for (const auto& f : files) {
      for (const auto& [key, t] : f.shards) {
        const std::string prefix = fmt::format("g{}/", g);
        if (key.rfind(prefix, 0) != 0) continue;
        const std::string field = key.substr(prefix.size());
        if (field == "param") continue;
        if (is_counter(t)) {
          auto [it, fresh] = counters.emplace(field, t);
          if (!fresh && !at::equal(it->second, t)) {
            fail(f.ckpt.path, fmt::format("shard '{}'", key),
                 "the counter differs between ranks; the files come from different checkpoints");
          }
        } else if (std::find(fields.begin(), fields.end(), field) == fields.end()) {
          fields.push_back(field);
        }
      }
    }
    for (const auto& field : fields) {
      at::Tensor full = gather_flat(files, g, field, grp.layout.numel);
      grp.optimizer.emplace_back(field, full.narrow(0, mine.offset, mine.numel).clone());
    }
    for (auto& [field, t] : counters) grp.optimizer.emplace_back(field, t.clone());
    out.state.groups.push_back(std::move(grp));
  }
  return out;
}

void check_same_layout(const LoadedShards& loaded, const ShardedState& current,
                       const std::string& path) {
  const auto& saved = loaded.state.groups;
  if (saved.size() != current.groups.size()) {
    fail(path, "sharding",
         fmt::format("{} flat groups in the checkpoint but {} in this model; it was written for "
                     "another model or another bucket size / wrap policy",
                     saved.size(), current.groups.size()));
  }
  for (size_t g = 0; g < saved.size(); ++g) {
    const auto& a = saved[g];
    const auto& b = current.groups[g];
    const size_t n = std::min(a.names.size(), b.names.size());
    for (size_t e = 0; e < n; ++e) {
      if (a.names[e] != b.names[e] || a.layout.entries[e].shape != b.layout.entries[e].shape) {
        fail(path, fmt::format("parameter '{}'", b.names[e]),
             fmt::format("group {} entry {} is '{}' [{}] in the checkpoint but '{}' [{}] in this "
                         "model; it was written for another model or layout",
                         g, e, a.names[e], fmt::join(a.layout.entries[e].shape, ", "), b.names[e],
                         fmt::join(b.layout.entries[e].shape, ", ")));
      }
    }
    if (a.names.size() != b.names.size() || a.layout.dtype != b.layout.dtype) {
      fail(path, "sharding",
           fmt::format("group {} holds {} {} tensors in the checkpoint but {} {} in this model", g,
                       a.names.size(), c10::toString(a.layout.dtype), b.names.size(),
                       c10::toString(b.layout.dtype)));
    }
  }
}

namespace {

// Dotted names ("blocks.0.fc.weight") as the nested archives Module::save writes.
struct ArchiveNode {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::vector<bool> is_buffer;
  std::map<std::string, ArchiveNode> children;

  void add(const std::string& name, const at::Tensor& t, bool buffer) {
    const auto dot = name.find('.');
    if (dot == std::string::npos) {
      tensors.emplace_back(name, t);
      is_buffer.push_back(buffer);
    } else {
      children[name.substr(0, dot)].add(name.substr(dot + 1), t, buffer);
    }
  }
  void write_to(torch::serialize::OutputArchive& archive) {
    for (size_t i = 0; i < tensors.size(); ++i)
      archive.write(tensors[i].first, tensors[i].second, is_buffer[i]);
    for (auto& [key, child] : children) {
      torch::serialize::OutputArchive sub;
      child.write_to(sub);
      archive.write(key, sub);
    }
  }
};

}  // namespace

void consolidate_checkpoint(const std::string& step_dir, const std::string& out) {
  LoadedShards all = read_sharded_checkpoint(step_dir, 0, 1);
  ArchiveNode root;
  for (const auto& g : all.state.groups) {
    for (size_t e = 0; e < g.names.size(); ++e) {
      const auto& en = g.layout.entries[e];
      root.add(g.names[e], g.params.narrow(0, en.offset, en.numel).view(en.shape).clone(), false);
    }
  }
  for (const auto& [name, t] : all.base.buffers) root.add(name, t, true);
  try {
    torch::serialize::OutputArchive archive;
    root.write_to(archive);
    archive.save_to(out);
  } catch (const std::exception& e) {
    fail(out, "file", fmt::format("cannot write the consolidated checkpoint: {}", e.what()));
  }
}

namespace {

at::Tensor flat_copy(const at::Tensor& t) { return t.detach().reshape({-1}).clone(); }

at::Tensor step_tensor(int64_t step) {
  at::Tensor t = at::empty({1}, at::kLong);
  t.data_ptr<int64_t>()[0] = step;
  return t;
}

// The optimizers whose state sharded checkpoints store.
bool checkpointed(const torch::optim::Optimizer& optimizer) {
  using parallel::OptimizerKind;
  const auto kind = parallel::known_kind(optimizer);
  return kind == OptimizerKind::kSgd || kind == OptimizerKind::kAdam ||
         kind == OptimizerKind::kAdamW;
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> optimizer_state_of(
    const torch::optim::Optimizer& optimizer, const at::Tensor& param) {
  const torch::optim::OptimizerParamState* s = parallel::find_param_state(optimizer, param);
  if (s == nullptr) return {};
  if (!checkpointed(optimizer)) {
    throw NotSupported(
        "sharded checkpoints store the state of SGD, Adam and AdamW; this optimizer's state type "
        "is not one of them");
  }
  const parallel::ParamStateFields f = parallel::param_state_fields(*s);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& [name, t] : f.tensors) out.emplace_back(name, flat_copy(t));
  if (f.step) out.emplace_back("step", step_tensor(*f.step));
  return out;
}

void set_optimizer_state(torch::optim::Optimizer& optimizer, const at::Tensor& param,
                         const std::vector<std::pair<std::string, at::Tensor>>& fields) {
  if (fields.empty()) {
    parallel::set_param_state(optimizer, param, nullptr);
    return;
  }
  if (!checkpointed(optimizer)) {
    throw NotSupported(
        "sharded checkpoints restore the state of SGD, Adam and AdamW; not this optimizer");
  }
  parallel::ParamStateFields f;
  for (const auto& [name, t] : fields) {
    if (name == "step") {
      f.step = t.item<int64_t>();
    } else if (t.numel() != param.numel()) {
      throw CheckpointError(fmt::format(
          "optimizer state field '{}' has {} elements but the parameter shard has {}", name,
          t.numel(), param.numel()));
    } else {
      f.tensors.emplace_back(name, t.reshape(param.sizes()).to(param.scalar_type()).clone());
    }
  }
  try {
    parallel::set_param_state(optimizer, param,
                              parallel::make_param_state(parallel::optimizer_kind(optimizer), f));
  } catch (const InvalidArgument& e) {
    throw CheckpointError(
        fmt::format("{}; was the checkpoint written with another --optimizer?", e.what()));
  }
}

std::vector<std::pair<std::string, at::Tensor>> optimizer_state_of(
    const torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& pieces) {
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> each;
  for (const auto& piece : pieces) each.push_back(optimizer_state_of(optimizer, piece));
  if (each.empty() || each[0].empty()) {
    for (const auto& f : each) TANDEM_ASSERT(f.empty(), "optimizer state on some pieces only");
    return {};
  }
  std::vector<std::pair<std::string, at::Tensor>> whole;
  for (size_t k = 0; k < each[0].size(); ++k) {
    const std::string& name = each[0][k].first;
    std::vector<at::Tensor> parts;
    for (const auto& f : each) {
      TANDEM_ASSERT(f.size() == each[0].size() && f[k].first == name,
                    "optimizer state fields differ between pieces of one shard");
      parts.push_back(f[k].second);
    }
    if (name == "step") {
      for (const auto& t : parts) {
        TANDEM_ASSERT(t.item<int64_t>() == parts[0].item<int64_t>(),
                      "optimizer step counts differ between pieces of one shard");
      }
      whole.emplace_back(name, parts[0]);
    } else {
      whole.emplace_back(name, at::cat(parts));
    }
  }
  return whole;
}

void set_optimizer_state(torch::optim::Optimizer& optimizer, const std::vector<at::Tensor>& pieces,
                         const std::vector<std::pair<std::string, at::Tensor>>& fields) {
  int64_t total = 0;
  for (const auto& piece : pieces) total += piece.numel();
  int64_t offset = 0;
  for (const auto& piece : pieces) {
    std::vector<std::pair<std::string, at::Tensor>> part;
    for (const auto& [name, t] : fields) {
      if (name == "step") {
        part.emplace_back(name, t);
        continue;
      }
      if (t.numel() != total) {
        throw CheckpointError(fmt::format(
            "optimizer state field '{}' has {} elements but the parameter shard has {}", name,
            t.numel(), total));
      }
      part.emplace_back(name, t.reshape({-1}).narrow(0, offset, piece.numel()));
    }
    set_optimizer_state(optimizer, piece, part);
    offset += piece.numel();
  }
}

}  // namespace tandem::train
