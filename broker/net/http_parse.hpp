// One HTTP/1.1 request from bytes, parsed exactly as the listener parses it
// (Beast's parser, the same body and header limits, the same conversion to
// HttpRequest), without a socket: for the fuzz target and tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <optional>
#include <vector>

#include "http_types.hpp"

namespace sluice::net {

/// Request line and headers together; generous for tokens and long targets.
inline constexpr std::uint32_t kMaxHttpHeaderBytes = 64 * 1024;

enum class HttpParse {
  request,            // `out` holds one whole request; `input` advanced past it
  need_more,          // `input` ends inside a request
  bad_request,        // 400: not HTTP/1.x, or framing RFC 9112 forbids (see check_framing)
  not_implemented,    // 501: a transfer coding other than chunked
  body_too_large,     // 413: over max_body_bytes
  headers_too_large,  // 431: over kMaxHttpHeaderBytes
};

/// Where the header block at the front of a connection's bytes stands.
struct HeaderBlockScan {
  enum State { complete, need_more, bad } state = need_more;
  std::size_t size = 0;      // complete: bytes up to and including the empty line
  const char* problem = "";  // bad: why
  // need_more: where the next scan of the same, longer, bytes resumes, so a
  // slow sender costs no rescans: the next byte to look at, the start of its
  // line, and whether the request line is behind.
  std::size_t resume = 0;
  std::size_t line_start = 0;
  bool past_request_line = false;
};

/// Checks the raw header block (request line and fields) before Beast sees it,
/// for what Beast accepts and RFC 9112 does not: a bare CR or LF (§2.2) and an
/// obs-fold, a line that starts with a space or tab (§5.2). Both would let a
/// proxy in front of us and this parser read different requests from the same
/// bytes.
/// `scan` is a fresh HeaderBlockScan, or the need_more answer for a prefix of
/// `bytes` (the scan then goes on where it stopped).
void scan_header_block(std::string_view bytes, HeaderBlockScan& scan) noexcept;

/// A request whose framing is refused: answered, then the connection closes.
struct FramingError {
  unsigned status = 400;  // 400, or 501 for an unimplemented transfer coding
  std::string message;
};

/// The framing rules of RFC 9112 §6.1 and §6.3 that Beast leaves to us, checked
/// on the parsed header fields. `transfer_encodings`: every Transfer-Encoding
/// field's value; `content_lengths`: every Content-Length field's value.
/// Only a lone final `chunked` is a transfer coding we implement (anything
/// else would leave the body's bytes to be read as the next request); a
/// Transfer-Encoding with a Content-Length, a repeated or listed Content-Length
/// and a Transfer-Encoding on an HTTP/1.0 request are refused.
std::optional<FramingError> check_framing(const std::vector<std::string_view>& transfer_encodings,
                                          const std::vector<std::string_view>& content_lengths,
                                          unsigned http_version);

/// Parses the request at the front of `input`. `keep_alive`: whether the
/// connection would stay open after the answer.
HttpParse parse_http_request(std::string_view& input, std::uint64_t max_body_bytes,
                             HttpRequest& out, bool& keep_alive);

}  // namespace sluice::net
