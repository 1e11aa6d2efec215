// The protocol listener: accepts connections, owns the sessions, and keeps
// the engine's deadlines (lease expiry, delayed messages) on one timer. Runs
// entirely on the io_context's single thread, together with the engine.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <system_error>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "auth.hpp"
#include "engine.hpp"
#include "sluice/protocol/frames.hpp"

namespace boost::asio::ssl {
class context;
}

namespace sluice::net {

class Session;
class DurableStore;

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 7450;  // 0: any free port; see Server::port()
  std::uint32_t max_connections = 10000;
  /// Connections from one IP address at once (server.max_connections_per_source).
  std::uint32_t max_connections_per_source = 1000;
  protocol::Limits limits;
  std::size_t connection_outbound_bytes = 8u << 20;
  /// Messages published on one connection and awaiting their durable commit;
  /// past it the connection is not read (limits.max_pending_publishes).
  std::uint32_t max_pending_publishes = 100000;
  std::chrono::milliseconds shutdown_grace{5000};
  /// A frame begun must be complete within this (see limits.frame_timeout).
  std::chrono::milliseconds frame_timeout{30000};
  /// HELLO must arrive within this (see limits.handshake_timeout).
  std::chrono::milliseconds handshake_timeout{10000};
  /// storage.settle = "commit": acks, nacks and extends that changed storage
  /// are answered only once that change is committed.
  bool settle_after_commit = false;
};

/// Opens, binds and listens `acceptor` on host:port ("localhost" = 127.0.0.1;
/// otherwise an IPv4 or IPv6 address). Errors: invalid_argument for a bad
/// host, or the bind/listen failure.
std::error_code listen_on(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host,
                          std::uint16_t port);

/// Not thread-safe: every call on the io_context's thread.
class Server {
 public:
  Server(boost::asio::io_context& io, engine::Engine& engine, ServerOptions options);
  ~Server();

  /// Binds and starts accepting. Errors: the bind/listen failure.
  std::error_code start();
  /// Graceful stop: no new connections; each session answers what it has
  /// read, sends shutting_down, and closes (forcibly after shutdown_grace).
  void stop();
  /// The bound port (after start), useful when asked for port 0.
  std::uint16_t port() const noexcept { return bound_port_; }
  /// Open protocol connections.
  std::size_t connections() const noexcept { return sessions_.size(); }

  /// Applies a CONFIGURE request (sluicectl set): nullopt, or the problem as one line.
  using ConfigureHandler = std::function<std::optional<std::string>(
      std::string_view queue, std::span<const std::pair<std::string_view, std::string_view>>)>;
  void set_configure_handler(ConfigureHandler handler) { configure_ = std::move(handler); }
  const ConfigureHandler& configure_handler() const noexcept { return configure_; }
  /// The durable store, when storage.path is set (it must outlive the server).
  void set_durable(DurableStore* store) noexcept { durable_ = store; }
  DurableStore* durable() const noexcept { return durable_; }
  /// Who may do what; configure() it at start and on SIGHUP, then recheck_grants().
  Authorizer& auth() noexcept { return auth_; }
  /// After the token table changed: closes connections whose token lost its rights.
  void recheck_grants();
  /// New connections speak TLS with `context` (nullptr: plain TCP). Open ones keep theirs.
  void set_tls(std::shared_ptr<boost::asio::ssl::context> context) { tls_ = std::move(context); }

  // ---- used by sessions ----
  engine::Engine& engine() noexcept { return engine_; }
  const ServerOptions& options() const noexcept { return options_; }
  boost::asio::io_context& io() noexcept { return io_; }
  /// Monotonic now in µs, for the engine.
  static engine::Micros now() noexcept;
  /// Wall clock in µs since the Unix epoch (publish time).
  static std::int64_t wall_us() noexcept;
  /// Re-arms the deadline timer if the engine's earliest deadline moved earlier.
  void watch_deadlines();
  void remove(Session* session);
  bool stopping() const noexcept { return stopping_; }

 private:
  void accept();
  void on_deadline(const boost::system::error_code& ec);

  boost::asio::io_context& io_;
  engine::Engine& engine_;
  ServerOptions options_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer deadline_timer_;
  engine::Micros armed_deadline_ = INT64_MAX;
  std::unordered_set<Session*> sessions_;
  std::uint16_t bound_port_ = 0;
  bool stopping_ = false;
  ConfigureHandler configure_;
  DurableStore* durable_ = nullptr;
  Authorizer auth_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  std::unordered_map<std::string, std::uint32_t> per_source_;  // open connections by address
  boost::asio::steady_timer accept_retry_;
};

}  // namespace sluice::net
