// A synthetic detection data set in the Ultralytics layout, written as real
// image files: 1-6 shapes (circle, square, triangle, cross) of varied sizes,
// colours and overlaps on textured, noisy backgrounds.
//
//   DIR/images/{train,val}/NNNNNN.{jpg,png}   (every fourth image is a PNG)
//   DIR/labels/{train,val}/NNNNNN.txt
//   DIR/shapes.yaml                          (path: DIR, absolute)
//
// The output depends only on the options: the same seed writes the same
// bytes. Thread-safe: it keeps no state (two calls must not share a DIR).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::detect {

struct MakeShapesOptions {
  std::string dir;      // created when missing
  int64_t train = 512;  // training images
  int64_t val = 128;    // validation images
  int64_t imgsz = 160;  // image side in pixels (at least 64)
  uint64_t seed = 0;
};

struct MakeShapesResult {
  std::string yaml_path;  // DIR/shapes.yaml
  int64_t images = 0;
  int64_t objects = 0;
};

// The class names, in class-id order.
const std::vector<std::string>& shape_class_names();

// Writes the data set. Throws tandem::InvalidArgument for an empty `dir`,
// negative counts, no images at all, imgsz below 64, or a folder that cannot
// be written (naming it).
MakeShapesResult make_shapes(const MakeShapesOptions& options);

}  // namespace tandem::detect
