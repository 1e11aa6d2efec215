// Tokens against the real broker: least privilege on both ports, the same
// answer whether or not a queue exists, revocation on SIGHUP, and the refusal
// to listen beyond loopback without tokens.
#include <doctest/doctest.h>
#include <signal.h>

#include <fstream>
#include <future>
#include <thread>
#include <map>
#include <nlohmann/json.hpp>

#include "http_client.hpp"
#include "sluice/security/token.hpp"
#include "test_broker.hpp"

using sluice::test::http_request;
namespace client = sluice::client;
namespace security = sluice::security;

namespace {

struct Token {
  std::string name;
  std::string secret = security::generate_token();
  std::string rights;  // TOML lines
  /// Hashed once: a config rewritten with a new hash names a new token.
  std::string hash() const {
    static std::map<std::string, std::string> hashes;
    auto [it, fresh] = hashes.try_emplace(secret);
    if (fresh) it->second = security::hash_token(secret);
    return it->second;
  }
};

std::string tokens_toml(const std::vector<Token>& tokens) {
  std::string out;
  for (const auto& t : tokens)
    out += "[tokens." + t.name + "]\nhash = \"" + t.hash() + "\"\n" + t.rights + "\n";
  return out;
}

/// A broker whose config file holds `tokens`; rewrite() and SIGHUP change them.
class SecuredBroker {
 public:
  explicit SecuredBroker(const std::vector<Token>& tokens, std::vector<std::string> extra = {})
      : dir_("sluice-auth"), config_(dir_.path / "sluiced.toml") {
    rewrite(tokens);
    extra.insert(extra.begin(), {"--config", config_.string()});
    broker_ = std::make_unique<TestBroker>(extra);
  }
  void rewrite(const std::vector<Token>& tokens) { std::ofstream(config_) << tokens_toml(tokens); }
  void reload() {
    const auto before = broker_->log().size();
    ::kill(broker_->pid(), SIGHUP);
    REQUIRE(eventually(
        [&] { return broker_->log().find("\"reloaded\"", before) != std::string::npos; }));
  }
  TestBroker& broker() { return *broker_; }

  client::Result<std::unique_ptr<client::Connection>> connect(const std::string& token) {
    auto o = broker_->options();
    o.token = token;
    return client::Connection::connect(o);
  }
  std::unique_ptr<client::Connection> connect_ok(const Token& token) {
    auto c = connect(token.secret);
    INFO(c.error().to_string());
    REQUIRE(c.ok());
    return std::move(c).value();
  }
  sluice::test::HttpResult http(const std::string& method, const std::string& target,
                                const std::string& token, const std::string& body = "") {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
    return http_request(broker_->http_port(), method, target, body, headers);
  }

 private:
  sluice::test::ScopedTempDir dir_;
  std::filesystem::path config_;
  std::unique_ptr<TestBroker> broker_;
};

client::DeadLetterQuery list_dlq(const std::string& queue) {
  client::DeadLetterQuery q;
  q.op = client::DeadLetterQuery::Op::list;
  q.queue = queue;
  return q;
}

client::QueueCommand queue_command(client::QueueCommand::Op op, std::string queue) {
  client::QueueCommand c;
  c.op = op;
  c.queue = std::move(queue);
  return c;
}

errc subscribe_code(client::Connection& c, const std::string& queue) {
  auto sub = c.subscribe(queue, {.max_in_flight = 1},
                         [](const client::Delivery&) { return client::Disposition::ack; });
  return sub.ok() ? errc::ok : sub.error().code;
}

}  // namespace

