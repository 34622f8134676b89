// DeviceMesh: the world's ranks arranged as an N-dimensional grid (for
// example 2 x 2, "data" x "model"), handing out the communicator along each
// dimension. Rank r sits at the row-major coordinates of r (the last
// dimension varies fastest). The communicator of dimension d connects the
// ranks that share every other coordinate, ordered by their coordinate in d.
// Construction is collective over `world`; afterwards the object is
// read-only and thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tandem/comm/communicator.h"

namespace tandem {

class DeviceMesh {
 public:
  // Collective. Throws InvalidArgument unless the shape's product equals
  // world->size(), every extent is >= 1 and the names are unique and as many
  // as the dimensions.
  DeviceMesh(std::shared_ptr<Communicator> world, std::vector<int> shape,
             std::vector<std::string> names);

  const std::vector<int>& shape() const { return shape_; }
  const std::vector<std::string>& names() const { return names_; }
  // This rank's coordinates, one per dimension.
  const std::vector<int>& coordinates() const { return coords_; }
  // This rank's coordinate along `dim` (InvalidArgument naming the known
  // dimensions when there is no such name).
  int coordinate(const std::string& dim) const;
  // The communicator along `dim` that contains this rank.
  std::shared_ptr<Communicator> get(const std::string& dim) const;
  const std::shared_ptr<Communicator>& world() const { return world_; }

  // Pure helpers: the coordinates of `rank` in `shape`, and back.
  static std::vector<int> coordinates_of(int rank, const std::vector<int>& shape);
  static int rank_of(const std::vector<int>& coords, const std::vector<int>& shape);

 private:
  size_t index_of(const std::string& dim) const;

  std::shared_ptr<Communicator> world_;
  std::vector<int> shape_;
  std::vector<std::string> names_;
  std::vector<int> coords_;
  std::vector<std::shared_ptr<Communicator>> dims_;
};

}  // namespace tandem
