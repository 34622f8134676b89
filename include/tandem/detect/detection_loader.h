// DetectionLoader: the batches of one pass over a DetectionDataset, decoded
// and augmented by background threads while the caller trains on the batch
// before, as a PyTorch DataLoader with num_workers and prefetching does.
//
// The caller names the sample indices of every batch up front (one epoch's
// slice of the global order, or a validation shard); `workers` threads take
// the samples in that order, at most `prefetch` batches ahead of the one
// next() hands out, and next() returns the batches in order. A sample's
// randomness comes from (seed, epoch, index) (detection_dataset.h), so the
// batches are bitwise the same for any number of workers; workers = 0
// prepares each batch on the calling thread inside next().
//
// Threads: the workers use OpenCV only (no LibTorch intra-op parallelism);
// while a loader with workers exists OpenCV's own thread pool is turned off
// for the process (cv::setNumThreads(0)), and restored when the last one
// ends. Loaders must not overlap with a change of the data set's mosaic
// (DetectionDataset::set_mosaic): make one per epoch.
// Not thread-safe: one thread calls next(). Nothing here is collective.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tandem/detect/collate.h"
#include "tandem/detect/detection_dataset.h"

namespace tandem::detect {

struct LoaderOptions {
  // Threads that prepare samples; 0 prepares them in next(), on the caller.
  int64_t workers = 0;
  // Batches prepared ahead of the one being trained on (at least 1). More
  // smooths out slow files at the cost of memory (one batch of images each).
  int64_t prefetch = 2;
  // How long next() waits for a batch before throwing tandem::TimeoutError.
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
};

// The cores this process may run on (its affinity mask: taskset, cgroups'
// cpusets), which std::thread::hardware_concurrency does not consult.
int usable_cores();

// The workers a rank of `world` ranks runs for a request of `requested`
// (Ultralytics' rule): at most usable_cores() / world, and none when 0 is
// requested. Throws tandem::InvalidArgument for requested < 0.
int64_t loader_workers(int64_t requested, int world);

class DetectionLoader {
 public:
  // Loads `batches` (each a non-empty list of sample indices of `data`) of
  // epoch `epoch`. `data` must outlive the loader. Starts the workers.
  // Throws tandem::InvalidArgument for an empty batch, an index out of
  // range, workers < 0 or prefetch < 1.
  DetectionLoader(const DetectionDataset& data, std::vector<std::vector<int64_t>> batches,
                  int64_t epoch, LoaderOptions options);
  // Stops the workers (each finishes at most the sample it is preparing)
  // and joins them.
  ~DetectionLoader();
  DetectionLoader(const DetectionLoader&) = delete;
  DetectionLoader& operator=(const DetectionLoader&) = delete;

  int64_t size() const { return static_cast<int64_t>(batches_.size()); }

  // The next batch, collated (collate.h). Blocks until its samples are
  // ready, at most options.timeout (then throws tandem::TimeoutError naming
  // the batch). Rethrows the first exception of a worker (it names the
  // file). Throws tandem::InvalidArgument after the last batch.
  DetectionBatch next();

 private:
  void work();
  // Samples a worker may take: those of batches before consumed_ + prefetch.
  bool may_take() const;
  DetectionSample load(int64_t index) const;

  const DetectionDataset& data_;
  const std::vector<std::vector<int64_t>> batches_;
  const int64_t epoch_;
  const LoaderOptions options_;
  std::vector<int64_t> first_task_;  // flattened index of each batch's first sample
  int64_t tasks_ = 0;                // samples in all batches

  std::mutex mu_;
  std::condition_variable ready_;  // a batch completed, or a worker failed
  std::condition_variable space_;  // next() moved on, or the loader is stopping
  int64_t next_task_ = 0;          // guarded by mu_: the next sample a worker takes
  int64_t consumed_ = 0;           // guarded by mu_: batches next() has handed out
  std::vector<std::vector<DetectionSample>> samples_;  // guarded by mu_
  std::vector<int64_t> missing_;                       // guarded by mu_: samples not ready
  std::exception_ptr error_;                           // guarded by mu_: the first failure
  bool stop_ = false;                                  // guarded by mu_
  std::shared_ptr<void> opencv_threads_off_;           // held while there are workers
  std::vector<std::thread> threads_;
};

}  // namespace tandem::detect
