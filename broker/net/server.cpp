#include "server.hpp"

#include <boost/asio/ip/address.hpp>

#include <vector>

#include "log.hpp"
#include "session.hpp"

namespace sluice::net {

namespace asio = boost::asio;

Server::Server(asio::io_context& io, engine::Engine& engine, ServerOptions options)
    : io_(io),
      engine_(engine),
      options_(std::move(options)),
      acceptor_(io),
      deadline_timer_(io),
      accept_retry_(io) {}

Server::~Server() = default;

engine::Micros Server::now() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t Server::wall_us() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

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

std::error_code Server::start() {
  if (auto ec = listen_on(acceptor_, options_.host, options_.port)) return ec;
  bound_port_ = acceptor_.local_endpoint().port();
  accept();
  return {};
}

void Server::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    if (!ec) {
      boost::system::error_code ignored;
      const std::string source = socket.remote_endpoint(ignored).address().to_string();
      auto session = std::make_shared<Session>(*this, std::move(socket), tls_);
      auto& from_source = per_source_[source];
      if (sessions_.size() >= options_.max_connections) {
        session->refuse(errc::too_many_connections,
                        "the broker's server.max_connections is reached");
        log::warn("connection_refused").str("reason", "max_connections");
      } else if (from_source >= options_.max_connections_per_source) {
        session->refuse(errc::too_many_connections,
                        "this address has server.max_connections_per_source connections already");
        log::warn("connection_refused")
            .str("reason", "max_connections_per_source")
            .str("source", source);
      } else {
        ++from_source;
        session->set_source(source);
        sessions_.insert(session.get());
        session->start();
      }
      if (from_source == 0) per_source_.erase(source);
    } else {
      // EMFILE and friends: log, wait a little (a tight loop would spin while
      // descriptors are short), and accept again.
      log::warn("accept_failed").str("error", ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](const boost::system::error_code& e) {
        if (!e && !stopping_) accept();
      });
      return;
    }
    accept();
  });
}

void Server::stop() {
  if (stopping_) return;
  stopping_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  accept_retry_.cancel();
  std::vector<Session*> sessions(sessions_.begin(), sessions_.end());
  for (auto* s : sessions) s->close_after_flush(errc::shutting_down, "the broker is stopping");
  deadline_timer_.cancel();
}

void Server::recheck_grants() {
  std::vector<Session*> sessions(sessions_.begin(), sessions_.end());
  for (auto* s : sessions) s->recheck_grant();
}

void Server::remove(Session* session) {
  if (sessions_.erase(session) == 0) return;  // a refused one was never counted
  auto it = per_source_.find(session->source());
  if (it != per_source_.end() && --it->second == 0) per_source_.erase(it);
}

void Server::watch_deadlines() {
  if (stopping_) return;
  auto next = engine_.next_deadline();
  if (!next || *next >= armed_deadline_) return;
  armed_deadline_ = *next;
  // steady_clock's epoch is the same one Server::now() counts from.
  deadline_timer_.expires_at(
      std::chrono::steady_clock::time_point(std::chrono::microseconds(*next)));
  deadline_timer_.async_wait([this](const boost::system::error_code& ec) { on_deadline(ec); });
}

void Server::on_deadline(const boost::system::error_code& ec) {
  if (ec == asio::error::operation_aborted) return;  // re-armed earlier, or stopping
  armed_deadline_ = INT64_MAX;
  engine_.advance(now());
  watch_deadlines();
}

}  // namespace sluice::net
