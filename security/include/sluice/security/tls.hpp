// TLS for both ends of both listeners: the OpenSSL contexts (server: the
// certificate chain and key from the config; client: the CA to trust and the
// name to verify) and Transport, one stream type that is a plain TCP socket
// or TLS over it, chosen at run time, so a session's code does not fork.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <memory>
#include <optional>
#include <string>

namespace sluice::security {

namespace asio = boost::asio;

/// A server context with `cert_file` (PEM, the chain, leaf first) and
/// `key_file` (PEM). TLS 1.2 and 1.3 only. nullptr and `error` set (naming
/// the file and OpenSSL's reason) when a file is missing, unreadable or the
/// key does not match the certificate.
std::shared_ptr<asio::ssl::context> server_context(const std::string& cert_file,
                                                   const std::string& key_file, std::string& error);

/// A client context that verifies the server's chain against `ca_file` (PEM;
/// "" = the system's trusted roots). nullptr and `error` set when unreadable.
std::shared_ptr<asio::ssl::context> client_context(const std::string& ca_file, std::string& error);

/// Prepares a client stream to check that the certificate names `server_name`
/// (a DNS name or an IP address) and to send it as SNI. False if OpenSSL refused.
bool expect_server_name(asio::ssl::stream<asio::ip::tcp::socket>& stream,
                        const std::string& server_name);

/// A TCP socket, or TLS over one. Models Asio's AsyncReadStream and
/// AsyncWriteStream, so asio::async_write works on it.
class Transport {
 public:
  using executor_type = asio::ip::tcp::socket::executor_type;

  explicit Transport(asio::ip::tcp::socket socket) : plain_(std::move(socket)) {}
  Transport(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> context)
      : context_(std::move(context)),
        tls_(std::make_unique<asio::ssl::stream<asio::ip::tcp::socket>>(std::move(socket),
                                                                        *context_)) {}

  bool is_tls() const noexcept { return tls_ != nullptr; }
  /// The TLS stream, or nullptr for a plain connection.
  asio::ssl::stream<asio::ip::tcp::socket>* tls() noexcept { return tls_.get(); }
  /// The TCP socket underneath (options, shutdown, close, the peer's address).
  asio::ip::tcp::socket& socket() noexcept { return tls_ ? tls_->next_layer() : *plain_; }
  executor_type get_executor() noexcept { return socket().get_executor(); }

  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_)
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    else
      plain_->async_read_some(buffers, std::forward<Handler>(handler));
  }
  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_)
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    else
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
  }

 private:
  std::shared_ptr<asio::ssl::context> context_;  // outlives tls_ (declared first)
  std::optional<asio::ip::tcp::socket> plain_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
};

/// OpenSSL's reason for a TLS failure, e.g. "certificate verify failed
/// (self-signed certificate in certificate chain)"; ec.message() otherwise.
std::string describe_tls_error(const boost::system::error_code& ec);

}  // namespace sluice::security
