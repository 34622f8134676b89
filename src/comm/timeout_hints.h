// The words that end every TimeoutError of the comm layer: which setting
// raises the timeout that ran out, under each of its names (the `tandem
// train` flag, the environment variable, the C++ field).
#pragma once

#include <string_view>

namespace tandem::detail {

// Collectives, point-to-point, backend setup: the communicator's timeout.
inline constexpr std::string_view kCommTimeoutHint =
    "raise --comm-timeout or TANDEM_COMM_TIMEOUT (InitOptions::timeout, BackendOptions::timeout), "
    "or the call's timeout argument";

// Joining the job: reaching the store, the token check, waiting for every rank.
inline constexpr std::string_view kRendezvousTimeoutHint =
    "raise --rendezvous-timeout or TANDEM_RDZV_TIMEOUT (InitOptions::rendezvous_timeout)";

}  // namespace tandem::detail
