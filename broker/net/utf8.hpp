// JSON string escaping for the log and the HTTP API, over the protocol's UTF-8
// validation (sluice/protocol/utf8.hpp).
#pragma once

#include <string>
#include <string_view>

#include "sluice/protocol/utf8.hpp"

namespace sluice::net {

using protocol::utf8_sequence_length;
using protocol::valid_utf8;

/// Appends `s` escaped for the inside of a JSON string ("\"", "\\", control
/// characters); UTF-8 is kept, and each byte that is not UTF-8 becomes \ufffd.
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace sluice::net
