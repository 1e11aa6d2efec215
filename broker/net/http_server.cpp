#include "http_server.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <array>
#include <optional>

#include "log.hpp"
#include "server.hpp"

namespace sluice::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

namespace {
/// Request line and headers together; generous for tokens and long targets.
constexpr std::uint32_t kMaxHeaderBytes = 64 * 1024;

HttpResponse framing_error(unsigned status, std::string_view code, std::string_view message) {
  HttpResponse r;
  r.status = status;
  r.body = "{\"error\":{\"code\":\"" + std::string(code) + "\",\"message\":\"" +
           std::string(message) + "\"}}\n";
  return r;
}
}  // namespace

/// One HTTP connection: read a request, let the handler answer, write the
/// answer, read the next. The handler's Respond holds the connection alive.
class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(HttpServer& server, asio::ip::tcp::socket socket,
                 std::weak_ptr<HttpServer::ConnectionSet> registry)
      : server_(server), stream_(std::move(socket)), registry_(std::move(registry)) {
    boost::system::error_code ignored;
    const auto remote = stream_.socket().remote_endpoint(ignored);
    peer_ = remote.address().to_string() + ":" + std::to_string(remote.port());
  }

  // The server may be gone first (a Respond held past shutdown): the registry says.
  ~HttpConnection() {
    if (auto set = registry_.lock()) set->erase(this);
  }

  void start() { read(); }

  void close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
    if (auto set = registry_.lock()) set->erase(this);
  }

 private:
  void read() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(server_.options().max_body_bytes);
    parser_->header_limit(kMaxHeaderBytes);
    stream_.expires_after(server_.options().idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void on_read(const beast::error_code& ec) {
    if (closed_) return;
    if (ec) {
      // A clean end or an idle timeout closes quietly; broken framing gets
      // one answer saying why, then the connection closes.
      if (ec == http::error::body_limit) {
        write(framing_error(413, "payload_too_large",
                            "request body over http.max_body_bytes (" +
                                std::to_string(server_.options().max_body_bytes) + " bytes)"),
              false);
      } else if (ec == http::error::header_limit) {
        write(framing_error(431, "invalid_argument", "request headers over 64 KiB"), false);
      } else if (ec.category() == make_error_code(http::error::end_of_stream).category() &&
                 ec != http::error::end_of_stream && ec != http::error::partial_message) {
        write(framing_error(400, "malformed_frame", "malformed HTTP request: " + ec.message()),
              false);
      } else {
        close();
      }
      return;
    }
    stream_.expires_never();  // the handler may take its time (a long poll)
    auto& message = parser_->get();
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
    request.peer = peer_;
    const bool keep_alive = message.keep_alive();
    server_.handler()(std::move(request), [self = shared_from_this(), keep_alive](HttpResponse r) {
      self->write(std::move(r), keep_alive);
    });
  }

  void write(HttpResponse r, bool keep_alive) {
    if (closed_) {
      if (r.after) r.after(false);
      return;
    }
    after_ = std::move(r.after);
    response_ = {};
    response_.result(r.status);
    response_.version(11);
    response_.set(http::field::server, "sluiced " SLUICE_VERSION);
    response_.set(http::field::content_type, r.content_type);
    for (auto& [name, value] : r.headers) response_.set(name, value);
    response_.body() = std::move(r.body);
    response_.keep_alive(keep_alive);
    response_.prepare_payload();
    stream_.expires_after(server_.options().idle_timeout);
    http::async_write(
        stream_, response_,
        [self = shared_from_this(), keep_alive](const beast::error_code& ec, std::size_t) {
          if (self->after_) {
            auto after = std::move(self->after_);
            self->after_ = nullptr;
            after(!ec);
          }
          if (ec)
            self->close();
          else if (!keep_alive)
            self->linger_close();
          else
            self->read();
        });
  }

  /// Closes after the peer has read the answer: closing with unread request
  /// bytes (a 413's body) would reset the connection and could destroy the
  /// answer in flight. Sends FIN, then reads and drops up to 1 MiB for up to
  /// a second.
  void linger_close() {
    if (closed_) return;
    boost::system::error_code ignored;
    stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(1));
    drain(0);
  }
  void drain(std::size_t drained) {
    stream_.async_read_some(
        asio::buffer(scratch_),
        [self = shared_from_this(), drained](const beast::error_code& ec, std::size_t n) {
          if (ec || self->closed_ || drained + n > (1u << 20))
            self->close();
          else
            self->drain(drained + n);
        });
  }

  HttpServer& server_;
  beast::tcp_stream stream_;
  std::array<char, 4096> scratch_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  std::function<void(bool)> after_;
  std::string peer_;
  std::weak_ptr<HttpServer::ConnectionSet> registry_;
  bool closed_ = false;
};

HttpServer::HttpServer(asio::io_context& io, HttpServerOptions options, Handler handler)
    : io_(io),
      options_(std::move(options)),
      handler_(std::move(handler)),
      acceptor_(io),
      accept_retry_(io),
      connections_(std::make_shared<ConnectionSet>()) {}

HttpServer::~HttpServer() {
  stop();
}

std::error_code HttpServer::start() {
  if (auto ec = listen_on(acceptor_, options_.host, options_.port)) return ec;
  bound_port_ = acceptor_.local_endpoint().port();
  accept();
  return {};
}

void HttpServer::accept() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    if (ec) {
      // EMFILE and friends: wait a little rather than spin.
      log::warn("accept_failed").str("listener", "http").str("error", ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](const boost::system::error_code& e) {
        if (!e && !stopping_) accept();
      });
      return;
    }
    if (connections_->size() >= options_.max_connections) {
      log::warn("connection_refused").str("reason", "http.max_connections");
      boost::system::error_code ignored;
      socket.close(ignored);
    } else {
      auto connection = std::make_shared<HttpConnection>(*this, std::move(socket), connections_);
      connections_->insert(connection.get());
      connection->start();
    }
    accept();
  });
}

void HttpServer::stop() {
  if (stopping_) return;
  stopping_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  accept_retry_.cancel();
  auto open = *connections_;  // close() edits the set
  for (HttpConnection* c : open) c->close();
}

}  // namespace sluice::net
