// The wire format between ParameterClient (workers) and ParameterServer. A
// request is a header (kHeaderLength float64 values: kind, step, learning
// rate, spare) with tag kHeaderTag, followed for every kind but kPull and
// kDone by the payload (the server's slice of the flat vector, in the
// parameters' dtype) with tag kPayloadTag. A reply is a header (version or
// step, staleness, finished flag, dropped flag) and the slice back. Each
// worker's messages to one server come from one thread, so a header and its
// payload never interleave with another request's.
#pragma once

#include <cstdint>

namespace tandem::parallel::detail {

enum class PsKind : int64_t {
  kPull = 1,          // reply: the shard
  kPushGradient = 2,  // payload: gradient; reply: the shard after the update
  kPushSync = 3,      // payload: gradient of step `step`; reply: the shard after that step
  kElastic = 4,       // payload: the worker's parameters; reply: alpha (x - center)
  kDone = 5,          // no payload, no reply
};

constexpr int kHeaderTag = 7100;
constexpr int kPayloadTag = 7101;
constexpr int64_t kHeaderLength = 4;

}  // namespace tandem::parallel::detail
