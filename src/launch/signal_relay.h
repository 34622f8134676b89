// Catches SIGINT and SIGTERM sent to tandem-run so that the launcher can
// forward them to its workers, and ignores SIGPIPE so that a closed stdout
// (tandem-run ... | head) does not kill the launcher and orphan the job.
// The previous dispositions come back when the relay is destroyed.
// Not thread-safe; at most one relay exists at a time (a signal handler can
// only reach process-wide state).
#pragma once

#include <signal.h>

#include <string>

namespace tandem::launch {

class SignalRelay {
 public:
  // Throws tandem::InternalError when another relay is alive.
  SignalRelay();
  ~SignalRelay();
  SignalRelay(const SignalRelay&) = delete;
  SignalRelay& operator=(const SignalRelay&) = delete;

  // The first signal received, or 0.
  int first() const;
  // How many SIGINT/SIGTERM arrived so far.
  int count() const;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
  struct sigaction old_pipe_ {};
};

// "SIGTERM", "SIGKILL", ...; "signal 42" for a number without a name.
std::string signal_name(int sig);

}  // namespace tandem::launch