TEST_CASE("tokens: least privilege over the protocol") {
  const Token producer{"producer", security::generate_token(), "publish = [\"orders.*\"]"};
  const Token consumer{"consumer", security::generate_token(), "consume = [\"orders.*\"]"};
  const Token admin{"admin", security::generate_token(), "admin = [\"*\"]"};
  const Token orders{"orders-team", security::generate_token(),
                     "publish = [\"orders.*\"]\nconsume = [\"orders.*\"]\nadmin = [\"orders.*\"]"};
  SecuredBroker b({producer, consumer, admin, orders});

  SUBCASE("no token and a wrong token are unauthenticated, and the connection closes") {
    auto none = b.connect("");
    REQUIRE_FALSE(none.ok());
    CHECK(none.error().code == errc::unauthenticated);
    auto wrong = b.connect(security::generate_token());
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().code == errc::unauthenticated);
    CHECK(b.broker().log().find("authentication_failed") != std::string::npos);
    // The secret never reaches the log.
    CHECK(b.broker().log().find(producer.secret) == std::string::npos);
  }

  SUBCASE("consume-only cannot publish or touch the DLQ") {
    auto c = b.connect_ok(consumer);
    auto published = c->publish("orders.eu", sluice::test::text_message("m"));
    REQUIRE_FALSE(published.ok());
    CHECK(published.error().code == errc::forbidden);
    auto dlq = c->dead_letters(list_dlq("orders.eu"));
    REQUIRE_FALSE(dlq.ok());
    CHECK(dlq.error().code == errc::forbidden);
    CHECK(c->configure("orders.eu", {{"max_attempts", "3"}}).code == errc::forbidden);
    CHECK(subscribe_code(*c, "orders.eu") == errc::ok);
    CHECK(c->connected());  // forbidden is an answer, not a disconnect
  }

  SUBCASE(
      "creating, deleting and purging queues need admin on them; a list shows what it may see") {
    auto c = b.connect_ok(consumer);
    using Op = client::QueueCommand::Op;
    for (Op op : {Op::create, Op::remove, Op::purge}) {
      auto r = c->queues(queue_command(op, "orders.eu"));
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == errc::forbidden);
    }
    CHECK(b.http("PUT", "/v1/queues/orders.eu", consumer.secret).status == 403);
    CHECK(b.http("DELETE", "/v1/queues/orders.eu", consumer.secret).status == 403);
    CHECK(b.http("POST", "/v1/queues/orders.eu/purge", consumer.secret).status == 403);
    auto team = b.connect_ok(orders);
    CHECK(team->queues(queue_command(Op::create, "orders.eu")).ok());
    CHECK(team->queues(queue_command(Op::create, "billing")).error().code == errc::forbidden);
    auto a = b.connect_ok(admin);
    CHECK(a->queues(queue_command(Op::create, "billing")).ok());
    auto seen = team->queues(queue_command(Op::list, ""));
    REQUIRE(seen);
    REQUIRE(seen->queues.size() == 1);  // billing is not the team's to see
    CHECK(seen->queues[0].name == "orders.eu");
    CHECK(team->queues(queue_command(Op::remove, "orders.eu")).ok());
  }

  SUBCASE("publish-only cannot consume") {
    auto c = b.connect_ok(producer);
    CHECK(subscribe_code(*c, "orders.eu") == errc::forbidden);
    CHECK(c->publish("orders.eu", sluice::test::text_message("m")).ok());
    auto dlq = c->dead_letters(list_dlq("orders.eu"));
    CHECK(dlq.error().code == errc::forbidden);
  }

  SUBCASE("admin can do all") {
    auto c = b.connect_ok(admin);
    CHECK(c->publish("billing", sluice::test::text_message("m")).ok());
    std::atomic<int> got{0};
    auto sub = c->subscribe("billing", {.max_in_flight = 4}, [&](const client::Delivery&) {
      got.fetch_add(1);
      return client::Disposition::ack;
    });
    REQUIRE(sub.ok());
    CHECK(eventually([&] { return got.load() == 1; }));
    CHECK(c->dead_letters(list_dlq("billing")).ok());
    CHECK_FALSE(c->configure("billing", {{"max_attempts", "3"}}));
    auto stats = c->stats();
    REQUIRE(stats.ok());
    CHECK(stats->size() >= 1);
  }

  SUBCASE("a token for orders.* cannot reach billing, whether billing exists or not") {
    {
      auto a = b.connect_ok(admin);
      REQUIRE(a->publish("billing", sluice::test::text_message("secret invoice")).ok());
    }
    auto c = b.connect_ok(orders);
    CHECK(c->publish("orders.us", sluice::test::text_message("m")).ok());
    CHECK(c->dead_letters(list_dlq("orders.us")).ok());
    for (const std::string queue : {"billing", "billing-never-made"}) {
      CAPTURE(queue);
      auto p = c->publish(queue, sluice::test::text_message("m"));
      REQUIRE_FALSE(p.ok());
      CHECK(p.error().code == errc::forbidden);
      CHECK(p.error().detail == "token orders-team may not publish to queue " + queue);
      CHECK(subscribe_code(*c, queue) == errc::forbidden);
      CHECK(c->dead_letters(list_dlq(queue)).error().code == errc::forbidden);
      CHECK(c->stats(queue).error().code == errc::forbidden);
    }
    // Listing every queue shows only those it may see.
    auto stats = c->stats();
    REQUIRE(stats.ok());
    for (const auto& q : *stats) CHECK(q.name.starts_with("orders."));
  }
}

