#include "http_server.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <algorithm>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <array>
#include <optional>

#include "http_beast.hpp"
#include "http_parse.hpp"
#include "log.hpp"
#include "sluice/security/tls.hpp"

namespace sluice::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

namespace {

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
/// `Stream` is beast::tcp_stream, or beast::ssl_stream over one.
template <class Stream>
class HttpConnection final : public ListenedConnection,
                             public std::enable_shared_from_this<HttpConnection<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  /// `tls`: the context a TLS stream is made with (kept alive with it); null for plain.
  HttpConnection(HttpServer& server, asio::ip::tcp::socket socket,
                 std::shared_ptr<asio::ssl::context> tls)
      : server_(server), tls_(std::move(tls)), stream_(make_stream(std::move(socket), tls_.get())) {
    boost::system::error_code ignored;
    const auto remote = tcp().socket().remote_endpoint(ignored);
    peer_ = remote.address().to_string() + ":" + std::to_string(remote.port());
  }

  // Uncounted when destroyed (slot_); the server may be gone first (a
  // Respond held past shutdown): the slot knows.
  void shut_down() override { close(CloseReason::shutdown); }

  void start(ConnectionSlot slot) {
    slot_ = std::move(slot);
    if constexpr (kTls) {
      tcp().expires_after(server_.options().idle_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = this->shared_from_this()](const beast::error_code& ec) {
                                if (self->closed_) return;
                                if (ec) {
                                  self->reason_ = ec == beast::error::timeout
                                                      ? CloseReason::timeout
                                                      : CloseReason::protocol_error;
                                  log::info("tls_handshake_failed")
                                      .str("listener", "http")
                                      .str("peer", self->peer_)
                                      .str("error", security::describe_tls_error(ec));
                                  self->close();
                                  return;
                                }
                                self->read();
                              });
    } else {
      read();
    }
  }

  /// Ends the connection; `why` unless a reason was recorded before (reason_).
  void close(std::optional<CloseReason> why = std::nullopt) {
    if (closed_) return;
    closed_ = true;
    slot_.count_close(why.value_or(reason_));
    boost::system::error_code ignored;
    tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    tcp().socket().close(ignored);
    slot_.reset();
  }

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }
  static Stream make_stream(asio::ip::tcp::socket socket, asio::ssl::context* tls) {
    if constexpr (kTls)
      return Stream(std::move(socket), *tls);
    else
      return Stream(std::move(socket));
  }

  void read() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(server_.options().max_body_bytes);
    parser_->header_limit(kMaxHttpHeaderBytes);
    tcp().expires_after(server_.options().idle_timeout);
    scan_ = {};
    read_header_block();
  }

  /// Reads until the whole header block is buffered and checks its raw bytes
  /// (scan_header_block) before Beast parses it: Beast unfolds obs-folds,
  /// which RFC 9112 has a server refuse.
  void read_header_block() {
    if (closed_) return;
    const auto data = buffer_.data();
    const std::string_view bytes(static_cast<const char*>(data.data()), data.size());
    scan_header_block(bytes, scan_);
    if (scan_.state == HeaderBlockScan::bad) {
      reason_ = CloseReason::protocol_error;
      write(framing_error(400, "malformed_frame",
                          std::string("malformed HTTP request: ") + scan_.problem),
            false);
      return;
    }
    if (scan_.state == HeaderBlockScan::complete) {
      http::async_read_header(
          stream_, buffer_, *parser_,
          [self = this->shared_from_this()](const beast::error_code& ec, std::size_t) {
            self->on_header(ec);
          });
      return;
    }
    if (bytes.size() >= kMaxHttpHeaderBytes) {
      on_read(http::error::header_limit);
      return;
    }
    const std::size_t room = std::min<std::size_t>(kMaxHttpHeaderBytes - bytes.size(), 8192);
    stream_.async_read_some(buffer_.prepare(room), [self = this->shared_from_this()](
                                                       const beast::error_code& ec, std::size_t n) {
      if (self->closed_) return;
      if (ec) {
        self->on_read(ec);
        return;
      }
      self->buffer_.commit(n);
      self->read_header_block();
    });
  }

  /// The header is parsed: refuse framing that could smuggle a second request
  /// (check_framing) before reading any body.
  void on_header(const beast::error_code& ec) {
    if (closed_) return;
    if (ec) {
      on_read(ec);
      return;
    }
    if (auto refused = check_framing(parser_->get().base())) {
      reason_ = CloseReason::protocol_error;
      write(
          framing_error(refused->status, refused->status == 501 ? "unsupported" : "malformed_frame",
                        "malformed HTTP request: " + refused->message),
          false);
      return;
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](const beast::error_code& e, std::size_t) {
                       self->on_read(e);
                     });
  }

  void on_read(const beast::error_code& ec) {
    if (closed_) return;
    if (ec) {
      // A clean end or an idle timeout closes quietly; broken framing gets
      // one answer saying why, then the connection closes.
      reason_ = CloseReason::protocol_error;
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
        close(ec == beast::error::timeout ? CloseReason::timeout : CloseReason::peer);
      }
      return;
    }
    tcp().expires_never();  // the handler may take its time (a long poll)
    auto& message = parser_->get();
    const bool keep_alive = message.keep_alive();
    HttpRequest request = to_http_request(message, peer_);
    server_.handler()(std::move(request),
                      [self = this->shared_from_this(), keep_alive](HttpResponse r) {
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
    tcp().expires_after(server_.options().idle_timeout);
    http::async_write(
        stream_, response_,
        [self = this->shared_from_this(), keep_alive](const beast::error_code& ec, std::size_t) {
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
  /// answer in flight. Plain: sends FIN, then reads and drops up to 1 MiB for
  /// up to a second. TLS: sends close_notify and waits up to a second for the
  /// peer's.
  void linger_close() {
    if (closed_) return;
    tcp().expires_after(std::chrono::seconds(1));
    if constexpr (kTls) {
      stream_.async_shutdown(
          [self = this->shared_from_this()](const beast::error_code&) { self->close(); });
    } else {
      boost::system::error_code ignored;
      tcp().socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
      drain(0);
    }
  }
  void drain(std::size_t drained) {
    stream_.async_read_some(
        asio::buffer(scratch_),
        [self = this->shared_from_this(), drained](const beast::error_code& ec, std::size_t n) {
          if (ec || self->closed_ || drained + n > (1u << 20))
            self->close();
          else
            self->drain(drained + n);
        });
  }

  HttpServer& server_;
  std::shared_ptr<asio::ssl::context> tls_;  // declared before stream_, which uses it
  Stream stream_;
  std::array<char, 4096> scratch_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HeaderBlockScan scan_;  // of the request being read
  http::response<http::string_body> response_;
  std::function<void(bool)> after_;
  std::string peer_;
  ConnectionSlot slot_;
  CloseReason reason_ = CloseReason::peer;  // why it ends, once decided (else the peer ended it)
  bool closed_ = false;
};

HttpServer::HttpServer(asio::io_context& io, HttpServerOptions options, Handler handler)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      listener_(io,
                ListenerOptions{"http", options_.host, options_.port, options_.max_connections,
                                options_.max_connections_per_source, "http.max_connections",
                                "http.max_connections_per_source"},
                [this](Accepted&& a, Listener& l) { accepted(std::move(a), l); }) {}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::accepted(Accepted&& a, Listener& listener) {
  if (!a.refusal.empty()) {
    boost::system::error_code ignored;
    a.socket.close(ignored);
    return;
  }
  if (a.tls) {
    using Tls = HttpConnection<beast::ssl_stream<beast::tcp_stream>>;
    auto connection = std::make_shared<Tls>(*this, std::move(a.socket), a.tls);
    connection->start(listener.admit(*connection, a.source));
  } else {
    using Plain = HttpConnection<beast::tcp_stream>;
    auto connection = std::make_shared<Plain>(*this, std::move(a.socket), nullptr);
    connection->start(listener.admit(*connection, a.source));
  }
}

}  // namespace sluice::net
