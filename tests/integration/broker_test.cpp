// The real sluiced, driven through the client library: delivery with credit,
// leases, redelivery, stale acks, shutdown and start-up errors.
#include <doctest/doctest.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "http_client.hpp"
#include "test_broker.hpp"

namespace {

sluice::client::QueueStats queue_stats(sluice::client::Connection& c, const std::string& queue) {
  auto stats = c.stats(queue);
  REQUIRE(stats.ok());
  REQUIRE(stats->size() == 1);
  return stats->front();
}

/// Deliveries a handler kept for the test to settle later; thread-safe.
struct Held {
  std::mutex mutex;
  std::vector<std::pair<LeaseHandle, std::uint32_t>> items;  // lease, attempt
  std::vector<std::string> payloads;

  Disposition keep(const Delivery& d) {
    std::lock_guard lk(mutex);
    items.emplace_back(sluice::client::handle(d), d.attempt);
    payloads.emplace_back(d.payload);
    return Disposition::manual;
  }
  std::size_t size() {
    std::lock_guard lk(mutex);
    return items.size();
  }
};

}  // namespace

TEST_CASE("4 consumers with credit 64 get every message once, never holding more than 64") {
  TestBroker broker;
  constexpr int kMessages = 20000;
  constexpr std::uint32_t kCredit = 64;

  auto producer = broker.connect("producer");
  std::atomic<int> confirmed{0};
  std::atomic<int> failed{0};
  for (int i = 0; i < kMessages; ++i) {
    producer->publish_async("work", "message-" + std::to_string(i),
                            [&](const sluice::client::Error& e, std::uint64_t) {
                              (e ? failed : confirmed).fetch_add(1);
                            });
  }
  REQUIRE(producer->wait_confirms(30s));
  REQUIRE(confirmed == kMessages);
  REQUIRE(failed == 0);

  // Each consumer keeps what it is handed and a worker thread acks it later,
  // so the broker really has to stop at the credit.
  struct Consumer {
    std::unique_ptr<sluice::client::Connection> connection;
    std::uint32_t subscription = 0;
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<LeaseHandle> to_ack;
    std::set<std::string> seen;
    std::thread worker;
  };
  std::vector<std::unique_ptr<Consumer>> consumers;
  std::atomic<int> acked{0};
  std::atomic<bool> done{false};
  for (int c = 0; c < 4; ++c) {
    auto consumer = std::make_unique<Consumer>();
    consumer->connection = broker.connect("consumer-" + std::to_string(c));
    Consumer* self = consumer.get();
    auto sub = consumer->connection->subscribe("work", SubscribeOptions{.max_in_flight = kCredit},
                                               [self](const Delivery& d) {
                                                 std::lock_guard lk(self->mutex);
                                                 self->seen.emplace(d.payload);
                                                 self->to_ack.push_back(sluice::client::handle(d));
                                                 self->ready.notify_one();
                                                 return Disposition::manual;
                                               });
    REQUIRE(sub.ok());
    consumer->subscription = *sub;
    consumer->worker = std::thread([self, &acked, &done] {
      std::unique_lock lk(self->mutex);
      while (!done) {
        if (self->to_ack.empty()) {
          self->ready.wait_for(lk, 50ms);
          continue;
        }
        const LeaseHandle lease = self->to_ack.front();
        self->to_ack.pop_front();
        lk.unlock();
        const auto error = self->connection->ack(lease);
        if (!error) acked.fetch_add(1);
        lk.lock();
      }
    });
    consumers.push_back(std::move(consumer));
  }

  const bool all_acked = eventually([&] { return acked.load() >= kMessages; }, 60s);
  done = true;
  for (auto& c : consumers) {
    c->ready.notify_one();
    c->worker.join();
  }
  REQUIRE(all_acked);
  CHECK(acked == kMessages);

  std::set<std::string> all;
  std::uint64_t highest_peak = 0;
  for (auto& c : consumers) {
    const auto s = c->connection->subscription_stats(c->subscription);
    CAPTURE(s.received);
    CHECK(s.peak_held <= kCredit);
    CHECK(s.received > 0);  // round-robin: nobody starves
    highest_peak = std::max(highest_peak, s.peak_held);
    all.insert(c->seen.begin(), c->seen.end());
  }
  CHECK(highest_peak == kCredit);  // the limit was reached, so it was really tested
  CHECK(all.size() == kMessages);  // none lost

  const auto stats = queue_stats(*producer, "work");
  CHECK(stats.published_total == kMessages);
  CHECK(stats.acked_total == kMessages);
  CHECK(stats.ready == 0);
  CHECK(stats.in_flight == 0);
  CHECK(stats.consumers == 4);
}

