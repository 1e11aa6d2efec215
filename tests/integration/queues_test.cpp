// An operator's queue lifecycle against the real sluiced: create with
// settings, list, purge and delete (with its refusals, and with force ending
// consumers), on the protocol, HTTP and sluicectl; a durable queue's delete and
// purge surviving kill -9; a deleted queue's metric series gone.
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "http_client.hpp"
#include "test_broker.hpp"

using sluice::errc;
using sluice::client::Disposition;
using Op = sluice::client::QueueCommand::Op;
using namespace std::chrono_literals;

namespace {

sluice::client::QueueCommand command(Op op, std::string queue, bool force = false) {
  sluice::client::QueueCommand c;
  c.op = op;
  c.queue = std::move(queue);
  c.force = force;
  return c;
}

sluice::client::QueueCommand create(std::string queue,
                                    std::vector<std::pair<std::string, std::string>> settings) {
  auto c = command(Op::create, std::move(queue));
  c.settings = std::move(settings);
  return c;
}

std::uint64_t messages_of(sluice::client::Connection& c, const std::string& queue) {
  auto r = c.queues(command(Op::list, queue));
  return r && r->queues.size() == 1 ? r->queues[0].messages : ~0ull;
}

}  // namespace

TEST_CASE("queues: create with settings, list, purge, and delete with its refusals") {
  TestBroker broker;
  auto c = broker.connect();
  auto created = c->queues(create("jobs", {{"max_attempts", "3"}}));
  REQUIRE(created);
  REQUIRE(created->queues.size() == 1);
  CHECK(created->queues[0].name == "jobs");
  CHECK(created->queues[0].messages == 0);
  // The settings took: the HTTP view shows them.
  auto shown = sluice::test::http_request(broker.http_port(), "GET", "/v1/queues/jobs");
  CHECK(shown.body.find("\"max_attempts\":3") != std::string::npos);
  CHECK(c->queues(command(Op::create, "jobs")).error().code == errc::queue_exists);
  auto bad = c->queues(create("typo", {{"max_atempts", "3"}}));
  CHECK(bad.error().code == errc::invalid_argument);
  CHECK(c->queues(command(Op::list, "typo")).error().code == errc::queue_not_found);

  for (int i = 0; i < 5; ++i)
    REQUIRE(c->publish("jobs", sluice::test::text_message("m" + std::to_string(i))).ok());
  // One in flight: a purge leaves it, and it settles as usual.
  auto held = c->fetch("jobs", 1, 5s);
  REQUIRE(held);
  REQUIRE(held->size() == 1);
  auto purged = c->queues(command(Op::purge, "jobs"));
  REQUIRE(purged);
  CHECK(purged->affected == 4);
  CHECK(messages_of(*c, "jobs") == 1);
  CHECK_FALSE(c->ack(held->front().lease));
  CHECK(messages_of(*c, "jobs") == 0);

  // Refused while it holds messages or has consumers; force ends them.
  REQUIRE(c->publish("jobs", sluice::test::text_message("again")).ok());
  auto refused = c->queues(command(Op::remove, "jobs"));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::queue_in_use);
  CHECK(refused.error().detail.find("holds 1 messages") != std::string::npos);
  auto consumer = broker.connect("consumer");
  std::atomic<int> got{0};
  auto sub = consumer->subscribe("jobs", {.max_in_flight = 5}, [&](const auto&) {
    ++got;
    return Disposition::manual;  // held when the queue goes
  });
  REQUIRE(sub);
  REQUIRE(eventually([&] { return got == 1; }));
  auto deleted = c->queues(command(Op::remove, "jobs", true));
  REQUIRE(deleted);
  CHECK(deleted->affected == 1);
  CHECK(c->queues(command(Op::list, "jobs")).error().code == errc::queue_not_found);
  // The consumer heard of it, and its connection is fine.
  CHECK(eventually([&] { return consumer->last_error().code == errc::queue_not_found; }));
  CHECK(consumer->last_error().detail.find("was deleted") != std::string::npos);
  CHECK_FALSE(consumer->ping());
  CHECK(c->queues(command(Op::remove, "jobs")).error().code == errc::queue_not_found);
  CHECK(c->queues(command(Op::purge, "jobs")).error().code == errc::queue_not_found);
  // With auto_create on (the default), first use makes a new, empty queue.
  REQUIRE(c->publish("jobs", sluice::test::text_message("new")).ok());
  CHECK(messages_of(*c, "jobs") == 1);
  CHECK(got == 1);  // the ended subscription gets nothing of the new queue
  CHECK(consumer->unsubscribe(*sub).code == errc::unknown_subscription);
}

