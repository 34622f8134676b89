// Tandem's error types. Every failure a user can cause or observe is thrown as
// a subclass of tandem::Error (a std::runtime_error) whose message says what
// failed, where (rank, operation, key, file) and what to do about it.
// Thread-safe: these are plain value types.
#pragma once

#include <stdexcept>
#include <string>

namespace tandem {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad caller input: an argument, flag or config value.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A blocking operation did not finish before its deadline.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// A peer rank died or a link broke. The communicator is unusable afterwards.
class PeerError : public Error {
 public:
  using Error::Error;
};

// A checkpoint is corrupt, truncated, of an unsupported version or mismatched.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// The feature is not available in this build or on this backend.
class NotSupported : public Error {
 public:
  using Error::Error;
};

// A Tandem bug: an internal invariant did not hold.
class InternalError : public Error {
 public:
  using Error::Error;
};

}  // namespace tandem