TEST_CASE("a disconnected consumer's messages go to the others at once") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  for (int i = 0; i < 30; ++i) REQUIRE(producer->publish("jobs", {std::to_string(i), {}}).ok());

  Held first;
  auto doomed = broker.connect("doomed");
  REQUIRE(doomed
              ->subscribe("jobs", SubscribeOptions{.max_in_flight = 10},
                          [&](const Delivery& d) { return first.keep(d); })
              .ok());
  REQUIRE(eventually([&] { return first.size() == 10; }));

  Held second;
  auto survivor = broker.connect("survivor");
  REQUIRE(survivor
              ->subscribe("jobs", SubscribeOptions{.max_in_flight = 100},
                          [&](const Delivery& d) { return second.keep(d); })
              .ok());
  REQUIRE(eventually([&] { return second.size() == 20; }));

  doomed.reset();  // the socket closes: what it held goes back at the front of the queue
  REQUIRE(eventually([&] { return second.size() == 30; }));
  std::set<std::string> payloads(second.payloads.begin(), second.payloads.end());
  CHECK(payloads.size() == 30);
  int redelivered = 0;
  for (const auto& [lease, attempt] : second.items) {
    if (attempt == 2) ++redelivered;
    CHECK(!survivor->ack(lease));
  }
  CHECK(redelivered == 10);
  const auto stats = queue_stats(*producer, "jobs");
  CHECK(stats.acked_total == 30);
  CHECK(stats.in_flight == 0);
  CHECK(stats.consumers == 1);
}

TEST_CASE("an expired lease is redelivered and the late ack is refused as stale") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  REQUIRE(producer->publish("leases", {"only-one", {}}).ok());

  Held slow;
  auto slow_consumer = broker.connect("slow");
  REQUIRE(slow_consumer
              ->subscribe("leases", SubscribeOptions{.max_in_flight = 1, .lease = 300ms},
                          [&](const Delivery& d) { return slow.keep(d); })
              .ok());
  REQUIRE(eventually([&] { return slow.size() == 1; }));
  const LeaseHandle late = slow.items[0].first;

  Held fast;
  auto fast_consumer = broker.connect("fast");
  REQUIRE(fast_consumer
              ->subscribe("leases", SubscribeOptions{.max_in_flight = 1},
                          [&](const Delivery& d) { return fast.keep(d); })
              .ok());
  // The slow consumer's lease runs out; the broker hands the message over.
  REQUIRE(eventually([&] { return fast.size() == 1; }));
  CHECK(fast.items[0].second == 2);  // attempt
  CHECK(fast.payloads[0] == "only-one");
  CHECK(fast.items[0].first.message_id == late.message_id);

  // The late ack, nack and extend change nothing.
  CHECK(slow_consumer->ack(late).code == errc::stale_lease);
  CHECK(slow_consumer->nack(late).code == errc::stale_lease);
  CHECK(slow_consumer->extend(late, 10s).code == errc::stale_lease);
  auto stats = queue_stats(*producer, "leases");
  CHECK(stats.acked_total == 0);
  CHECK(stats.in_flight == 1);
  CHECK(stats.expired_total == 1);

  // The current holder's ack works, once.
  CHECK_FALSE(fast_consumer->ack(fast.items[0].first));
  CHECK(fast_consumer->ack(fast.items[0].first).code == errc::stale_lease);
  stats = queue_stats(*producer, "leases");
  CHECK(stats.acked_total == 1);
  CHECK(stats.in_flight == 0);
}