TEST_CASE("tokens: least privilege over HTTP, 401 and 403 without revealing queues") {
  const Token producer{"producer", security::generate_token(), "publish = [\"orders.*\"]"};
  const Token consumer{"consumer", security::generate_token(), "consume = [\"orders.*\"]"};
  const Token admin{"admin", security::generate_token(), "admin = [\"*\"]"};
  const Token scraper{"scraper", security::generate_token(), "metrics = \"on\""};
  SecuredBroker b({producer, consumer, admin, scraper});
  const std::string q = "/v1/queues/";

  CHECK(b.http("GET", "/healthz", "").status == 200);
  CHECK(b.http("GET", "/readyz", "").status == 200);
  auto r = b.http("POST", q + "orders.eu/messages", "", "m");
  CHECK(r.status == 401);
  CHECK(r.header("www-authenticate").starts_with("Bearer"));
  CHECK(nlohmann::json::parse(r.body)["error"]["code"] == "unauthenticated");
  CHECK(b.http("POST", q + "orders.eu/messages", "not-a-token", "m").status == 401);
  CHECK(b.http("GET", "/metrics", "").status == 401);

  // consume-only: no publish, no DLQ; receive works.
  CHECK(b.http("POST", q + "orders.eu/messages", consumer.secret, "m").status == 403);
  CHECK(b.http("GET", q + "orders.eu/dlq", consumer.secret).status == 403);
  CHECK(b.http("POST", q + "orders.eu/receive", consumer.secret, R"({"max_messages":1})").status ==
        200);
  // publish-only: no receive.
  CHECK(b.http("POST", q + "orders.eu/messages", producer.secret, "m").status == 202);
  r = b.http("POST", q + "orders.eu/receive", producer.secret, R"({"max_messages":1})");
  CHECK(r.status == 403);
  CHECK(nlohmann::json::parse(r.body)["error"]["code"] == "forbidden");
  CHECK(b.http("PUT", "/v1/log-level", producer.secret, R"({"level":"info"})").status == 403);
  // admin: everything, including the broker-wide log level.
  CHECK(b.http("POST", q + "billing/messages", admin.secret, "m").status == 202);
  CHECK(b.http("POST", q + "billing/receive", admin.secret, R"({"max_messages":1})").status == 200);
  CHECK(b.http("GET", q + "billing/dlq", admin.secret).status == 200);
  CHECK(b.http("PUT", "/v1/log-level", admin.secret, R"({"level":"info"})").status == 200);
  CHECK(b.http("GET", "/metrics", admin.secret).status == 200);

  // The same 403 for a queue that exists and one that does not.
  const auto existing = b.http("GET", q + "billing", producer.secret);
  const auto missing = b.http("GET", q + "billing-never-made", producer.secret);
  CHECK(existing.status == 403);
  CHECK(missing.status == 403);
  CHECK(nlohmann::json::parse(existing.body)["error"]["code"] ==
        nlohmann::json::parse(missing.body)["error"]["code"]);
  // The listing shows only what the token may see.
  const auto listing = nlohmann::json::parse(b.http("GET", "/v1/queues", producer.secret).body);
  REQUIRE(listing["queues"].size() == 1);
  CHECK(listing["queues"][0]["name"] == "orders.eu");
  // /metrics: the scraper may, the producer may not.
  CHECK(b.http("GET", "/metrics", scraper.secret).status == 200);
  CHECK(b.http("GET", "/metrics", producer.secret).status == 403);
  CHECK(b.http("POST", q + "orders.eu/messages", scraper.secret, "m").status == 403);

  // Every refused token is counted by port: 3 HTTP requests above had none or a bad one;
  // now one HELLO with a bad token.
  CHECK(b.connect("not-a-token").error().code == errc::unauthenticated);
  const std::string text = b.http("GET", "/metrics", scraper.secret).body;
  const auto value = [&](const std::string& series) {
    const auto at = text.find("\n" + series + " ");
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + series.size() + 2));
  };
  CHECK(value("sluice_authentication_failures_total{listener=\"http\"}") == 3);
  CHECK(value("sluice_authentication_failures_total{listener=\"protocol\"}") == 1);
}

