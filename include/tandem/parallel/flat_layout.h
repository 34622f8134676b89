// FlatLayout: how a group of same-dtype tensors (a ZeRO bucket, an FSDP unit)
// sits in one flat vector, and which part of it each rank owns. Sharded
// strategies keep 1/N of the flat vector per rank, split with
// shard_range(numel, world_size, rank) (see communicator.h), so the layout
// itself does not depend on the world size: that is what lets a sharded
// checkpoint be read back at another world size.
//
// Pure logic plus copy helpers; no communicator. Thread-compatible.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "tandem/comm/communicator.h"

namespace tandem::parallel {

struct FlatLayout {
  struct Entry {
    size_t index = 0;            // caller's tensor index (e.g. parameter number)
    std::vector<int64_t> shape;  // the tensor's shape
    int64_t offset = 0;          // first element in the flat vector
    int64_t numel = 0;
  };
  std::vector<Entry> entries;  // in flat order
  int64_t numel = 0;
  at::ScalarType dtype = at::kFloat;
};

// Lays out tensors[order[0]], tensors[order[1]], ... back to back. Throws
// InvalidArgument if the order names a missing tensor or the dtypes differ.
FlatLayout make_flat_layout(const std::vector<at::Tensor>& tensors,
                            const std::vector<size_t>& order);

// The part of an entry that falls inside a range of the flat vector.
struct FlatPiece {
  size_t entry = 0;          // position in FlatLayout::entries
  int64_t entry_offset = 0;  // first element within the entry's tensor (flattened)
  int64_t range_offset = 0;  // first element within the range
  int64_t numel = 0;
};

// Pieces of every entry overlapping `range`, in flat order (empty entries
// and non-overlapping ones are left out). Throws InvalidArgument if the range
// leaves the flat vector.
std::vector<FlatPiece> pieces_in(const FlatLayout& layout, ShardRange range);

// Copies the tensors (indexed as in make_flat_layout) into the part of the
// flat vector given by `range`; `out` has range.numel elements. Tensors may
// be non-contiguous.
void copy_range_out(const FlatLayout& layout, const std::vector<at::Tensor>& tensors,
                    ShardRange range, const at::Tensor& out);

// The reverse: writes `in` (range.numel elements) back into the tensors'
// elements that `range` covers.
void copy_range_in(const FlatLayout& layout, const at::Tensor& in, ShardRange range,
                   const std::vector<at::Tensor>& tensors);

// Views of a contiguous flat buffer shaped as the layout's entries, indexed
// like the caller's tensors (entries[i].index); other slots stay undefined.
std::vector<at::Tensor> entry_views(const FlatLayout& layout, const at::Tensor& flat,
                                    size_t tensor_count);

// A contiguous tensor of `shape` over flat[offset, offset + numel) that
// shares flat's storage but is not an autograd view of it (built with set_).
// Use it for what LibTorch code may detach_() in place: a parameter's .grad
// (Optimizer::zero_grad calls grad.detach_(), which throws on views) or an
// optimizer's shard. Throws InvalidArgument if the range leaves `flat` or
// `flat` is not contiguous.
at::Tensor flat_alias(const at::Tensor& flat, int64_t offset, at::IntArrayRef shape);

}  // namespace tandem::parallel