TEST_CASE("automatic acks are quiet: a late one is still refused, counted, and changes nothing") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  REQUIRE(producer->publish("quiet", {"late", {}}).ok());
  REQUIRE(producer->publish("quiet", {"on-time", {}}).ok());

  // The handler holds its first delivery until its lease has expired, then
  // acks it automatically (a quiet ACK, request id 0): the broker refuses it
  // as stale and says so; the other acks take effect and are not answered.
  std::atomic<int> handled{0};
  auto consumer = broker.connect("consumer");
  REQUIRE(consumer
              ->subscribe("quiet", SubscribeOptions{.max_in_flight = 1, .lease = 1s},
                          [&](const Delivery& d) {
                            if (d.payload == "late" && d.attempt == 1)
                              (void)eventually([&] {  // until the broker took the lease back
                                auto s = producer->stats("quiet");
                                return s.ok() && s->size() == 1 && s->front().expired_total == 1;
                              });
                            handled.fetch_add(1);
                            return Disposition::ack;
                          })
              .ok());
  // "late" expires while held, comes back (attempt 2) and is acked in time.
  REQUIRE(eventually([&] { return queue_stats(*producer, "quiet").acked_total == 2; }));
  REQUIRE(eventually([&] { return consumer->refused_auto_acks() == 1; }));
  CHECK(handled.load() == 3);
  const auto stats = queue_stats(*producer, "quiet");
  CHECK(stats.expired_total == 1);
  CHECK(stats.in_flight == 0);
  CHECK(stats.ready == 0);
  // Nothing is left waiting for an answer: the connection still answers at once.
  CHECK_FALSE(consumer->ping());
  CHECK(consumer->refused_auto_acks() == 1);
}

TEST_CASE("extend keeps a lease alive, nack redelivers with the next attempt number") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  REQUIRE(producer->publish("ext", {"payload", {{"trace-id", "t-1"}}}).ok());

  Held held;
  std::string trace;
  auto consumer = broker.connect("consumer");
  REQUIRE(consumer
              ->subscribe("ext", SubscribeOptions{.max_in_flight = 1, .lease = 300ms},
                          [&](const Delivery& d) {
                            trace = std::string(d.header("trace-id"));
                            return held.keep(d);
                          })
              .ok());
  REQUIRE(eventually([&] { return held.size() == 1; }));
  CHECK(trace == "t-1");
  const LeaseHandle lease = held.items[0].first;
  CHECK_FALSE(consumer->extend(lease, 10s));
  std::this_thread::sleep_for(700ms);  // more than twice the original lease
  CHECK(held.size() == 1);             // not redelivered
  CHECK(queue_stats(*producer, "ext").expired_total == 0);

  CHECK_FALSE(consumer->nack(lease));
  REQUIRE(eventually([&] { return held.size() == 2; }));
  CHECK(held.items[1].second == 2);
  CHECK_FALSE(consumer->ack(held.items[1].first));
  const auto stats = queue_stats(*producer, "ext");
  CHECK(stats.nacked_total == 1);
  CHECK(stats.acked_total == 1);
}

TEST_CASE("publish_batch returns ids in order and a handler's nack is redelivered") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < 100; ++i) batch.push_back({"m" + std::to_string(i), {}});
  auto ids = producer->publish_batch("batch", batch);
  REQUIRE(ids.ok());
  REQUIRE(ids->size() == 100);
  for (std::size_t i = 1; i < ids->size(); ++i) CHECK((*ids)[i] > (*ids)[i - 1]);

  std::mutex mutex;
  std::vector<std::pair<std::uint64_t, std::uint32_t>> seen;  // id, attempt
  auto consumer = broker.connect("consumer");
  REQUIRE(consumer
              ->subscribe("batch", SubscribeOptions{.max_in_flight = 16},
                          [&](const Delivery& d) {
                            std::lock_guard lk(mutex);
                            seen.emplace_back(d.message_id, d.attempt);
                            return d.attempt == 1 ? Disposition::nack : Disposition::ack;
                          })
              .ok());
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return seen.size() == 200;
  }));
  std::lock_guard lk(mutex);
  std::set<std::uint64_t> second_attempts;
  for (auto [id, attempt] : seen)
    if (attempt == 2) second_attempts.insert(id);
  CHECK(second_attempts == std::set<std::uint64_t>(ids->begin(), ids->end()));
}

