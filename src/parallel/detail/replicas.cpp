#include "parallel/detail/replicas.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <fmt/format.h>
#include <fmt/ostream.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <functional>

#include "tandem/core/check.h"

namespace tandem::parallel::detail {

namespace {

constexpr int kMaxDims = 6;
constexpr int kRow = 3 + kMaxDims;  // name hash, dtype, ndim, sizes

std::string shape_of(const int64_t* row) {
  std::vector<int64_t> dims(row + 3, row + 3 + std::min<int64_t>(row[2], kMaxDims));
  return fmt::format("[{}] {}", fmt::join(dims, ", "),
                     c10::toString(static_cast<at::ScalarType>(row[1])));
}

}  // namespace

Trainable trainable_parameters(const torch::nn::Module& module, std::string_view who,
                               std::string_view does) {
  Trainable t;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    TANDEM_CHECK(item.value().device().is_cpu(),
                 "{}: parameter '{}' is on {}; this build {} CPU tensors", who, item.key(),
                 item.value().device().str(), does);
    t.names.push_back(item.key());
    t.params.push_back(item.value());
  }
  return t;
}

void check_replicas_match(Communicator& comm, const std::vector<std::string>& names,
                          const std::vector<at::Tensor>& params, std::string_view who) {
  const int world = comm.size();
  at::Tensor count = at::empty({1}, at::kLong);
  count[0] = static_cast<int64_t>(params.size());
  at::Tensor counts = at::empty({world}, at::kLong);
  comm.all_gather(counts, count);
  for (int r = 1; r < world; ++r) {
    TANDEM_CHECK(counts[r].item<int64_t>() == counts[0].item<int64_t>(),
                 "{}: rank {} has {} trainable parameters but rank 0 has "
                 "{}; all ranks must build the same model",
                 who, r, counts[r].item<int64_t>(), counts[0].item<int64_t>());
  }
  const int64_t n = static_cast<int64_t>(params.size());
  at::Tensor mine = at::full({n * kRow}, -1, at::kLong);
  int64_t* m = mine.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& p = params[i];
    m[i * kRow] = static_cast<int64_t>(std::hash<std::string>{}(names[i]) >> 1);
    m[i * kRow + 1] = static_cast<int64_t>(p.scalar_type());
    m[i * kRow + 2] = p.dim();
    for (int64_t d = 0; d < std::min<int64_t>(p.dim(), kMaxDims); ++d)
      m[i * kRow + 3 + d] = p.size(d);
  }
  at::Tensor all = at::empty({n * kRow * world}, at::kLong);
  comm.all_gather(all, mine);
  const int64_t* a = all.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* ref = a + i * kRow;
    for (int r = 1; r < world; ++r) {
      const int64_t* row = a + (r * n + i) * kRow;
      if (std::equal(ref, ref + kRow, row)) continue;
      std::string param =
          r == comm.rank() ? fmt::format("'{}'", names[i]) : fmt::format("number {}", i);
      if (row[0] != ref[0]) {
        TANDEM_CHECK(false,
                     "{}: parameter {} is named differently on rank {} than "
                     "on rank 0; all ranks must build the same model",
                     who, param, r);
      }
      TANDEM_CHECK(false,
                   "{}: parameter {} is {} on rank {} but {} on rank 0; all "
                   "ranks must build the same model",
                   who, param, shape_of(row), r, shape_of(ref));
    }
  }
}

void broadcast_buffers_from_rank0(Communicator& comm, const torch::nn::Module& module,
                                  std::optional<Millis> timeout, std::string_view who) {
  // One broadcast of every buffer packed into bytes (as PyTorch's DDP
  // coalesces them): a model's buffers are many and small (BatchNorm's three
  // each), and each collective of its own would pay the link's latency.
  constexpr int64_t kAlign = 16;  // each buffer's bytes start aligned for any dtype
  std::vector<at::Tensor> buffers;
  std::vector<int64_t> offsets;
  int64_t bytes = 0;
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    const at::Tensor& buffer = item.value();
    if (!buffer.defined()) continue;
    if (buffer.layout() != at::kStrided) {
      throw InvalidArgument(fmt::format(
          "{}: buffer '{}' is a {} tensor ({}); only dense buffers can be broadcast from rank 0: "
          "register it dense, or set broadcast_buffers = false and keep it equal on every rank",
          who, item.key(), fmt::streamed(buffer.layout()), buffer.toString()));
    }
    TANDEM_CHECK(buffer.device().is_cpu(),
                 "{}: buffer '{}' is on {}; Tandem communicators take CPU tensors", who,
                 item.key(), buffer.device().str());
    if (buffer.numel() == 0) continue;
    buffers.push_back(buffer);
    offsets.push_back(bytes);
    bytes += (static_cast<int64_t>(buffer.nbytes()) + kAlign - 1) / kAlign * kAlign;
  }
  if (buffers.empty()) return;
  at::Tensor packed = at::empty({bytes}, at::kByte);
  auto slot = [&](size_t i) {
    const at::Tensor& b = buffers[i];
    return packed.narrow(0, offsets[i], static_cast<int64_t>(b.nbytes()))
        .view(b.scalar_type())
        .view(b.sizes());
  };
  if (comm.rank() == 0) {
    for (size_t i = 0; i < buffers.size(); ++i) slot(i).copy_(buffers[i]);
  }
  try {
    comm.broadcast(packed, 0, timeout);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("{}: rank {} cannot broadcast its {} buffers ({} bytes): {}",
                                      who, comm.rank(), buffers.size(), bytes, e.what()));
  }
  if (comm.rank() != 0) {
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(slot(i));
  }
}

void broadcast_from_rank0(Communicator& comm, const std::vector<at::Tensor>& tensors,
                          std::optional<Millis> timeout) {
  for (const auto& t : tensors) {
    if (t.defined() && t.numel() > 0) comm.broadcast(t, 0, timeout);
  }
}

}  // namespace tandem::parallel::detail
