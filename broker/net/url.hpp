// An http:// or https:// URL, split for the outbound client (triggers).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::net {

/// An http:// or https:// URL, split for the client.
struct Url {
  bool tls = false;
  std::string host;  // a DNS name or an IP address (IPv6 without brackets)
  std::uint16_t port = 0;
  std::string target = "/";  // path and query

  /// nullopt unless `text` is http://host[:port][/path] or https://...
  static std::optional<Url> parse(std::string_view text);
  /// "host:port", for logs.
  std::string origin() const;
};

}  // namespace sluice::net
