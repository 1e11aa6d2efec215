#include "http_outbound.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <openssl/ssl.h>

#include <algorithm>
#include <cctype>

#include "sluice/security/tls.hpp"

namespace sluice::net {

std::string_view to_string(TransportOutcome outcome) noexcept {
  switch (outcome) {
    case TransportOutcome::answered:
      return "answered";
    case TransportOutcome::timeout:
      return "timeout";
    case TransportOutcome::connect_error:
      return "connect_error";
    case TransportOutcome::broken:
      return "broken";
  }
  return "unknown";
}

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

const std::string* OutboundResponse::header(std::string_view name) const noexcept {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

/// One connection to the origin: plain TCP or TLS over it.
class Link {
 public:
  virtual ~Link() = default;
  /// Writes `request` and reads the response; `done(response, reusable)`.
  virtual void exchange(const http::request<http::string_body>& request, Clock::time_point deadline,
                        std::size_t max_body,
                        std::function<void(OutboundResponse&&, bool reusable)> done) = 0;
  /// Resolves, connects and (TLS) handshakes; `done(error)` ("" on success).
  virtual void open(const Url& url, Clock::time_point deadline,
                    std::function<void(TransportOutcome, std::string)> done) = 0;
  /// Ends whatever is in progress (the client is going away): handlers run with an error.
  virtual void cancel() = 0;
};

struct HttpClient::Shared {
  asio::io_context& io;
  Url origin;
  HttpClientOptions options;
  std::shared_ptr<asio::ssl::context> tls;
  std::string tls_error;
  std::vector<std::unique_ptr<Link>> idle;  // at most options.max_idle
  std::vector<Link*> busy;                  // links with an exchange in progress
  bool stopped = false;
};

namespace {

bool is_timeout(const boost::system::error_code& ec) {
  return ec == beast::error::timeout || ec == asio::error::timed_out;
}

template <class Stream>
class StreamLink final : public Link, public std::enable_shared_from_this<StreamLink<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  StreamLink(asio::io_context& io, asio::ssl::context* tls)
      : resolver_(io), resolve_timer_(io), stream_(make(io, tls)) {}

  void open(const Url& url, Clock::time_point deadline,
            std::function<void(TransportOutcome, std::string)> done) override {
    auto state =
        std::make_shared<std::function<void(TransportOutcome, std::string)>>(std::move(done));
    // The resolver has no timeout of its own: a timer cancels it.
    resolve_timer_.expires_at(deadline);
    // The link may be gone by the time a timer that already fired runs its handler.
    resolve_timer_.async_wait(
        [this, alive = std::weak_ptr<bool>(alive_)](const boost::system::error_code& ec) {
          if (!ec && !alive.expired()) resolver_.cancel();
        });
    resolver_.async_resolve(
        url.host, std::to_string(url.port),
        [this, url, deadline, state](const boost::system::error_code& ec,
                                     asio::ip::tcp::resolver::results_type results) {
          resolve_timer_.cancel();
          if (ec) {
            (*state)(Clock::now() >= deadline ? TransportOutcome::timeout
                                              : TransportOutcome::connect_error,
                     "cannot resolve " + url.host + ": " + ec.message());
            return;
          }
          tcp().expires_at(deadline);
          tcp().async_connect(results, [this, url, deadline, state](
                                           const boost::system::error_code& e,
                                           const asio::ip::tcp::endpoint&) {
            if (e) {
              (*state)(is_timeout(e) ? TransportOutcome::timeout : TransportOutcome::connect_error,
                       "cannot connect to " + url.origin() + ": " + e.message());
              return;
            }
            boost::system::error_code ignored;
            tcp().socket().set_option(asio::ip::tcp::no_delay(true), ignored);
            handshake(url, deadline, state);
          });
        });
  }

  void exchange(const http::request<http::string_body>& request, Clock::time_point deadline,
                std::size_t max_body,
                std::function<void(OutboundResponse&&, bool reusable)> done) override {
    tcp().expires_at(deadline);
    max_body_ = max_body;
    parser_.emplace();
    parser_->body_limit(max_body);
    parser_->header_limit(64 * 1024);
    http::async_write(
        stream_, request,
        [this, done = std::move(done)](const boost::system::error_code& ec, std::size_t) mutable {
          if (ec) {
            fail(ec, "sending the request", done);
            return;
          }
          http::async_read(
              stream_, buffer_, *parser_,
              [this, done = std::move(done)](const boost::system::error_code& e,
                                             std::size_t) mutable { on_read(e, done); });
        });
  }

 private:
  static Stream make(asio::io_context& io, asio::ssl::context* tls) {
    if constexpr (kTls)
      return Stream(io, *tls);
    else
      return Stream(io);
  }
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }

 public:
  void cancel() override {
    resolver_.cancel();
    resolve_timer_.cancel();
    boost::system::error_code ignored;
    tcp().socket().close(ignored);
  }

 private:
  void handshake(const Url& url, Clock::time_point deadline,
                 std::shared_ptr<std::function<void(TransportOutcome, std::string)>> state) {
    if constexpr (kTls) {
      boost::system::error_code ec;
      asio::ip::make_address(url.host, ec);
      // SNI is for DNS names only (RFC 6066); an IP address is verified, not sent.
      if (ec) SSL_set_tlsext_host_name(stream_.native_handle(), url.host.c_str());
      if (verify_) stream_.set_verify_callback(asio::ssl::host_name_verification(url.host));
      tcp().expires_at(deadline);
      stream_.async_handshake(
          asio::ssl::stream_base::client, [url, state](const boost::system::error_code& e) {
            if (e)
              (*state)(is_timeout(e) ? TransportOutcome::timeout : TransportOutcome::connect_error,
                       "TLS with " + url.origin() + " failed: " + security::describe_tls_error(e));
            else
              (*state)(TransportOutcome::answered, {});
          });
    } else {
      (*state)(TransportOutcome::answered, {});
    }
  }

  void fail(const boost::system::error_code& ec, const char* doing,
            std::function<void(OutboundResponse&&, bool)>& done) {
    OutboundResponse r;
    r.outcome = is_timeout(ec) ? TransportOutcome::timeout : TransportOutcome::broken;
    r.error = std::string(doing) + ": " + ec.message();
    done(std::move(r), false);
  }

  void on_read(const boost::system::error_code& ec,
               std::function<void(OutboundResponse&&, bool)>& done) {
    const bool truncated = ec == http::error::body_limit && parser_->is_header_done();
    if (ec && !truncated) {
      fail(ec, "reading the response", done);
      return;
    }
    auto& message = parser_->get();
    if (!ec && message.result_int() / 100 == 1) {
      // An interim answer (102, 103): the real one follows on the same connection.
      parser_.emplace();
      parser_->body_limit(max_body_);
      parser_->header_limit(64 * 1024);
      http::async_read(stream_, buffer_, *parser_,
                       [this, done = std::move(done)](const boost::system::error_code& e,
                                                      std::size_t) mutable { on_read(e, done); });
      return;
    }
    OutboundResponse r;
    r.status = message.result_int();
    for (const auto& field : message.base()) {
      std::string name(field.name_string());
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      r.headers.emplace_back(std::move(name), std::string(field.value()));
    }
    r.body = std::move(message.body());
    // A body past the bound is dropped with the connection, as is one that
    // ended with the connection.
    done(std::move(r), !truncated && message.keep_alive() && !parser_->need_eof());
  }

 public:
  bool verify_ = true;

 private:
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer resolve_timer_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
  std::size_t max_body_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

using PlainLink = StreamLink<beast::tcp_stream>;
using TlsLink = StreamLink<beast::ssl_stream<beast::tcp_stream>>;

}  // namespace

/// One request: on a pooled link, or a new one (once more on a new one when
/// a pooled link turns out to have been closed by the server meanwhile).
struct HttpClient::Exchange : std::enable_shared_from_this<Exchange> {
  std::shared_ptr<Shared> shared;
  http::request<http::string_body> request;
  Clock::time_point started;
  Clock::time_point deadline;
  Callback done;
  std::unique_ptr<Link> link;

