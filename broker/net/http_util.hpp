// Small text helpers of the HTTP API: UTF-8 validation, base64, query strings.
// Pure functions; tested in tests/unit/http_util_test.cpp.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/protocol/utf8.hpp"

namespace sluice::net {

/// True when `s` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
using protocol::valid_utf8;
/// Standard base64 with padding.
std::string base64_encode(std::string_view bytes);
/// True when an Accept-Encoding value (null: none sent) takes gzip: "gzip" or "*" listed
/// without q=0.
bool accepts_gzip(const std::string* accept_encoding) noexcept;
/// `bytes` gzip-compressed (RFC 1952, zlib's fastest level: a scrape is compressed on
/// every request); empty on a zlib failure.
std::string gzip(std::string_view bytes);
/// Decodes standard base64 (padding optional, no whitespace); nullopt when malformed.
std::optional<std::string> base64_decode(std::string_view text);
/// Splits "path?query" and decodes the query's name=value pairs (%XX and '+').
/// Malformed escapes are kept as written.
std::pair<std::string_view, std::vector<std::pair<std::string, std::string>>> split_target(
    std::string_view target);

}  // namespace sluice::net
