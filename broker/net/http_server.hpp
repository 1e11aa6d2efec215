// The HTTP server (Boost.Beast) on the shared Listener: reads one request
// at a time from each, with a body limit and an idle timeout, and hands each
// request to a handler that answers through a Respond callback (at once or
// later). Keep-alive; no pipelining (the next request is read after the
// answer is written). Runs on the io_context's thread, beside the engine.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include "http_types.hpp"
#include "listener.hpp"

namespace boost::asio::ssl {
class context;
}

namespace sluice::net {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7451;  // 0: any free port
  std::uint64_t max_body_bytes = 4u << 20;
  std::uint32_t max_connections = 1000;
  /// Connections from one IP address at once.
  std::uint32_t max_connections_per_source = 256;
  /// A connection with no request in progress is closed after this; a request
  /// (and the TLS handshake) must arrive whole within it too, so a slow-drip
  /// client cannot hold a connection longer than this without finishing one.
  std::chrono::milliseconds idle_timeout{60000};
};

/// Not thread-safe: every call on the io_context's thread.
class HttpServer {
 public:
  using Handler = std::function<void(HttpRequest&&, Respond)>;
  HttpServer(boost::asio::io_context& io, HttpServerOptions options, Handler handler);
  ~HttpServer();

  /// Binds and starts accepting. Errors: the bind/listen failure.
  Error start() { return listener_.start(); }
  /// Stops accepting and closes every connection (answers not yet written are dropped).
  void stop() { listener_.stop(); }
  std::uint16_t port() const noexcept { return listener_.port(); }
  std::size_t connections() const noexcept { return listener_.connections(); }
  std::uint64_t closed(CloseReason reason) const noexcept { return listener_.closed(reason); }
  /// New connections speak TLS with `context` (nullptr: plain). Open ones keep theirs.
  void set_tls(std::shared_ptr<boost::asio::ssl::context> context) {
    listener_.set_tls(std::move(context));
  }

  // ---- used by connections ----
  const HttpServerOptions& options() const noexcept { return options_; }
  const Handler& handler() const noexcept { return handler_; }

 private:
  void accepted(Accepted&& accepted, Listener& listener);

  HttpServerOptions options_;
  Handler handler_;
  Listener listener_;
};

}  // namespace sluice::net
