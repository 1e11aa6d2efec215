#include "listener.hpp"

#include <boost/asio/ip/address.hpp>

#include <vector>

#include "log.hpp"

namespace sluice::net {

namespace asio = boost::asio;

std::error_code listen_on(asio::ip::tcp::acceptor& acceptor, const std::string& host,
                          std::uint16_t port) {
  boost::system::error_code ec;
  asio::ip::tcp::endpoint endpoint;
  if (host == "localhost") {
    endpoint = {asio::ip::address_v4::loopback(), port};
  } else {
    auto address = asio::ip::make_address(host, ec);
    if (ec) return std::make_error_code(std::errc::invalid_argument);
    endpoint = {address, port};
  }
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return std::error_code(ec.value(), std::system_category());
  return {};
}

std::string_view to_string(CloseReason reason) noexcept {
  static constexpr std::string_view kNames[kCloseReasons] = {"peer", "timeout",  "protocol_error",
                                                             "auth", "shutdown", "refused"};
  return kNames[static_cast<std::size_t>(reason)];
}

void ConnectionSlot::count_close(CloseReason reason) noexcept {
  if (auto registry = registry_.lock()) ++registry->closed[static_cast<std::size_t>(reason)];
}

ConnectionSlot& ConnectionSlot::operator=(ConnectionSlot&& other) noexcept {
  if (this != &other) {
    reset();
    registry_ = std::move(other.registry_);
    connection_ = std::exchange(other.connection_, nullptr);
  }
  return *this;
}

void ConnectionSlot::reset() {
  if (connection_ == nullptr) return;
  if (auto registry = registry_.lock()) {
    auto it = registry->open.find(connection_);
    if (it != registry->open.end()) {
      auto from = registry->per_source.find(it->second);
      if (from != registry->per_source.end() && --from->second == 0)
        registry->per_source.erase(from);
      registry->open.erase(it);
    }
  }
  registry_.reset();
  connection_ = nullptr;
}

Listener::Listener(asio::io_context& io, ListenerOptions options, Factory factory)
    : options_(std::move(options)),
      factory_(std::move(factory)),
      acceptor_(io),
      accept_retry_(io),
      registry_(std::make_shared<ConnectionRegistry>()) {}

Listener::~Listener() {
  stop();
}

Error Listener::start() {
  if (auto ec = listen_on(acceptor_, options_.host, options_.port))
    return {errc::internal, "cannot listen on " + options_.host + ":" +
                                std::to_string(options_.port) + ": " + ec.message()};
  bound_port_ = acceptor_.local_endpoint().port();
  accept();
  return {};
}

ConnectionSlot Listener::admit(ListenedConnection& connection, const std::string& source) {
  registry_->open.emplace(&connection, source);
  ++registry_->per_source[source];
  return ConnectionSlot(registry_, &connection);
}

std::vector<ListenedConnection*> Listener::open() const {
  std::vector<ListenedConnection*> all;
  all.reserve(registry_->open.size());
  for (const auto& [connection, source] : registry_->open) all.push_back(connection);
  return all;
}

void Listener::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    if (ec) {
      // EMFILE and friends: log, wait a little (a tight loop would spin while
      // descriptors are short), and accept again.
      log::warn("accept_failed").str("listener", options_.name).str("error", ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](const boost::system::error_code& e) {
        if (!e && !stopping_) accept();
      });
      return;
    }
    boost::system::error_code ignored;
    Accepted accepted{std::move(socket), {}, tls_, {}};
    accepted.source = accepted.socket.remote_endpoint(ignored).address().to_string();
    const auto from_source = registry_->per_source.find(accepted.source);
    if (registry_->open.size() >= options_.max_connections) {
      accepted.refusal = "the broker's " + options_.max_connections_setting + " is reached";
      log::warn("connection_refused")
          .str("listener", options_.name)
          .str("reason", options_.max_connections_setting);
    } else if (from_source != registry_->per_source.end() &&
               from_source->second >= options_.max_connections_per_source) {
      accepted.refusal =
          "this address has " + options_.max_per_source_setting + " connections already";
      log::warn("connection_refused")
          .str("listener", options_.name)
          .str("reason", options_.max_per_source_setting)
          .str("source", accepted.source);
    }
    if (!accepted.refusal.empty())
      ++registry_->closed[static_cast<std::size_t>(CloseReason::refused)];
    factory_(std::move(accepted), *this);
    accept();
  });
}

void Listener::stop() {
  if (stopping_) return;
  stopping_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  accept_retry_.cancel();
  for (ListenedConnection* c : open()) c->shut_down();  // shut_down() may edit the set
}

}  // namespace sluice::net
