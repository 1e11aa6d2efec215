#include "http_parse.hpp"

#include <boost/asio/buffer.hpp>
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

HttpParse parse_http_request(std::string_view& input, std::uint64_t max_body_bytes,
                             HttpRequest& out, bool& keep_alive) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(max_body_bytes);
  parser.header_limit(kMaxHttpHeaderBytes);
  parser.eager(true);
  boost::beast::error_code ec;
  std::size_t used = 0;
  while (!parser.is_done()) {
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
  input.remove_prefix(used);
  keep_alive = parser.get().keep_alive();
  out = to_http_request(parser.get(), "fuzz");
  return HttpParse::request;
}

}  // namespace sluice::net
