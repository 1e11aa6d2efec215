// One HTTP/1.1 request from bytes, parsed exactly as the listener parses it
// (Beast's parser, the same body and header limits, the same conversion to
// HttpRequest), without a socket: for the fuzz target and tests.
#pragma once

#include <cstdint>
#include <string_view>

#include "http_types.hpp"

namespace sluice::net {

/// Request line and headers together; generous for tokens and long targets.
inline constexpr std::uint32_t kMaxHttpHeaderBytes = 64 * 1024;

enum class HttpParse {
  request,            // `out` holds one whole request; `input` advanced past it
  need_more,          // `input` ends inside a request
  bad_request,        // 400: not HTTP/1.x
  body_too_large,     // 413: over max_body_bytes
  headers_too_large,  // 431: over kMaxHttpHeaderBytes
};

/// Parses the request at the front of `input`. `keep_alive`: whether the
/// connection would stay open after the answer.
HttpParse parse_http_request(std::string_view& input, std::uint64_t max_body_bytes,
                             HttpRequest& out, bool& keep_alive);

}  // namespace sluice::net
