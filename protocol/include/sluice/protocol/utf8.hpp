// UTF-8 validation: the broker's log and HTTP API (which must write valid
// JSON whatever a client sends) and sluicectl --json share it. Pure: std only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::protocol {

/// The length of the well-formed UTF-8 sequence starting at `s[at]` (1 to 4),
/// or 0 when it is not one: a stray continuation byte, a truncated sequence,
/// an overlong form, a surrogate or a code point past U+10FFFF.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t at) noexcept {
  const auto c = static_cast<unsigned char>(s[at]);
  if (c < 0x80) return 1;
  std::size_t extra;
  std::uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    extra = 1;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    extra = 2;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    extra = 3;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() - at <= extra) return 0;
  for (std::size_t i = 1; i <= extra; ++i) {
    const auto next = static_cast<unsigned char>(s[at + i]);
    if ((next & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (next & 0x3F);
  }
  static constexpr std::uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
  if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return extra + 1;
}

/// True when all of `s` is well-formed UTF-8 (as utf8_sequence_length judges it).
inline bool valid_utf8(std::string_view s) noexcept {
  for (std::size_t at = 0; at < s.size();) {
    const std::size_t n = utf8_sequence_length(s, at);
    if (n == 0) return false;
    at += n;
  }
  return true;
}

}  // namespace sluice::protocol
