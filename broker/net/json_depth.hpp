// How deeply JSON text nests, found without parsing it. nlohmann parses and
// frees deep documents without recursing, but writing one out (dump) and
// walking one do recurse: every JSON body from the network is checked with
// this before it is parsed, so no request can take the engine thread's stack.
#pragma once

#include <cstddef>
#include <string_view>

namespace sluice::net {

/// The deepest nesting any JSON value from the network may have.
inline constexpr std::size_t kMaxJsonDepth = 128;

/// True when `text` opens no more than `limit` arrays and objects inside one
/// another (brackets inside strings do not count; malformed text is the
/// parser's to refuse).
inline bool json_depth_within(std::string_view text, std::size_t limit = kMaxJsonDepth) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // the escaped character cannot end the string
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return false;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return true;
}

}  // namespace sluice::net