  void start() {
    if (!shared->tls_error.empty()) {
      OutboundResponse r;
      r.outcome = TransportOutcome::connect_error;
      r.error = shared->tls_error;
      finish(std::move(r), false);
      return;
    }
    if (!shared->idle.empty()) {
      hold(std::move(shared->idle.back()));
      shared->idle.pop_back();
      send(true);
      return;
    }
    connect();
  }

  void hold(std::unique_ptr<Link> l) {
    release();
    link = std::move(l);
    shared->busy.push_back(link.get());
  }
  void release() {
    if (!link) return;
    auto& busy = shared->busy;
    busy.erase(std::remove(busy.begin(), busy.end(), link.get()), busy.end());
  }

  void connect() {
    if (shared->origin.tls) {
      auto l = std::make_unique<TlsLink>(shared->io, shared->tls.get());
      l->verify_ = shared->options.verify;
      hold(std::move(l));
    } else {
      hold(std::make_unique<PlainLink>(shared->io, nullptr));
    }
    auto self = shared_from_this();
    link->open(shared->origin, deadline, [self](TransportOutcome outcome, std::string error) {
      if (self->shared->stopped) return;
      if (!error.empty()) {
        OutboundResponse r;
        r.outcome = outcome;
        r.error = std::move(error);
        self->finish(std::move(r), false);
        return;
      }
      self->send(false);
    });
  }