TEST_CASE("bad requests inside good frames get typed errors and the connection lives") {
  TestBroker broker;
  auto c = broker.connect();
  CHECK(c->publish("bad name!", {"x", {}}).error().code == errc::invalid_queue_name);
  CHECK(c->publish("q", {std::string((1u << 20) + 1, 'x'), {}}).error().code ==
        errc::payload_too_large);
  CHECK(c->subscribe("q", SubscribeOptions{.max_in_flight = 0},
                     [](const Delivery&) { return Disposition::ack; })
            .error()
            .code == errc::invalid_argument);
  CHECK(c->unsubscribe(12345).code == errc::unknown_subscription);
  CHECK(c->ack(LeaseHandle{999, 999, 1}).code == errc::stale_lease);
  CHECK_FALSE(c->ping());
  CHECK(c->publish("q", {"fine", {}}).ok());
  CHECK(c->connected());
}

TEST_CASE("SIGTERM stops the broker cleanly") {
  TestBroker broker;
  auto c = broker.connect();
  REQUIRE(c->publish("q", {"x", {}}).ok());
  CHECK(broker.stop() == 0);
  const std::string log = broker.log();
  CHECK(log.find("\"event\":\"stopping\"") != std::string::npos);
  CHECK(log.find("\"event\":\"stopped\"") != std::string::npos);
  CHECK(eventually([&] { return !c->connected(); }));
  CHECK(c->last_error().code == errc::shutting_down);
}

TEST_CASE("a bad setting stops sluiced at start with one line naming it") {
  using sluice::test::run_command;
  SUBCASE("on the command line") {
    auto r =
        run_command(std::string(SLUICED_PATH) + " --set server.max_connections=0 2>&1 >/dev/null");
    CHECK(r.status == 2);
    CHECK(r.out.find("server.max_connections") != std::string::npos);
    CHECK(r.out.find("allowed") != std::string::npos);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  }
  SUBCASE("in a file, with its line") {
    auto dir = sluice::test::make_temp_dir("sluice-config");
    const auto path = (dir / "sluiced.toml").string();
    std::ofstream(path) << "[server]\nlisten = \"127.0.0.1:0\"\n\n[limits]\nmax_frame_bytes = "
                           "\"1KiB\"\n";
    auto r = run_command(std::string(SLUICED_PATH) + " --config " + path + " 2>&1 >/dev/null");
    CHECK(r.status == 2);
    CHECK(r.out.find(path + ":5: limits.max_frame_bytes") != std::string::npos);
    std::filesystem::remove_all(dir);
  }
  SUBCASE("the example config is valid") {
    auto r = run_command(std::string(SLUICED_PATH) + " --config " SLUICE_SOURCE_DIR
                                                     "/config/sluiced.example.toml --check 2>&1");
    INFO(r.out);
    CHECK(r.status == 0);
  }
}

TEST_CASE("--config twice: both files apply, the later one wins, and SIGHUP reads both again") {
  sluice::test::ScopedTempDir dir("sluice-two-configs");
  const auto first = dir.path / "sluiced.toml", second = dir.path / "more.toml";
  std::ofstream(first) << "[queues.x]\nmax_messages = 5\nmax_attempts = 3\n";
  std::ofstream(second) << "[queues.x]\nmax_messages = 7\n";
  TestBroker broker({"--config", first.string(), "--config", second.string()});
  const auto settings = [&] {
    const auto r = sluice::test::http_request(broker.http_port(), "GET", "/v1/queues/x");
    REQUIRE(r.status == 200);
    return nlohmann::json::parse(r.body)["settings"];
  };
  CHECK(settings()["max_messages"] == 7);  // the second file's
  CHECK(settings()["max_attempts"] == 3);  // the first file's, untouched by the second
  std::ofstream(second) << "[queues.x]\nmax_messages = 9\n";
  ::kill(broker.pid(), SIGHUP);
  CHECK(eventually([&] { return settings()["max_messages"] == 9; }));
  CHECK(settings()["max_attempts"] == 3);
}

