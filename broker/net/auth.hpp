// Who may do what: the tokens of the config ([tokens.NAME]), checked for every
// protocol request and every HTTP request. With no tokens configured, anyone
// may do anything (and sluiced listens on loopback only; see main.cpp).
//
// A connection authenticates once (HELLO) and keeps a Grant. The token table
// can be replaced on SIGHUP; a Grant made under an older table is looked up
// again by its token's name and hash at its next check, so a revoked token
// loses its rights at once and an unchanged one keeps them.
//
// Checks run before any queue is looked up, and the answer to a token without
// the right is `forbidden` whether or not the queue exists.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/config/settings.hpp"
#include "sluice/protocol/errc.hpp"

namespace sluice::net {

enum class Permission : std::uint8_t {
  publish,  // publish to the queue
  consume,  // subscribe/receive and settle
  admin,    // dead letters, live settings; implies publish and consume
  read,     // see the queue's stats: any of the three above
};

/// The queue name that only a pattern of stars matches: admin on it is the
/// broker-wide admin right (log level, stats of all queues, queue defaults).
inline constexpr std::string_view kEveryQueue = "*";

/// An authenticated token: its entry in the config.
using Principal = config::TokenSettings;

/// What a connection (or one HTTP request) authenticated as.
struct Grant {
  std::shared_ptr<const Principal> principal;  // null: no token (fine only without auth)
  std::uint64_t generation = 0;                // of the table it was checked against
  /// The token's name for logs ("" without one).
  std::string_view name() const noexcept {
    return principal ? std::string_view(principal->name) : std::string_view{};
  }
};

/// Engine thread only.
class Authorizer {
 public:
  /// Installs a token table (start-up and SIGHUP).
  void configure(const std::vector<config::TokenSettings>& tokens);
  /// True when tokens are configured, so every request needs one.
  bool enabled() const noexcept { return !tokens_.empty(); }
  std::size_t token_count() const noexcept { return tokens_.size(); }

  /// Checks a presented token. ok (grant filled), or unauthenticated for a
  /// missing or wrong one while auth is enabled. Tries each token's salted
  /// hash: a few microseconds per configured token.
  errc authenticate(std::string_view token, Grant& grant) const;

  /// ok, unauthenticated (the grant's token was revoked, or there is none and
  /// auth is enabled) or forbidden.
  errc check(Grant& grant, Permission what, std::string_view queue) const;
  /// The same for /metrics (a token with metrics = "on", or admin on "*").
  errc check_metrics(Grant& grant) const;
  /// True when the grant may see `queue` at all (listings leave the rest out).
  bool can_see(Grant& grant, std::string_view queue) const {
    return check(grant, Permission::read, queue) == errc::ok;
  }

 private:
  /// Brings a grant from an older table up to date; false when revoked.
  bool refresh(Grant& grant) const;

  std::vector<std::shared_ptr<const Principal>> tokens_;
  std::uint64_t generation_ = 1;
};

}  // namespace sluice::net
