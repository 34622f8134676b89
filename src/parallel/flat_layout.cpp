#include "tandem/parallel/flat_layout.h"

#include <ATen/ops/empty.h>
#include <c10/util/accumulate.h>

#include <algorithm>

#include "tandem/core/check.h"

namespace tandem::parallel {

FlatLayout make_flat_layout(const std::vector<at::Tensor>& tensors,
                            const std::vector<size_t>& order) {
  FlatLayout layout;
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    TANDEM_CHECK(i < tensors.size(), "make_flat_layout: index {} but only {} tensors", i,
                 tensors.size());
    const at::Tensor& t = tensors[i];
    if (k == 0) layout.dtype = t.scalar_type();
    TANDEM_CHECK(t.scalar_type() == layout.dtype,
                 "make_flat_layout: tensor {} is {} but the group is {}; groups never mix dtypes",
                 i, c10::toString(t.scalar_type()), c10::toString(layout.dtype));
    layout.entries.push_back({i, t.sizes().vec(), layout.numel, t.numel()});
    layout.numel += t.numel();
  }
  return layout;
}

std::vector<FlatPiece> pieces_in(const FlatLayout& layout, ShardRange range) {
  TANDEM_CHECK(range.offset >= 0 && range.numel >= 0 && range.offset + range.numel <= layout.numel,
               "pieces_in: range [{}, {}) leaves the flat vector of {} elements", range.offset,
               range.offset + range.numel, layout.numel);
  std::vector<FlatPiece> pieces;
  const int64_t end = range.offset + range.numel;
  // Entries are sorted by offset: start at the first one ending after range.offset.
  auto it = std::upper_bound(layout.entries.begin(), layout.entries.end(), range.offset,
                             [](int64_t x, const FlatLayout::Entry& e) { return x < e.offset + e.numel; });
  for (; it != layout.entries.end() && it->offset < end; ++it) {
    const int64_t begin = std::max(range.offset, it->offset);
    const int64_t stop = std::min(end, it->offset + it->numel);
    if (stop <= begin) continue;
    pieces.push_back({static_cast<size_t>(it - layout.entries.begin()), begin - it->offset,
                      begin - range.offset, stop - begin});
  }
  return pieces;
}

namespace {

// The flattened elements [offset, offset + numel) of t, as a view when t is
// contiguous; otherwise a copy (which then cannot be written back).
at::Tensor flat_slice(const at::Tensor& t, int64_t offset, int64_t numel) {
  return t.reshape({-1}).narrow(0, offset, numel);
}

}  // namespace

void copy_range_out(const FlatLayout& layout, const std::vector<at::Tensor>& tensors,
                    ShardRange range, const at::Tensor& out) {
  TANDEM_CHECK(out.numel() == range.numel, "copy_range_out: output has {} elements, range {}",
               out.numel(), range.numel);
  for (const FlatPiece& p : pieces_in(layout, range)) {
    const at::Tensor& t = tensors.at(layout.entries[p.entry].index);
    out.narrow(0, p.range_offset, p.numel).copy_(flat_slice(t, p.entry_offset, p.numel));
  }
}

void copy_range_in(const FlatLayout& layout, const at::Tensor& in, ShardRange range,
                   const std::vector<at::Tensor>& tensors) {
  TANDEM_CHECK(in.numel() == range.numel, "copy_range_in: input has {} elements, range {}",
               in.numel(), range.numel);
  for (const FlatPiece& p : pieces_in(layout, range)) {
    const at::Tensor& t = tensors.at(layout.entries[p.entry].index);
    TANDEM_CHECK(t.is_contiguous(), "copy_range_in: tensor {} is not contiguous",
                 layout.entries[p.entry].index);
    t.view({-1}).narrow(0, p.entry_offset, p.numel).copy_(in.narrow(0, p.range_offset, p.numel));
  }
}

std::vector<at::Tensor> entry_views(const FlatLayout& layout, const at::Tensor& flat,
                                    size_t tensor_count) {
  TANDEM_CHECK(flat.is_contiguous() && flat.numel() == layout.numel,
               "entry_views: need a contiguous buffer of {} elements, got {}", layout.numel,
               flat.numel());
  std::vector<at::Tensor> views(tensor_count);
  for (const auto& e : layout.entries) {
    TANDEM_CHECK(e.index < tensor_count, "entry_views: index {} but {} slots", e.index,
                 tensor_count);
    views[e.index] = flat.narrow(0, e.offset, e.numel).view(e.shape);
  }
  return views;
}

at::Tensor flat_alias(const at::Tensor& flat, int64_t offset, at::IntArrayRef shape) {
  const int64_t numel = c10::multiply_integers(shape);
  TANDEM_CHECK(flat.is_contiguous() && offset >= 0 && offset + numel <= flat.numel(),
               "flat_alias: [{}, {}) must lie inside a contiguous buffer of {} elements", offset,
               offset + numel, flat.numel());
  at::Tensor alias = at::empty({0}, flat.options());
  at::NoGradGuard no_grad;
  alias.set_(flat.storage(), flat.storage_offset() + offset, shape);
  return alias;
}

}  // namespace tandem::parallel
