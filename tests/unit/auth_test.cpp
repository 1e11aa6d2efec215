// Tokens (salted hashes) and the Authorizer: who may do what on which queue.
#include <doctest/doctest.h>

#include "auth.hpp"
#include "sluice/security/token.hpp"

using sluice::errc;
using sluice::net::Authorizer;
using sluice::net::Grant;
using sluice::net::Permission;
namespace security = sluice::security;

namespace {
sluice::config::TokenSettings token(std::string name, const std::string& secret,
                                    std::vector<std::string> publish,
                                    std::vector<std::string> consume,
                                    std::vector<std::string> admin) {
  sluice::config::TokenSettings t;
  t.name = std::move(name);
  t.hash = security::hash_token(secret);
  t.publish = std::move(publish);
  t.consume = std::move(consume);
  t.admin = std::move(admin);
  return t;
}
}  // namespace

TEST_SUITE("auth") {
  TEST_CASE("a token hashes with a fresh salt each time and only it matches") {
    const std::string t = security::generate_token();
    CHECK(t.size() == 7 + 64);
    CHECK(t.starts_with("sluice_"));
    CHECK(security::generate_token() != t);
    const std::string h1 = security::hash_token(t);
    const std::string h2 = security::hash_token(t);
    CHECK(h1 != h2);  // salted
    CHECK(security::is_token_hash(h1));
    CHECK(security::token_matches(t, h1));
    CHECK(security::token_matches(t, h2));
    CHECK_FALSE(security::token_matches(t + "x", h1));
    CHECK_FALSE(security::token_matches("", h1));
    CHECK_FALSE(security::token_matches(t, "sha256:zz"));
    CHECK(h1.find(t) == std::string::npos);
    // A known vector (python3: hashlib.sha256(bytes(16) + b"abc")).
    CHECK(security::hash_token("abc", std::string(16, '\0')) ==
          "sha256:00000000000000000000000000000000:"
          "277e7ff6d232b9763f4a66e8d05d210da32dac9c6dbce1026ad4cc98acb5fefe");
  }

  TEST_CASE("without tokens everything is allowed") {
    Authorizer auth;
    auth.configure({});
    Grant g;
    CHECK(auth.authenticate("", g) == errc::ok);
    CHECK(auth.check(g, Permission::admin, "anything") == errc::ok);
    CHECK(auth.check_metrics(g) == errc::ok);
  }

  TEST_CASE("rights follow the patterns, admin implies the rest") {
    Authorizer auth;
    auth.configure({token("producer", "secret-producer-0123456789", {"orders.*"}, {}, {}),
                    token("consumer", "secret-consumer-0123456789", {}, {"orders.*"}, {}),
                    token("ops", "secret-ops-012345678901234", {}, {}, {"*"}),
                    token("orders-admin", "secret-orders-0123456789", {}, {}, {"orders.*"})});
    Grant none;
    CHECK(auth.authenticate("", none) == errc::unauthenticated);
    CHECK(auth.authenticate("secret-wrong-0123456789", none) == errc::unauthenticated);

    Grant producer, consumer, ops, orders;
    REQUIRE(auth.authenticate("secret-producer-0123456789", producer) == errc::ok);
    REQUIRE(auth.authenticate("secret-consumer-0123456789", consumer) == errc::ok);
    REQUIRE(auth.authenticate("secret-ops-012345678901234", ops) == errc::ok);
    REQUIRE(auth.authenticate("secret-orders-0123456789", orders) == errc::ok);
    CHECK(producer.name() == "producer");

    CHECK(auth.check(producer, Permission::publish, "orders.eu") == errc::ok);
    CHECK(auth.check(producer, Permission::consume, "orders.eu") == errc::forbidden);
    CHECK(auth.check(producer, Permission::admin, "orders.eu") == errc::forbidden);
    CHECK(auth.check(producer, Permission::publish, "billing") == errc::forbidden);
    CHECK(auth.check(producer, Permission::read, "orders.eu") == errc::ok);
    CHECK(auth.check(producer, Permission::read, "billing") == errc::forbidden);

    CHECK(auth.check(consumer, Permission::consume, "orders.eu") == errc::ok);
    CHECK(auth.check(consumer, Permission::publish, "orders.eu") == errc::forbidden);
    CHECK(auth.check(consumer, Permission::admin, "orders.eu") == errc::forbidden);

    for (auto p : {Permission::publish, Permission::consume, Permission::admin, Permission::read}) {
      CHECK(auth.check(ops, p, "billing") == errc::ok);
      CHECK(auth.check(orders, p, "orders.us") == errc::ok);
      CHECK(auth.check(orders, p, "billing") == errc::forbidden);
    }
    CHECK(auth.check(ops, Permission::admin, sluice::net::kEveryQueue) == errc::ok);
    CHECK(auth.check(orders, Permission::admin, sluice::net::kEveryQueue) == errc::forbidden);
    CHECK(auth.check_metrics(ops) == errc::ok);
    CHECK(auth.check_metrics(producer) == errc::forbidden);
  }

  TEST_CASE("a new table revokes removed tokens and keeps the rest, with new rights") {
    Authorizer auth;
    auth.configure({token("a", "secret-a-0123456789012345", {"q"}, {}, {}),
                    token("b", "secret-b-0123456789012345", {"q"}, {}, {})});
    Grant a, b;
    REQUIRE(auth.authenticate("secret-a-0123456789012345", a) == errc::ok);
    REQUIRE(auth.authenticate("secret-b-0123456789012345", b) == errc::ok);
    auto kept = token("a", "unused", {"q"}, {"q"}, {});
    kept.hash = a.principal->hash;  // the same config entry, now also consuming
    auth.configure({kept});
    CHECK(auth.check(a, Permission::consume, "q") == errc::ok);
    CHECK(auth.check(b, Permission::publish, "q") == errc::unauthenticated);
    // A grant from before tokens existed does not survive their arrival.
    Authorizer open;
    open.configure({});
    Grant anonymous;
    REQUIRE(open.authenticate("", anonymous) == errc::ok);
    open.configure({kept});
    CHECK(open.check(anonymous, Permission::publish, "q") == errc::unauthenticated);
  }
}
