// Private to launch/: the parsing and quoting of elastic store values that
// the protocol and the coordinator share (elastic_protocol.cpp defines them).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::launch::elastic::detail {

// A whole, non-negative decimal int with nothing around it, or nullopt.
std::optional<int> parse_id(std::string_view text);

// A store value for a message: at most `max` bytes, non-printable bytes as \xNN.
std::string printable(std::string_view text, size_t max = 64);

}  // namespace tandem::launch::elastic::detail