TEST_CASE("tokens: SIGHUP revokes a removed token and closes its connections") {
  const Token keep{"keep", security::generate_token(), "publish = [\"q\"]\nconsume = [\"q\"]"};
  const Token drop{"drop", security::generate_token(), "consume = [\"q\"]"};
  SecuredBroker b({keep, drop});
  auto kept = b.connect_ok(keep);
  auto dropped = b.connect_ok(drop);
  REQUIRE(subscribe_code(*dropped, "q") == errc::ok);
  b.rewrite({keep});
  b.reload();
  CHECK(eventually([&] { return !dropped->connected(); }));
  CHECK(dropped->last_error().code == errc::unauthenticated);
  CHECK(b.connect(drop.secret).error().code == errc::unauthenticated);
  CHECK(b.http("POST", "/v1/queues/q/receive", drop.secret, "{}").status == 401);
  CHECK(kept->publish("q", sluice::test::text_message("still fine")).ok());
  CHECK(b.http("POST", "/v1/queues/q/messages", keep.secret, "m").status == 202);
}

TEST_CASE(
    "tokens: a reload ends a revoked token's HTTP long poll, and receipts stay in their queue") {
  const Token keep{"keep", security::generate_token(), "publish = [\"*\"]\nconsume = [\"*\"]"};
  const Token drop{"drop", security::generate_token(), "consume = [\"q\"]"};
  SecuredBroker b({keep, drop});
  // A receipt from queue a is not good under queue b's path.
  REQUIRE(b.http("POST", "/v1/queues/a/messages", keep.secret, "m").status == 202);
  const auto got = nlohmann::json::parse(
      b.http("POST", "/v1/queues/a/receive", keep.secret, R"({"max_messages":1})").body);
  REQUIRE(got["messages"].size() == 1);
  const std::string receipt = got["messages"][0]["receipt"];
  const std::string settle = nlohmann::json{{"receipt", receipt}}.dump();
  auto r = b.http("POST", "/v1/queues/b/ack", keep.secret, settle);
  CHECK(r.status == 409);
  CHECK(r.body.find("stale_lease") != std::string::npos);
  r = b.http("POST", "/v1/queues/a/ack", keep.secret, settle);
  CHECK(r.status == 200);
  CHECK(nlohmann::json::parse(r.body)["succeeded"] == 1);

  // A long poll of the token about to go: the reload answers it at once.
  std::promise<sluice::test::HttpResult> waiting;
  std::thread poller([&] {
    waiting.set_value(b.http("POST", "/v1/queues/q/receive", drop.secret,
                             R"({"max_messages":1,"wait_ms":15000})"));
  });
  std::this_thread::sleep_for(300ms);  // the poll is in
  const auto started = std::chrono::steady_clock::now();
  b.rewrite({keep});
  b.reload();
  auto answer = waiting.get_future();
  REQUIRE(answer.wait_for(5s) == std::future_status::ready);
  CHECK(answer.get().status == 401);
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  poller.join();
  // A message published now is not taken by the ended poll.
  REQUIRE(b.http("POST", "/v1/queues/q/messages", keep.secret, "after").status == 202);
  const auto later = nlohmann::json::parse(
      b.http("POST", "/v1/queues/q/receive", keep.secret, R"({"max_messages":1})").body);
  CHECK(later["messages"].size() == 1);
}

TEST_CASE("tokens: without any, sluiced refuses to listen beyond loopback") {
  auto refused = sluice::test::run_command(std::string(SLUICED_PATH) +
                                           " --listen 0.0.0.0:0 --http-listen 127.0.0.1:0 2>&1");
  CHECK(refused.status == 2);
  CHECK(refused.out.find("server.listen is 0.0.0.0, not a loopback address") != std::string::npos);
  refused = sluice::test::run_command(std::string(SLUICED_PATH) +
                                      " --listen 127.0.0.1:0 --http-listen 0.0.0.0:0 2>&1");
  CHECK(refused.status == 2);
  CHECK(refused.out.find("http.listen") != std::string::npos);
  // With a token it starts on the wildcard address, and still wants the token.
  const Token t{"t", security::generate_token(), "publish = [\"q\"]"};
  SecuredBroker b({t}, {"--listen", "0.0.0.0:0", "--http-listen", "0.0.0.0:0"});
  CHECK(b.connect("").error().code == errc::unauthenticated);
  CHECK(b.connect_ok(t)->publish("q", sluice::test::text_message("m")).ok());
}

