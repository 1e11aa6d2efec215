// The accept loop both ports share: binds, accepts, applies the connection
// caps (in all, and per source address), and hands each socket to the
// protocol's factory with a ConnectionSlot that keeps it counted until the
// connection lets go of the slot. Engine thread only.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "sluice/protocol/error.hpp"
#include "string_map.hpp"

namespace boost::asio::ssl {
class context;
}

namespace sluice::net {

/// Opens, binds and listens `acceptor` on host:port ("localhost" = 127.0.0.1;
/// otherwise an IPv4 or IPv6 address). Errors: invalid_argument for a bad
/// host, or the bind/listen failure.
std::error_code listen_on(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host,
                          std::uint16_t port);

/// Why a connection ended, as sluice_connections_closed_total counts it.
/// (There is no "slow consumer": a consumer that does not read is paused, not closed.)
enum class CloseReason : std::uint8_t {
  peer,            // the client closed or reset it (or asked to: Connection: close)
  timeout,         // no HELLO, a frame not completed, or an idle HTTP connection, in time
  protocol_error,  // bad framing, HELLO twice, unsupported version, failed TLS handshake
  auth,            // no or bad token, or the token was revoked (protocol)
  shutdown,        // the broker is stopping
  refused,         // over the listener's max_connections or max_connections_per_source
};
inline constexpr std::size_t kCloseReasons = 6;
std::string_view to_string(CloseReason reason) noexcept;

/// What a listener may ask of an open connection.
class ListenedConnection {
 public:
  virtual ~ListenedConnection() = default;
  /// The broker is stopping: end the connection as gracefully as its protocol allows.
  virtual void shut_down() = 0;
  /// The token table changed: end the connection if its token lost its rights
  /// (connections that hold no grant ignore it).
  virtual void recheck_grant() {}
};

/// The open connections of one listener: bounded by its max_connections.
struct ConnectionRegistry {
  std::unordered_map<ListenedConnection*, std::string> open;  // -> source address
  StringMap<std::uint32_t> per_source;                        // open connections by address
  std::array<std::uint64_t, kCloseReasons> closed{};          // connections ended, by reason
};

/// A connection's place in its listener's count. Move-only; giving it up
/// (reset() or destruction) uncounts the connection. Outlives the listener safely.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  ConnectionSlot(std::weak_ptr<ConnectionRegistry> registry, ListenedConnection* connection)
      : registry_(std::move(registry)), connection_(connection) {}
  ConnectionSlot(ConnectionSlot&& other) noexcept { *this = std::move(other); }
  ConnectionSlot& operator=(ConnectionSlot&& other) noexcept;
  ~ConnectionSlot() { reset(); }
  void reset();
  /// Counts why the connection ends (call once, before reset()).
  void count_close(CloseReason reason) noexcept;

 private:
  std::weak_ptr<ConnectionRegistry> registry_;
  ListenedConnection* connection_ = nullptr;
};

struct ListenerOptions {
  std::string name;  // "protocol" or "http": the listener label in logs and metrics
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port; see Listener::port()
  std::uint32_t max_connections = 10000;
  std::uint32_t max_connections_per_source = 1000;
  /// Setting names quoted when a connection is refused (e.g. "server.max_connections").
  std::string max_connections_setting;
  std::string max_per_source_setting;
};

/// A socket just accepted. `refusal` is empty when the connection is admitted
/// (the factory then calls `admit(connection)` and keeps the slot); otherwise it
/// says which cap refused it, and the factory says so (or just closes).
struct Accepted {
  boost::asio::ip::tcp::socket socket;
  std::string source;  // the peer's IP address
  std::shared_ptr<boost::asio::ssl::context> tls;
  std::string refusal;
};

class Listener {
 public:
  /// Called for every accepted socket. For an admitted one, the factory makes
  /// its connection and calls admit() with it before returning.
  using Factory = std::function<void(Accepted&&, Listener&)>;
  Listener(boost::asio::io_context& io, ListenerOptions options, Factory factory);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  /// Binds and starts accepting. Error: the bind or listen failure, in words.
  Error start();
  /// No new connections; every open one is asked to shut_down().
  void stop();
  /// Counts `connection` (from `source`) until it gives up the slot.
  ConnectionSlot admit(ListenedConnection& connection, const std::string& source);
  /// The bound port (after start), useful when asked for port 0.
  std::uint16_t port() const noexcept { return bound_port_; }
  std::size_t connections() const noexcept { return registry_->open.size(); }
  /// Connections that ended for `reason` (refused ones counted at accept).
  std::uint64_t closed(CloseReason reason) const noexcept {
    return registry_->closed[static_cast<std::size_t>(reason)];
  }
  /// Every open connection, for a walk that may close some of them.
  std::vector<ListenedConnection*> open() const;
  /// New connections speak TLS with `context` (nullptr: plain TCP). Open ones keep theirs.
  void set_tls(std::shared_ptr<boost::asio::ssl::context> context) { tls_ = std::move(context); }
  const ListenerOptions& options() const noexcept { return options_; }

 private:
  void accept();

  ListenerOptions options_;
  Factory factory_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_retry_;
  std::shared_ptr<ConnectionRegistry> registry_;
  std::shared_ptr<boost::asio::ssl::context> tls_;
  std::uint16_t bound_port_ = 0;
  bool stopping_ = false;
};

}  // namespace sluice::net