TEST_CASE("a consumer process killed with SIGKILL mid-flight loses nothing") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < 50; ++i) batch.push_back({"job-" + std::to_string(i), {}});
  REQUIRE(producer->publish_batch("crashy", batch).ok());

  sluice::test::HoldingConsumer victim(broker, "crashy", 20);
  CHECK(queue_stats(*producer, "crashy").in_flight == 20);

  std::mutex mutex;
  std::set<std::string> payloads;
  int redelivered = 0;
  auto survivor = broker.connect("survivor");
  REQUIRE(survivor
              ->subscribe("crashy", SubscribeOptions{.max_in_flight = 8},
                          [&](const Delivery& d) {
                            std::lock_guard lk(mutex);
                            payloads.emplace(d.payload);
                            if (d.attempt == 2) ++redelivered;
                            return Disposition::ack;
                          })
              .ok());
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return payloads.size() == 30;  // all but the victim's
  }));
  victim.kill9();  // the kernel closes its socket; the broker requeues what it held
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return payloads.size() == 50;
  }));
  {
    std::lock_guard lk(mutex);
    CHECK(redelivered == 20);
  }
  CHECK(eventually([&] { return queue_stats(*producer, "crashy").acked_total == 50; }));
}

TEST_CASE("only the connection holding a lease can settle it") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  REQUIRE(producer->publish("owned", {"mine", {}}).ok());
  Held held;
  auto holder = broker.connect("holder");
  REQUIRE(holder
              ->subscribe("owned", SubscribeOptions{.max_in_flight = 1},
                          [&](const Delivery& d) { return held.keep(d); })
              .ok());
  REQUIRE(eventually([&] { return held.size() == 1; }));
  const LeaseHandle lease = held.items[0].first;
  // The same message id and token, sent by someone else: refused, nothing changes.
  CHECK(producer->ack(lease).code == errc::stale_lease);
  CHECK(producer->extend(lease, 60s).code == errc::stale_lease);
  CHECK(queue_stats(*producer, "owned").in_flight == 1);
  CHECK_FALSE(holder->ack(lease));
  CHECK(queue_stats(*producer, "owned").acked_total == 1);
}

TEST_CASE("the client keeps its frames within the broker's announced limits") {
  TestBroker broker(
      {"--set", "limits.max_frame_bytes=128KiB", "--set", "limits.max_payload_bytes=60KiB"});
  auto c = broker.connect();
  const std::string big(50 * 1024, 'b');

  // Batches split themselves, headers counted: every message is confirmed.
  std::atomic<int> confirmed{0};
  for (int i = 0; i < 10; ++i)
    c->publish_async("limits", {big, {{"h", std::string(10000, 'v')}}},
                     [&](const sluice::client::Error& e, std::uint64_t) {
                       if (!e) confirmed.fetch_add(1);
                     });
  REQUIRE(c->wait_confirms(10s));
  CHECK(confirmed == 10);

  std::vector<sluice::client::Message> batch(3, {big, {}});
  CHECK(c->publish_batch("limits", batch).error().code == errc::invalid_argument);
  std::vector<std::pair<std::string, std::string>> headers;
  for (int i = 0; i < 5; ++i)
    headers.emplace_back("h" + std::to_string(i), std::string(16000, 'v'));
  CHECK(c->publish("limits", {big, headers}).error().code == errc::payload_too_large);
  CHECK(c->publish("limits", {std::string(61 * 1024, 'x'), {}}).error().code ==
        errc::payload_too_large);
  CHECK(c->connected());
  CHECK(queue_stats(*c, "limits").published_total == 10);
}

TEST_CASE("queues declared in the config keep their own settings, others get the defaults") {
  TestBroker broker({"--set", "queues.orders.lease_timeout=300ms", "--set",
                     "queues.orders.max_consumer_in_flight=5"});
  auto c = broker.connect();
  auto stats = c->stats();
  REQUIRE(stats.ok());
  REQUIRE(stats->size() == 1);  // declared at start, before any use
  CHECK(stats->front().name == "orders");

  auto refuse = [](const Delivery&) { return Disposition::manual; };
  CHECK(c->subscribe("orders", {.max_in_flight = 6}, refuse).error().code ==
        errc::invalid_argument);
  CHECK(c->subscribe("elsewhere", {.max_in_flight = 6}, refuse).ok());  // default max 10000

  Held held;
  REQUIRE(c->subscribe("orders", {.max_in_flight = 5}, [&](const Delivery& d) {
             return held.keep(d);
           }).ok());
  REQUIRE(c->publish("orders", {"o", {}}).ok());
  // Never acked: the queue's 300 ms lease brings it back with attempt 2.
  REQUIRE(eventually([&] { return held.size() == 2; }, 5s));
  CHECK(held.items[1].second == 2);
}

