#include "tandem/comm/device_mesh.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <set>

#include "tandem/core/check.h"

namespace tandem {

std::vector<int> DeviceMesh::coordinates_of(int rank, const std::vector<int>& shape) {
  std::vector<int> c(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    c[i] = rank % shape[i];
    rank /= shape[i];
  }
  return c;
}

int DeviceMesh::rank_of(const std::vector<int>& coords, const std::vector<int>& shape) {
  TANDEM_CHECK(coords.size() == shape.size(), "DeviceMesh: {} coordinates for {} dimensions",
               coords.size(), shape.size());
  int r = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    TANDEM_CHECK(coords[i] >= 0 && coords[i] < shape[i],
                 "DeviceMesh: coordinate {} of dimension {} is outside [0, {})", coords[i], i,
                 shape[i]);
    r = r * shape[i] + coords[i];
  }
  return r;
}

DeviceMesh::DeviceMesh(std::shared_ptr<Communicator> world, std::vector<int> shape,
                       std::vector<std::string> names)
    : world_(std::move(world)), shape_(std::move(shape)), names_(std::move(names)) {
  TANDEM_CHECK(world_ != nullptr, "DeviceMesh: the world communicator is null");
  TANDEM_CHECK(!shape_.empty(), "DeviceMesh: the shape is empty");
  TANDEM_CHECK(names_.size() == shape_.size(), "DeviceMesh: {} names for {} dimensions",
               names_.size(), shape_.size());
  TANDEM_CHECK(std::set<std::string>(names_.begin(), names_.end()).size() == names_.size(),
               "DeviceMesh: dimension names must be unique (got {})", fmt::join(names_, ", "));
  int64_t product = 1;
  for (int e : shape_) {
    TANDEM_CHECK(e >= 1, "DeviceMesh: every extent must be >= 1 (shape {})",
                 fmt::join(shape_, "x"));
    product *= e;
  }
  TANDEM_CHECK(product == world_->size(),
               "DeviceMesh: shape {} holds {} ranks but the world has {}", fmt::join(shape_, "x"),
               product, world_->size());
  coords_ = coordinates_of(world_->rank(), shape_);
  for (size_t d = 0; d < shape_.size(); ++d) {
    // Color: this rank's position with dimension d taken out.
    std::vector<int> others = coords_;
    others[d] = 0;
    std::vector<int> flat_shape = shape_;
    flat_shape[d] = 1;
    dims_.push_back(world_->split(rank_of(others, flat_shape), coords_[d]));
  }
}

size_t DeviceMesh::index_of(const std::string& dim) const {
  auto it = std::find(names_.begin(), names_.end(), dim);
  TANDEM_CHECK(it != names_.end(), "DeviceMesh: no dimension '{}' (dimensions: {})", dim,
               fmt::join(names_, ", "));
  return static_cast<size_t>(it - names_.begin());
}

int DeviceMesh::coordinate(const std::string& dim) const { return coords_[index_of(dim)]; }

std::shared_ptr<Communicator> DeviceMesh::get(const std::string& dim) const {
  return dims_[index_of(dim)];
}

}  // namespace tandem
