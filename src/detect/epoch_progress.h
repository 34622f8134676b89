// Private to src/detect: rank 0's progress of a detection epoch, in
// Ultralytics' columns (Epoch, box/cls/dfl loss, Instances, Size, then the
// bar with batches done and the ETA), redrawn on a terminal and written once
// per epoch otherwise. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>


namespace tandem::detect::detail {

class EpochProgress {
 public:
  // `out` null: silent.
  EpochProgress(std::ostream* out, int64_t epoch, int64_t epochs, int64_t batches, int64_t imgsz);

  // After batch `i` (0-based): the running mean losses and the instances of
  // the batch.
  void update(int64_t i, double box, double cls, double dfl, int64_t instances);
  // Ends the line.
  void done();

 private:
  std::string line(int64_t i, double box, double cls, double dfl, int64_t instances) const;

  std::ostream* out_;
  int64_t epoch_, epochs_, batches_, imgsz_;
  bool tty_ = false;
  std::string last_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tandem::detect::detail