TEST_CASE("a broker at limits.max_queues refuses new queues with too_many_queues") {
  TestBroker broker({"--set", "limits.max_queues=2"});
  auto c = broker.connect();
  REQUIRE(c->publish("one", {"x", {}}).ok());
  REQUIRE(c->publish("two", {"x", {}}).ok());
  CHECK(c->publish("three", {"x", {}}).error().code == errc::too_many_queues);
  CHECK(c->subscribe("three", {}, [](const Delivery&) { return Disposition::ack; }).error().code ==
        errc::too_many_queues);
  CHECK(c->configure("three", {{"max_in_flight", "5"}}).code == errc::invalid_argument);
  CHECK(c->publish("one", {"y", {}}).ok());  // existing queues are fine
  CHECK(c->stats()->size() == 2);
}

TEST_CASE("queues.auto_create = off: an undeclared queue is queue_not_found and never appears") {
  sluice::test::ScopedTempDir dir("sluice-autocreate");
  const auto config = dir.path / "sluiced.toml";
  {
    std::ofstream f(config);
    f << "[queues]\nauto_create = \"off\"\n\n[queues.orders]\nmax_attempts = 3\n";
  }
  TestBroker broker({"--config", config.string()});
  auto c = broker.connect();
  CHECK(c->publish("orders", {"x", {}}).ok());  // declared in the file
  // A misspelled queue: refused on every path, and nothing is created.
  const auto published = c->publish("odrers", {"x", {}});
  REQUIRE_FALSE(published.ok());
  CHECK(published.error().code == errc::queue_not_found);
  CHECK(published.error().detail.find("odrers") != std::string::npos);
  CHECK(c->subscribe("odrers", {}, [](const Delivery&) { return Disposition::ack; }).error().code ==
        errc::queue_not_found);
  auto receive = sluice::test::http_request(broker.http_port(), "POST", "/v1/queues/odrers/receive",
                                            R"({"wait_ms": 0})");
  CHECK(receive.status == 404);
  CHECK(receive.body.find("\"queue_not_found\"") != std::string::npos);
  CHECK(sluice::test::http_request(broker.http_port(), "POST", "/v1/queues/odrers/messages", "m")
            .status == 404);
  auto stats = c->stats();
  REQUIRE(stats);
  REQUIRE(stats->size() == 1);
  CHECK(stats->front().name == "orders");
  const auto metrics = sluice::test::http_request(broker.http_port(), "GET", "/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find("queue=\"orders\"") != std::string::npos);
  CHECK(metrics.body.find("odrers") == std::string::npos);
  // The connection is fine after the refusals.
  CHECK(c->publish("orders", {"y", {}}).ok());
  // sluicectl reports it as "not found" (exit 3).
  const auto r = sluice::test::run_command(std::string(SLUICECTL_PATH) + " --broker " +
                                           broker.address() + " publish odrers --body x 2>&1");
  CHECK(r.status == 3);
  CHECK(r.out.find("queue_not_found") != std::string::npos);
}

TEST_CASE("queues.auto_create takes on or off, and says so otherwise") {
  const auto r =
      sluice::test::run_command(std::string(SLUICED_PATH) + " --set queues.auto_create=maybe 2>&1");
  CHECK(r.status != 0);
  CHECK(r.out.find("queues.auto_create") != std::string::npos);
  CHECK(r.out.find("on") != std::string::npos);
}

TEST_CASE("connections from one address are capped by server.max_connections_per_source") {
  TestBroker broker({"--set", "server.max_connections_per_source=3"});
  std::vector<std::unique_ptr<sluice::client::Connection>> open;
  for (int i = 0; i < 3; ++i) open.push_back(broker.connect());
  auto refused = sluice::client::Connection::connect(broker.options());
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code == errc::too_many_connections);
  for (auto& c : open) CHECK_FALSE(c->ping());  // the others are unaffected
  open.pop_back();                              // one leaves: room for one more
  CHECK(eventually([&] { return sluice::client::Connection::connect(broker.options()).ok(); }));
}
