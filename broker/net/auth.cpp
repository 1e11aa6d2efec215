#include "auth.hpp"

#include <algorithm>

#include "sluice/security/token.hpp"

namespace sluice::net {

namespace {
bool any_matches(const std::vector<std::string>& patterns, std::string_view queue) {
  return std::any_of(patterns.begin(), patterns.end(),
                     [&](const std::string& p) { return config::pattern_matches(p, queue); });
}
}  // namespace

void Authorizer::configure(const std::vector<config::TokenSettings>& tokens) {
  std::vector<std::shared_ptr<const Principal>> table;
  table.reserve(tokens.size());
  for (const auto& t : tokens) table.push_back(std::make_shared<const Principal>(t));
  tokens_ = std::move(table);
  ++generation_;
}

errc Authorizer::authenticate(std::string_view token, Grant& grant) const {
  grant = Grant{nullptr, generation_};
  if (!enabled()) return errc::ok;
  if (token.empty()) return errc::unauthenticated;
  // Every hash is tried even after a match, so the time taken does not say
  // which token (or how many) came close.
  std::shared_ptr<const Principal> found;
  for (const auto& p : tokens_) {
    if (security::token_matches(token, p->hash) && !found) found = p;
  }
  if (!found) return errc::unauthenticated;
  grant.principal = std::move(found);
  return errc::ok;
}

bool Authorizer::refresh(Grant& grant) const {
  if (grant.generation == generation_) return true;
  grant.generation = generation_;
  if (!grant.principal) return !enabled();
  for (const auto& p : tokens_) {
    if (p->name == grant.principal->name && p->hash == grant.principal->hash) {
      grant.principal = p;  // its rights as the new table says
      return true;
    }
  }
  grant.principal = nullptr;
  return !enabled();
}

errc Authorizer::check(Grant& grant, Permission what, std::string_view queue) const {
  if (!refresh(grant)) return errc::unauthenticated;
  if (!enabled()) return errc::ok;
  if (!grant.principal) return errc::unauthenticated;
  const Principal& p = *grant.principal;
  if (any_matches(p.admin, queue)) return errc::ok;
  switch (what) {
    case Permission::publish:
      return any_matches(p.publish, queue) ? errc::ok : errc::forbidden;
    case Permission::consume:
      return any_matches(p.consume, queue) ? errc::ok : errc::forbidden;
    case Permission::admin:
      return errc::forbidden;
    case Permission::read:
      return any_matches(p.publish, queue) || any_matches(p.consume, queue) ? errc::ok
                                                                            : errc::forbidden;
  }
  return errc::forbidden;
}

errc Authorizer::check_metrics(Grant& grant) const {
  if (!refresh(grant)) return errc::unauthenticated;
  if (!enabled()) return errc::ok;
  if (!grant.principal) return errc::unauthenticated;
  if (grant.principal->metrics) return errc::ok;
  return any_matches(grant.principal->admin, kEveryQueue) ? errc::ok : errc::forbidden;
}

}  // namespace sluice::net
