#include "sluice/security/tls.hpp"

#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace sluice::security {

namespace ssl = boost::asio::ssl;

namespace {
std::shared_ptr<ssl::context> base_context(ssl::context::method method) {
  auto context = std::make_shared<ssl::context>(method);
  // TLS 1.2 and 1.3 only: SSLv3, 1.0 and 1.1 are broken or deprecated.
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_compression |
                       ssl::context::single_dh_use);
  return context;
}

std::string reason(const boost::system::error_code& ec) {
  return describe_tls_error(ec);
}
}  // namespace

std::shared_ptr<ssl::context> server_context(const std::string& cert_file,
                                             const std::string& key_file, std::string& error) {
  auto context = base_context(ssl::context::tls_server);
  boost::system::error_code ec;
  context->use_certificate_chain_file(cert_file, ec);
  if (ec) {
    error = "cannot use tls.cert_file " + cert_file + ": " + reason(ec);
    return nullptr;
  }
  context->use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) {
    error = "cannot use tls.key_file " + key_file + ": " + reason(ec);
    if (error.find("mismatch") != std::string::npos)
      error += " (the key does not match the certificate in " + cert_file + ")";
    return nullptr;
  }
  if (SSL_CTX_check_private_key(context->native_handle()) != 1) {
    error = "tls.key_file " + key_file + " does not match the certificate in " + cert_file;
    return nullptr;
  }
  return context;
}

std::shared_ptr<ssl::context> client_context(const std::string& ca_file, std::string& error) {
  auto context = base_context(ssl::context::tls_client);
  boost::system::error_code ec;
  if (ca_file.empty())
    context->set_default_verify_paths(ec);
  else
    context->load_verify_file(ca_file, ec);
  if (ec) {
    error = "cannot use CA file " + (ca_file.empty() ? "(system default)" : ca_file) + ": " +
            reason(ec);
    return nullptr;
  }
  context->set_verify_mode(ssl::verify_peer);
  return context;
}

bool expect_server_name(ssl::stream<asio::ip::tcp::socket>& stream,
                        const std::string& server_name) {
  stream.set_verify_mode(ssl::verify_peer);
  stream.set_verify_callback(ssl::host_name_verification(server_name));
  // SNI is for DNS names only (RFC 6066); an IP address is verified, not sent.
  boost::system::error_code ec;
  asio::ip::make_address(server_name, ec);
  if (ec && SSL_set_tlsext_host_name(stream.native_handle(), server_name.c_str()) != 1)
    return false;
  return true;
}

std::string describe_tls_error(const boost::system::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) {
    const auto code = static_cast<unsigned long>(ec.value());
    const char* why = ERR_reason_error_string(code);
    std::string text = why ? why : ec.message();
    if (ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED)
      text += " (check the CA file and the server name)";
    return text;
  }
  if (ec == ssl::error::stream_truncated) return "the peer closed without a TLS close_notify";
  return ec.message();
}

}  // namespace sluice::security
