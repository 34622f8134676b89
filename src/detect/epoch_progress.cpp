#include "detect/epoch_progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>

namespace tandem::detect::detail {
namespace {

std::string clock(double seconds) {
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}

}  // namespace

EpochProgress::EpochProgress(std::ostream* out, int64_t epoch, int64_t epochs, int64_t batches,
                             int64_t imgsz)
    : out_(out),
      epoch_(epoch),
      epochs_(epochs),
      batches_(batches),
      imgsz_(imgsz),
      start_(std::chrono::steady_clock::now()) {
  if (out_ == nullptr) return;
  tty_ = isatty(STDOUT_FILENO) != 0;
  *out_ << fmt::format("\n{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}\n", "Epoch", "box_loss", "cls_loss",
                       "dfl_loss", "Instances", "Size")
        << std::flush;
}

std::string EpochProgress::line(int64_t i, double box, double cls, double dfl,
                                int64_t instances) const {
  const int64_t done = i + 1;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = elapsed / static_cast<double>(done) * static_cast<double>(batches_ - done);
  const int width = 20;
  const int filled = static_cast<int>(width * done / std::max<int64_t>(batches_, 1));
  return fmt::format(
      "{:>11}{:>11.4g}{:>11.4g}{:>11.4g}{:>11}{:>11}: {:3}%|{}{}| {}/{} [{}<{}, "
      "{:.2f}it/s]",
      fmt::format("{}/{}", epoch_ + 1, epochs_), box, cls, dfl, instances, imgsz_,
      100 * done / std::max<int64_t>(batches_, 1), std::string(filled, '#'),
      std::string(width - filled, ' '), done, batches_, clock(elapsed), clock(eta),
      static_cast<double>(done) / std::max(elapsed, 1e-9));
}

void EpochProgress::update(int64_t i, double box, double cls, double dfl, int64_t instances) {
  if (out_ == nullptr) return;
  last_ = line(i, box, cls, dfl, instances);
  if (tty_) *out_ << "\r" << last_ << std::flush;
}

void EpochProgress::done() {
  if (out_ == nullptr) return;
  *out_ << (tty_ ? "\n" : last_ + "\n") << std::flush;
}

}  // namespace tandem::detect::detail
