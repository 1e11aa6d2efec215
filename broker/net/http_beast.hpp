// Between Beast and the API's plain values; included only by the sluice_http
// sources that already compile Beast (the listener and http_parse).
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>

#include "http_parse.hpp"
#include "http_types.hpp"

namespace sluice::net {

/// The request as the handlers see it: header names lower-cased, the body moved out.
HttpRequest to_http_request(boost::beast::http::request<boost::beast::http::string_body>& message,
                            std::string peer);

/// check_framing over a parsed header's Transfer-Encoding and Content-Length fields.
std::optional<FramingError> check_framing(const boost::beast::http::request_header<>& header);

}  // namespace sluice::net
