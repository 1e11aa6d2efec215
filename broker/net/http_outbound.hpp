// An outbound HTTP/1.1 client for triggers: one origin (scheme, host, port),
// a bounded pool of keep-alive connections, asynchronous DNS, connect and
// total timeouts, TLS with verification (system CAs or a CA file), requests
// with Content-Length, and response bodies read up to a bound (the rest is
// discarded and the connection not reused). Engine thread only; callbacks run
// on it. Beast stays inside http_client.cpp.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "url.hpp"

namespace boost::asio::ssl {
class context;
}

namespace sluice::net {

struct OutboundRequest {
  std::string method = "POST";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{30000};  // DNS, connect, TLS, write and read together
};

/// How an exchange ended below HTTP.
enum class TransportOutcome : std::uint8_t {
  answered,       // a response came (any status)
  timeout,        // the request's timeout passed
  connect_error,  // DNS, connect or TLS failed: the function was not reached
  broken,         // the connection reset or closed before a whole response
};
/// "answered", "timeout", "connect_error", "broken" (also TRIGGERS_RESULT's numbering).
std::string_view to_string(TransportOutcome outcome) noexcept;

struct OutboundResponse {
  TransportOutcome outcome = TransportOutcome::answered;
  std::string error;                                         // what went wrong below HTTP, in words
  unsigned status = 0;                                       // with answered
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;  // at most HttpClientOptions::max_response_bytes
  std::chrono::microseconds took{0};

  const std::string* header(std::string_view name) const noexcept;
};

struct HttpClientOptions {
  std::size_t max_idle = 16;  // keep-alive connections kept between requests
  std::size_t max_response_bytes = 1u << 20;
  std::string ca_file;  // "" = the system's trusted roots
  bool verify = true;   // verify the server's certificate and name
};

class HttpClient {
 public:
  using Callback = std::function<void(OutboundResponse&&)>;

  /// `error` set (and every send fails with connect_error) when the TLS
  /// context cannot be made (an unreadable CA file).
  HttpClient(boost::asio::io_context& io, Url origin, HttpClientOptions options,
             std::string& error);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends `request` to the origin's target on an idle connection or a new
  /// one; `done` is called exactly once, unless the client is destroyed first.
  void send(OutboundRequest request, Callback done);
  const Url& origin() const noexcept { return origin_; }

  struct Exchange;  // one request on one connection (http_client.cpp)
  struct Shared;    // the pool and the TLS context, alive while an exchange runs

 private:
  Url origin_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace sluice::net