TEST_CASE("tokens: sluicectl new-token makes a token the broker takes") {
  auto made = sluice::test::run_command(std::string(SLUICECTL_PATH) + " new-token --name cli");
  REQUIRE(made.status == 0);
  const std::string token = made.out.substr(0, made.out.find('\n'));
  CHECK(token.starts_with("sluice_"));
  std::string table = made.out.substr(made.out.find("[tokens.cli]"));
  CHECK(table.find(token) == std::string::npos);  // only the hash goes to the config
  table.replace(table.find("publish = []"), 12, "publish = [\"cli\"]");
  table.replace(table.find("consume = []"), 12, "consume = [\"cli\"]");
  sluice::test::ScopedTempDir dir("sluice-cli-token");
  std::ofstream(dir.path / "sluiced.toml") << table;
  std::ofstream(dir.path / "token") << token << "\n";
  TestBroker broker({"--config", (dir.path / "sluiced.toml").string()});
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address();
  auto out = sluice::test::run_command(ctl + " --token-file " + (dir.path / "token").string() +
                                       " publish cli --body hello --quiet");
  CHECK(out.status == 0);
  out = sluice::test::run_command(ctl + " publish cli --body hello 2>&1");
  CHECK(out.status != 0);
  CHECK(out.out.find("unauthenticated") != std::string::npos);
  // hash-token: the same for a token of one's own, refusing short ones.
  auto hashed = sluice::test::run_command(std::string(SLUICECTL_PATH) + " hash-token --name own",
                                          std::string(40, 'k') + "\n");
  CHECK(hashed.status == 0);
  CHECK(hashed.out.find("hash = \"sha256:") != std::string::npos);
  CHECK(sluice::test::run_command(std::string(SLUICECTL_PATH) + " hash-token 2>&1", "short\n")
            .status == 2);
}

TEST_CASE("tokens: trigger endpoints need admin on the trigger's queue") {
  const Token orders_admin{"orders-admin", security::generate_token(), "admin = [\"orders.*\"]"};
  const Token other_admin{"other-admin", security::generate_token(), "admin = [\"billing\"]"};
  const Token consumer{"consumer", security::generate_token(), "consume = [\"orders.*\"]"};
  // The function is nowhere (port 9 refuses): these calls only look and pause.
  SecuredBroker b(
      {orders_admin, other_admin, consumer},
      {"--set", "triggers.fn.queue=orders.eu", "--set", "triggers.fn.url=http://127.0.0.1:9/"});
  CHECK(b.http("GET", "/v1/triggers", "").status == 401);
  auto r = b.http("GET", "/v1/triggers", orders_admin.secret);
  REQUIRE(r.status == 200);
  CHECK(nlohmann::json::parse(r.body)["triggers"].size() == 1);
  // Another queue's admin sees no trigger, and may not touch this one.
  r = b.http("GET", "/v1/triggers", other_admin.secret);
  REQUIRE(r.status == 200);
  CHECK(nlohmann::json::parse(r.body)["triggers"].empty());
  CHECK(b.http("POST", "/v1/triggers/fn/pause", other_admin.secret).status == 403);
  CHECK(b.http("POST", "/v1/triggers/fn/pause", consumer.secret).status == 403);
  CHECK(b.http("POST", "/v1/triggers/fn/invoke", consumer.secret, "x").status == 403);
  r = b.http("POST", "/v1/triggers/fn/pause", orders_admin.secret);
  REQUIRE(r.status == 200);
  CHECK(nlohmann::json::parse(r.body)["state"] == "paused");

  // The same over the protocol (sluicectl triggers).
  using Op = sluice::client::TriggerCommand::Op;
  const auto command = [](Op op, std::string name = {}, std::string body = {}) {
    return sluice::client::TriggerCommand{op, std::move(name), std::move(body)};
  };
  auto listed = b.connect_ok(other_admin)->triggers(command(Op::list));
  REQUIRE(listed.ok());
  CHECK(listed->triggers.empty());
  auto refused = b.connect_ok(other_admin)->triggers(command(Op::resume, "fn"));
  CHECK(refused.error().code == errc::forbidden);
  refused = b.connect_ok(consumer)->triggers(command(Op::invoke, "fn", "x"));
  CHECK(refused.error().code == errc::forbidden);
  auto admin = b.connect_ok(orders_admin);
  listed = admin->triggers(command(Op::list));
  REQUIRE(listed.ok());
  REQUIRE(listed->triggers.size() == 1);
  CHECK(listed->triggers[0].paused);
  auto resumed = admin->triggers(command(Op::resume, "fn"));
  REQUIRE(resumed.ok());
  CHECK(!resumed->triggers.at(0).paused);
}
