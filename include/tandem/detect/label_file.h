// One YOLO-format label file: a row `class x_center y_center width height`
// per object, coordinates normalised to [0, 1]. check_label_file() reads and
// validates a file the way Ultralytics does: a missing or empty file means no
// objects; a malformed one is rejected with a reason, and the image it
// belongs to is skipped. Thread-safe: no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::detect {

// One object: class id and a box in normalised centre-size coordinates.
struct BoxLabel {
  int64_t cls = 0;
  float x = 0, y = 0, w = 0, h = 0;
  bool operator==(const BoxLabel&) const = default;
};

struct LabelCheck {
  std::vector<BoxLabel> boxes;  // valid rows, duplicates removed
  std::string error;            // why the file is rejected; empty when it is fine
  bool missing = false;         // no label file: the image has no objects
  bool empty = false;           // a label file without rows
  int64_t duplicates = 0;       // identical rows dropped
};

// Reads the label file at `path` for a data set of `num_classes` classes.
// Rejects (sets `error`, never throws for file content) a file that cannot
// be read, a row without exactly 5 columns, a value that is not a number, a
// class id that is not an integer in [0, num_classes), and a coordinate
// outside [0, 1]. Throws tandem::InvalidArgument if num_classes < 1.
LabelCheck check_label_file(const std::string& path, int64_t num_classes);

}  // namespace tandem::detect
