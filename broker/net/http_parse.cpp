#include "http_parse.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>

#include "http_beast.hpp"

namespace sluice::net {

namespace http = boost::beast::http;

HttpRequest to_http_request(http::request<http::string_body>& message, std::string peer) {
  HttpRequest request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  request.headers.reserve(8);
  for (const auto& field : message) {
    std::string name(field.name_string());
    for (char& c : name)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    request.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  request.body = std::move(message.body());
  request.peer = std::move(peer);
  return request;
}

void scan_header_block(std::string_view bytes, HeaderBlockScan& scan) noexcept {
  std::size_t i = scan.resume;
  std::size_t line_start = scan.line_start;
  if (i == 0 && !scan.past_request_line) {
    // Empty lines before the request line are not this scan's business (RFC
    // 9112 §2.2 lets a server skip them; Beast refuses them as a bad method).
    while (i + 1 < bytes.size() && bytes[i] == '\r' && bytes[i + 1] == '\n') i += 2;
    line_start = i;
  }
  bool first_line = !scan.past_request_line;
  for (; i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (i == line_start && !first_line && (c == ' ' || c == '\t')) {
      scan.state = HeaderBlockScan::bad;
      scan.problem = "a header line starts with whitespace (obs-fold is not accepted)";
      return;
    }
    if (c == '\n') {
      scan.state = HeaderBlockScan::bad;
      scan.problem = "bare LF in the header block (lines end with CRLF)";
      return;
    }
    if (c != '\r') continue;
    if (i + 1 == bytes.size()) break;  // the LF may be in the next read
    if (bytes[i + 1] != '\n') {
      scan.state = HeaderBlockScan::bad;
      scan.problem = "bare CR in the header block";
      return;
    }
    if (i == line_start && !first_line) {  // the empty line: the block is whole
      scan.state = HeaderBlockScan::complete;
      scan.size = i + 2;
      return;
    }
    first_line = false;
    ++i;  // past the LF
    line_start = i + 1;
  }
  scan.resume = i;  // at the end, or at a CR whose LF has not come yet
  scan.line_start = line_start;
  scan.past_request_line = !first_line;
}

namespace {

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// `s` cut to 64 bytes with every byte that is not a token character (RFC 9110
/// §5.6.2) as '?': safe to quote in a JSON message and a log line.
std::string printable_token(std::string_view s) {
  std::string out(s.substr(0, 64));
  for (char& c : out) {
    const bool tchar = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!tchar) c = '?';
  }
  return out;
}

}  // namespace

std::optional<FramingError> check_framing(const std::vector<std::string_view>& transfer_encodings,
                                          const std::vector<std::string_view>& content_lengths,
                                          unsigned http_version) {
  if (content_lengths.size() > 1) return FramingError{400, "more than one Content-Length field"};
  if (content_lengths.size() == 1) {
    const std::string_view v = trim_ows(content_lengths.front());
    if (v.empty() || v.find_first_not_of("0123456789") != std::string_view::npos)
      return FramingError{400, "Content-Length must be one decimal number"};
  }
  if (transfer_encodings.empty()) return std::nullopt;
  if (!content_lengths.empty())
    return FramingError{400, "Transfer-Encoding and Content-Length together"};
  if (http_version < 11) return FramingError{400, "Transfer-Encoding on an HTTP/1.0 request"};
  std::vector<std::string_view> codings;
  for (std::string_view field : transfer_encodings) {
    while (true) {
      const std::size_t comma = field.find(',');
      const std::string_view coding = trim_ows(field.substr(0, comma));
      if (!coding.empty()) codings.push_back(coding);
      if (comma == std::string_view::npos) break;
      field.remove_prefix(comma + 1);
    }
  }
  for (std::string_view coding : codings)
    if (!boost::beast::iequals(boost::beast::string_view(coding.data(), coding.size()), "chunked"))
      return FramingError{501, "transfer coding " + printable_token(coding) +
                                   " is not implemented (only chunked is)"};
  if (codings.size() != 1) return FramingError{400, "Transfer-Encoding must be chunked, once"};
  return std::nullopt;
}

std::optional<FramingError> check_framing(const http::request_header<>& header) {
  std::vector<std::string_view> te, cl;
  for (const auto& field : header) {
    if (field.name() == http::field::transfer_encoding)
      te.emplace_back(field.value().data(), field.value().size());
    if (field.name() == http::field::content_length)
      cl.emplace_back(field.value().data(), field.value().size());
  }
  return check_framing(te, cl, header.version());
}

HttpParse parse_http_request(std::string_view& input, std::uint64_t max_body_bytes,
                             HttpRequest& out, bool& keep_alive) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(max_body_bytes);
  parser.header_limit(kMaxHttpHeaderBytes);
  parser.eager(true);
  HeaderBlockScan scan;
  scan_header_block(input, scan);
  if (scan.state == HeaderBlockScan::bad) return HttpParse::bad_request;
  if (scan.state == HeaderBlockScan::need_more)
    return input.size() > kMaxHttpHeaderBytes ? HttpParse::headers_too_large : HttpParse::need_more;
  boost::beast::error_code ec;
  std::size_t used = 0;
  bool checked = false;
  while (!parser.is_done()) {
    if (!checked && parser.is_header_done()) {
      checked = true;
      if (auto e = check_framing(parser.get().base()))
        return e->status == 501 ? HttpParse::not_implemented : HttpParse::bad_request;
    }
    const std::string_view rest = input.substr(used);
    if (rest.empty()) return HttpParse::need_more;
    const std::size_t n = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    used += n;
    if (ec == http::error::need_more) {
      if (n == 0) return HttpParse::need_more;  // the parser wants more than is here
      ec = {};
      continue;
    }
    if (ec == http::error::body_limit) return HttpParse::body_too_large;
    if (ec == http::error::header_limit) return HttpParse::headers_too_large;
    if (ec) return HttpParse::bad_request;
  }
  if (!checked)
    if (auto e = check_framing(parser.get().base()))
      return e->status == 501 ? HttpParse::not_implemented : HttpParse::bad_request;
  input.remove_prefix(used);
  keep_alive = parser.get().keep_alive();
  out = to_http_request(parser.get(), "fuzz");
  return HttpParse::request;
}

}  // namespace sluice::net
