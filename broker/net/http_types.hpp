// The HTTP request and response as the API handlers see them: plain values,
// no Beast types, so the handlers (and their fuzz target) compile without
// Beast and a test can call them without a socket.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::net {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, as sent
  /// Header names lower-cased; values as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string peer;  // "address:port", for logs

  /// The first header named `name` (lower-case), or nullptr.
  const std::string* header(std::string_view name) const noexcept {
    for (const auto& [k, v] : headers)
      if (k == name) return &v;
    return nullptr;
  }
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Called once the response was written (true) or could not be (false):
  /// a receive gives its messages back when the client is gone.
  std::function<void(bool written)> after;
};

/// Answers a request; may be called later (long poll, durable commit), on the
/// io thread, exactly once.
using Respond = std::function<void(HttpResponse)>;

}  // namespace sluice::net