TEST_CASE("queues: a deleted queue's metric series are gone") {
  TestBroker broker;
  auto c = broker.connect();
  REQUIRE(c->publish("short.lived", sluice::test::text_message("x")).ok());
  REQUIRE(c->publish("stays", sluice::test::text_message("x")).ok());
  auto metrics = [&] {
    return sluice::test::http_request(broker.http_port(), "GET", "/metrics").body;
  };
  CHECK(metrics().find("queue=\"short.lived\"") != std::string::npos);
  REQUIRE(c->queues(command(Op::remove, "short.lived", true)));
  const std::string after = metrics();
  CHECK(after.find("short.lived") == std::string::npos);
  CHECK(after.find("queue=\"stays\"") != std::string::npos);
}

TEST_CASE("queues: HTTP PUT creates, DELETE deletes, POST purge purges") {
  TestBroker broker;
  const auto port = broker.http_port();
  using sluice::test::http_request;
  auto put =
      http_request(port, "PUT", "/v1/queues/web", R"({"max_attempts": 4, "ordering": "key"})");
  CHECK(put.status == 201);
  CHECK(put.body.find("\"ordering\":\"key\"") != std::string::npos);
  CHECK(http_request(port, "PUT", "/v1/queues/web").status == 409);
  CHECK(http_request(port, "PUT", "/v1/queues/x", R"({"max_attempts": true})").status == 400);
  CHECK(http_request(port, "PUT", "/v1/queues/x", "[]").status == 400);
  CHECK(http_request(port, "POST", "/v1/queues/web/messages", "a").status == 202);
  CHECK(http_request(port, "POST", "/v1/queues/web/messages", "b").status == 202);
  auto refused = http_request(port, "DELETE", "/v1/queues/web");
  CHECK(refused.status == 409);
  CHECK(refused.body.find("\"queue_in_use\"") != std::string::npos);
  auto purged = http_request(port, "POST", "/v1/queues/web/purge");
  CHECK(purged.status == 200);
  CHECK(purged.body.find("\"messages_dropped\":2") != std::string::npos);
  CHECK(http_request(port, "DELETE", "/v1/queues/web").status == 200);
  CHECK(http_request(port, "GET", "/v1/queues/web").status == 404);
  CHECK(http_request(port, "DELETE", "/v1/queues/web").status == 404);
  CHECK(http_request(port, "DELETE", "/v1/queues/web?force=yes").status == 400);
  auto post = http_request(port, "POST", "/v1/queues/web");
  CHECK(post.status == 405);
  CHECK(post.header("allow") == "GET, PUT, DELETE, PATCH");
  // PATCH changes the live settings of a queue that exists, as sluicectl set does.
  CHECK(http_request(port, "PATCH", "/v1/queues/web", R"({"dispatch_rate": "5"})").status == 404);
  REQUIRE(http_request(port, "PUT", "/v1/queues/web").status == 201);
  auto patched = http_request(port, "PATCH", "/v1/queues/web", R"({"dispatch_rate": "5"})");
  CHECK(patched.status == 200);
  CHECK(patched.body.find("\"dispatch_rate\":5.0") != std::string::npos);
  CHECK(http_request(port, "PATCH", "/v1/queues/web", R"({"dispatch_rat": "5"})").status == 400);
  CHECK(http_request(port, "PATCH", "/v1/queues/web", "{}").status == 400);
}

TEST_CASE("queues: sluicectl queues lists, creates, purges and deletes") {
  TestBroker broker({"--set", "queues.declared.max_attempts=2"});
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address() + " ";
  using sluice::test::run_command;
  auto r = run_command(ctl + "queues create tmp max_attempts=3");
  CHECK(r.status == 0);
  CHECK(r.out == "tmp memory 0 0\n");
  CHECK(run_command(ctl + "publish tmp --body x --quiet").status == 0);
  r = run_command(ctl + "queues");
  CHECK(r.out == "declared memory 0 0\ntmp memory 1 0\n");
  r = run_command(ctl + "queues list --json");
  CHECK(r.status == 0);
  CHECK(r.out.find("{\"consumers\":0,\"durable\":false,\"messages\":1,\"name\":\"tmp\"}") !=
        std::string::npos);
  r = run_command(ctl + "queues delete tmp 2>&1");
  CHECK(r.status == 1);
  CHECK(r.out.find("queue_in_use") != std::string::npos);
  r = run_command(ctl + "queues delete declared 2>&1");
  CHECK(r.status == 1);
  CHECK(r.out.find("declared in the config file") != std::string::npos);
  r = run_command(ctl + "queues purge tmp --json");
  CHECK(r.out == "{\"messages_dropped\":1,\"queue\":\"tmp\"}\n");
  CHECK(run_command(ctl + "queues delete tmp").out == "0\n");
  CHECK(run_command(ctl + "queues delete tmp 2>/dev/null").status == 3);
  r = run_command(ctl + "queues purge 2>&1");
  CHECK(r.status == 2);
  CHECK(r.out.find("purge needs a QUEUE") != std::string::npos);
  CHECK(run_command(ctl + "queues list tmp --force 2>/dev/null").status == 2);
}

