#include "tandem/detect/detection_loader.h"

#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <opencv2/core/utility.hpp>

#include "tandem/core/check.h"
#include "tandem/core/error.h"

namespace tandem::detect {
namespace {

// OpenCV's thread pool is process-wide: off while any loader has workers
// (they are the parallelism; the pool would add threads beside them and the
// training thread), restored when the last such loader ends.
class OpenCvThreadsOff {
 public:
  OpenCvThreadsOff() {
    std::lock_guard<std::mutex> lock(mu());
    if (count()++ == 0) {
      saved() = cv::getNumThreads();
      cv::setNumThreads(0);
    }
  }
  ~OpenCvThreadsOff() {
    std::lock_guard<std::mutex> lock(mu());
    if (--count() == 0) cv::setNumThreads(saved());
  }
  OpenCvThreadsOff(const OpenCvThreadsOff&) = delete;
  OpenCvThreadsOff& operator=(const OpenCvThreadsOff&) = delete;

 private:
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static int& count() {  // guarded by mu()
    static int n = 0;
    return n;
  }
  static int& saved() {  // guarded by mu()
    static int n = 0;
    return n;
  }
};

}  // namespace

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int64_t loader_workers(int64_t requested, int world) {
  TANDEM_CHECK(requested >= 0,
               "detect: workers must be >= 0 (0 loads on the training thread), got {}", requested);
  return std::min<int64_t>(requested, std::max(1, usable_cores() / std::max(1, world)));
}

DetectionLoader::DetectionLoader(const DetectionDataset& data,
                                 std::vector<std::vector<int64_t>> batches, int64_t epoch,
                                 LoaderOptions options)
    : data_(data), batches_(std::move(batches)), epoch_(epoch), options_(options) {
  TANDEM_CHECK(options_.workers >= 0 && options_.prefetch >= 1,
               "DetectionLoader: workers must be >= 0 and prefetch >= 1, got {} and {}",
               options_.workers, options_.prefetch);
  for (size_t b = 0; b < batches_.size(); ++b) {
    TANDEM_CHECK(!batches_[b].empty(), "DetectionLoader: batch {} has no samples", b);
    for (int64_t i : batches_[b]) {
      TANDEM_CHECK(i >= 0 && i < data_.size(),
                   "DetectionLoader: batch {} names sample {}, outside [0, {})", b, i,
                   data_.size());
    }
    first_task_.push_back(tasks_);
    tasks_ += static_cast<int64_t>(batches_[b].size());
    samples_.emplace_back(batches_[b].size());
    missing_.push_back(static_cast<int64_t>(batches_[b].size()));
  }
  if (options_.workers == 0) return;
  opencv_threads_off_ = std::make_shared<OpenCvThreadsOff>();
  for (int64_t w = 0; w < options_.workers; ++w) threads_.emplace_back([this] { work(); });
}

DetectionLoader::~DetectionLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  space_.notify_all();
  for (auto& t : threads_) t.join();
}

bool DetectionLoader::may_take() const {
  if (next_task_ >= tasks_) return false;
  const auto it = std::upper_bound(first_task_.begin(), first_task_.end(), next_task_);
  const int64_t batch = (it - first_task_.begin()) - 1;
  return batch < consumed_ + options_.prefetch;
}

// The sample, or an exception that names its file: the data set's own
// errors do; anything else (OpenCV, memory) is wrapped with the path.
DetectionSample DetectionLoader::load(int64_t index) const {
  const std::string& path = data_.records()[index].image;
  try {
    return data_.get(index, epoch_);
  } catch (const Error& e) {
    if (std::string_view(e.what()).find(path) != std::string_view::npos) throw;
    throw Error(fmt::format("detect data: sample {} ('{}'): {}", index, path, e.what()));
  } catch (const std::exception& e) {
    throw Error(fmt::format("detect data: sample {} ('{}'): {}", index, path, e.what()));
  }
}

void DetectionLoader::work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    space_.wait(lock, [this] { return stop_ || error_ || next_task_ >= tasks_ || may_take(); });
    if (stop_ || error_ || next_task_ >= tasks_) return;
    const int64_t task = next_task_++;
    const auto it = std::upper_bound(first_task_.begin(), first_task_.end(), task);
    const size_t b = static_cast<size_t>(it - first_task_.begin()) - 1;
    const size_t j = static_cast<size_t>(task - first_task_[b]);
    lock.unlock();
    DetectionSample sample;
    std::exception_ptr failed;
    try {
      sample = load(batches_[b][j]);
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    if (failed) {
      if (!error_) error_ = failed;
      ready_.notify_all();
      space_.notify_all();
      return;
    }
    samples_[b][j] = std::move(sample);
    if (--missing_[b] == 0) ready_.notify_all();
  }
}

DetectionBatch DetectionLoader::next() {
  std::vector<DetectionSample> samples;
  {
    std::unique_lock<std::mutex> lock(mu_);
    TANDEM_CHECK(consumed_ < size(), "DetectionLoader: all {} batches were handed out", size());
    const size_t b = static_cast<size_t>(consumed_);
    if (threads_.empty()) {
      for (size_t j = 0; j < batches_[b].size(); ++j) samples_[b][j] = load(batches_[b][j]);
      missing_[b] = 0;
    }
    const bool ready = ready_.wait_for(lock, options_.timeout,
                                       [&] { return error_ != nullptr || missing_[b] == 0; });
    if (error_) std::rethrow_exception(error_);
    if (!ready) {
      throw TimeoutError(fmt::format(
          "DetectionLoader: batch {} of {} (epoch {}) was not ready after {} ms ({} of its {} "
          "samples missing); a file may be on a stalled file system",
          b, size(), epoch_, options_.timeout.count(), missing_[b], batches_[b].size()));
    }
    samples = std::move(samples_[b]);
    samples_[b].clear();
    ++consumed_;
  }
  space_.notify_all();
  return collate(std::move(samples));
}

}  // namespace tandem::detect
