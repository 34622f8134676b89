// c10d (LibTorch's distributed layer: the TCP store, ProcessGroupGloo) logs
// through c10's glog-based logging straight to stderr ("E1201 21:24:21.826
// socket.cpp:860] [c10d] The client socket has timed out...", "[W
// ProcessGroupGloo.cpp:...] Warning: ..."): connection retries, bound
// addresses, host name warnings. Tandem reports what matters itself, in its
// own words, so these lines are silenced unless TANDEM_C10D_LOG=1 keeps them
// (for debugging c10d). Thread-safe.
#pragma once

#include <c10/util/Exception.h>

namespace tandem::detail {

// Silences c10d's logging macros for the rest of the process, unless
// TANDEM_C10D_LOG=1; reads the variable once. Throws InvalidArgument if
// TANDEM_C10D_LOG is set to anything but 0 or 1. Called before any c10d
// object is made (the TCP store, the Gloo backend).
void quiet_c10d_logs();

// While alive, c10 warnings (TORCH_WARN) raised on this thread go to
// Tandem's debug log instead of stderr, unless TANDEM_C10D_LOG=1. For the
// stretches of c10d setup that warn (Gloo's device and host name checks).
class QuietC10dWarnings {
 public:
  QuietC10dWarnings();
  ~QuietC10dWarnings();
  QuietC10dWarnings(const QuietC10dWarnings&) = delete;
  QuietC10dWarnings& operator=(const QuietC10dWarnings&) = delete;

 private:
  c10::WarningHandler* previous_ = nullptr;  // null: nothing installed
};

}  // namespace tandem::detail