TEST_CASE("queues: a durable queue's delete and purge hold across kill -9") {
  sluice::test::ScopedTempDir data("sluice-queues");
  const std::vector<std::string> args = {"--set", "storage.path=" + (data.path / "d").string()};
  auto broker = std::make_unique<TestBroker>(args);
  {
    auto c = broker->connect();
    for (const char* q : {"gone", "kept"})
      REQUIRE(c->queues(create(q, {{"durability", "durable"}})));
    for (int i = 0; i < 5; ++i) {
      REQUIRE(c->publish("gone", sluice::test::text_message("g" + std::to_string(i))).ok());
      REQUIRE(c->publish("kept", sluice::test::text_message("k" + std::to_string(i))).ok());
    }
    // Two of gone's become dead letters: they go with it.
    auto two = c->fetch("gone", 2, 5s);
    REQUIRE(two);
    REQUIRE(two->size() == 2);
    for (const auto& f : *two)
      REQUIRE_FALSE(c->nack(f.lease, sluice::client::NackOptions{0ms, "poison", true}));
    REQUIRE(eventually([&] {
      auto s = c->stats("gone");
      return s && s->size() == 1 && s->front().dead_letters == 2;
    }));
    // Refused (queue_in_use) until the dead-letter writes are committed: a moment.
    REQUIRE(eventually([&] { return c->queues(command(Op::remove, "gone", true)).ok(); }));
    auto purged = c->queues(command(Op::purge, "kept"));
    REQUIRE(purged);
    CHECK(purged->affected == 5);
    REQUIRE(c->publish("kept", sluice::test::text_message("after")).ok());
  }
  broker->kill9();
  broker = std::make_unique<TestBroker>(args);
  auto c = broker->connect();
  auto stats = c->stats();
  REQUIRE(stats);
  std::vector<std::string> names;
  for (const auto& q : *stats) names.push_back(q.name);
  CHECK(names == std::vector<std::string>{"kept"});  // gone does not come back
  auto back = c->fetch("kept", 10, 300ms);
  REQUIRE(back);
  REQUIRE(back->size() == 1);
  CHECK(back->front().message.payload == "after");
  sluice::client::DeadLetterQuery q;
  q.queue = "gone";
  auto dlq = c->dead_letters(q);
  REQUIRE(dlq);
  CHECK(dlq->affected == 0);
  CHECK(dlq->entries.empty());
}

TEST_CASE("queues: delete is refused for a queue with consumers or a trigger, and ends a fetch") {
  TestBroker broker(
      {"--set", "triggers.push.queue=pushed", "--set", "triggers.push.url=http://127.0.0.1:9/"});
  auto c = broker.connect();
  auto trigger = c->queues(command(Op::remove, "pushed", true));
  REQUIRE_FALSE(trigger);
  CHECK(trigger.error().code == errc::queue_in_use);
  CHECK(trigger.error().detail.find("trigger push") != std::string::npos);

  REQUIRE(c->queues(command(Op::create, "idle")));
  auto consumer = broker.connect("consumer");
  REQUIRE(consumer->subscribe("idle", {}, [](const auto&) { return Disposition::ack; }));
  auto refused = c->queues(command(Op::remove, "idle"));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == errc::queue_in_use);
  CHECK(refused.error().detail.find("has 1 consumers") != std::string::npos);

  // A fetch waiting on a queue that is deleted ends then, not at its wait.
  REQUIRE(c->queues(command(Op::create, "waited")));
  std::atomic<bool> done{false};
  sluice::client::Error fetch_error;
  std::thread fetching([&] {
    fetch_error = consumer->fetch("waited", 10, 30s).error();
    done = true;
  });
  REQUIRE(eventually([&] {
    auto s = c->stats("waited");
    return s && s->size() == 1 && s->front().consumers == 1;
  }));
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(c->queues(command(Op::remove, "waited", true)));
  CHECK(eventually([&] { return done.load(); }, 10s));
  fetching.join();
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  CHECK(fetch_error.code == errc::connection_lost);
}

TEST_CASE("queues: a queue created at run time keeps its settings through a reload, and can go") {
  sluice::test::ScopedTempDir dir("sluice-queues");
  const auto config = dir.path / "sluiced.toml";
  std::ofstream(config) << "[queues.filed]\nmax_attempts = 2\n";
  TestBroker broker({"--config", config.string()});
  auto c = broker.connect();
  REQUIRE(c->queues(create("made", {{"max_attempts", "7"}})));
  const auto before = broker.log().size();
  ::kill(broker.pid(), SIGHUP);
  REQUIRE(
      eventually([&] { return broker.log().find("\"reloaded\"", before) != std::string::npos; }));
  auto shown = sluice::test::http_request(broker.http_port(), "GET", "/v1/queues/made");
  CHECK(shown.body.find("\"max_attempts\":7") != std::string::npos);
  CHECK(c->queues(command(Op::remove, "filed")).error().code == errc::queue_in_use);
  CHECK(c->queues(command(Op::remove, "made")).ok());
}