  void send(bool reused) {
    auto self = shared_from_this();
    link->exchange(
        request, deadline, shared->options.max_response_bytes,
        [self, reused](OutboundResponse&& r, bool reusable) {
          if (self->shared->stopped) return;
          if (reused && r.outcome == TransportOutcome::broken && Clock::now() < self->deadline) {
            self->connect();  // the server closed the idle connection: a fresh one
            return;
          }
          self->finish(std::move(r), reusable);
        });
  }

  void finish(OutboundResponse&& r, bool reusable) {
    r.took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started);
    release();
    if (reusable && link && shared->idle.size() < shared->options.max_idle)
      shared->idle.push_back(std::move(link));
    link.reset();
    auto callback = std::move(done);
    callback(std::move(r));
  }
};

HttpClient::HttpClient(asio::io_context& io, Url origin, HttpClientOptions options,
                       std::string& error)
    : origin_(std::move(origin)),
      shared_(std::make_shared<Shared>(
          Shared{io, origin_, std::move(options), nullptr, {}, {}, {}, false})) {
  if (origin_.tls) {
    shared_->tls = security::client_context(shared_->options.ca_file, shared_->tls_error);
    if (shared_->tls && !shared_->options.verify)
      shared_->tls->set_verify_mode(asio::ssl::verify_none);
    error = shared_->tls_error;
  }
}

HttpClient::~HttpClient() {
  shared_->stopped = true;
  shared_->idle.clear();
  // In-progress exchanges end now (their handlers see `stopped` and return),
  // so nothing keeps the io_context running past a shutdown.
  for (Link* link : std::vector<Link*>(shared_->busy)) link->cancel();
}

void HttpClient::send(OutboundRequest request, Callback done) {
  auto x = std::make_shared<Exchange>();
  x->shared = shared_;
  x->started = Clock::now();
  x->deadline = x->started + request.timeout;
  x->done = std::move(done);
  auto& r = x->request;
  r.version(11);
  r.method_string(request.method);
  r.target(origin_.target);
  const bool v6 = origin_.host.find(':') != std::string::npos;
  const bool default_port = origin_.port == (origin_.tls ? 443 : 80);
  r.set(http::field::host, (v6 ? "[" + origin_.host + "]" : origin_.host) +
                               (default_port ? "" : ":" + std::to_string(origin_.port)));
  r.set(http::field::user_agent, "sluiced " SLUICE_VERSION);
  for (auto& [name, value] : request.headers) r.insert(name, value);
  r.body() = std::move(request.body);
  r.keep_alive(true);
  r.prepare_payload();
  x->start();
}

}  // namespace sluice::net
