// Flow control against the real sluiced: block holds memory while a rate-limited
// consumer drains, reject plus client retries delivers everything once, and the
// queue-wide concurrency cap holds.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "test_broker.hpp"

namespace {

/// Publishes `count` numbered messages of `size` bytes; returns how many were confirmed.
int publish_numbered(sluice::client::Connection& producer, const std::string& queue, int count,
                     std::size_t size, std::atomic<int>& failures) {
  std::atomic<int> confirmed{0};
  for (int i = 0; i < count; ++i) {
    std::string payload = std::to_string(i);
    payload.resize(std::max(size, payload.size()), ' ');
    producer.publish_async(queue, payload, [&](const sluice::client::Error& e, std::uint64_t) {
      (e ? failures : confirmed).fetch_add(1);
    });
  }
  REQUIRE(producer.wait_confirms(120s));
  return confirmed.load();
}

}  // namespace

TEST_CASE("block: 10x the capacity goes through a 1,000/s consumer, memory stays bounded") {
  // Capacity 256 messages of 32 KiB (8 MiB); 2,560 messages (80 MiB) are published.
  TestBroker broker({"--set", "queues.burst.max_bytes=8MiB", "--set", "queues.burst.overflow=block",
                     "--set", "limits.memory=16MiB"});
  constexpr int kMessages = 2560;
  constexpr std::size_t kSize = 32 * 1024;

  std::mutex mutex;
  std::vector<std::chrono::steady_clock::time_point> arrivals;
  std::multiset<int> seen;
  auto consumer = broker.connect("consumer");
  REQUIRE(consumer
              ->subscribe("burst", SubscribeOptions{.max_in_flight = 64, .rate = 1000, .burst = 1},
                          [&](const Delivery& d) {
                            std::lock_guard lk(mutex);
                            arrivals.push_back(std::chrono::steady_clock::now());
                            seen.insert(std::stoi(std::string(d.payload)));
                            return Disposition::ack;
                          })
              .ok());

  auto options = broker.options();
  options.max_unconfirmed = 64;  // keep the producer's own buffer small too
  auto producer = sluice::client::Connection::connect(options);
  REQUIRE(producer.ok());
  std::atomic<int> failures{0};
  const int confirmed = publish_numbered(**producer, "burst", kMessages, kSize, failures);
  CHECK(confirmed == kMessages);
  CHECK(failures == 0);
  REQUIRE(eventually(
      [&] {
        std::lock_guard lk(mutex);
        return seen.size() == static_cast<std::size_t>(kMessages);
      },
      30s));

  std::lock_guard lk(mutex);
  CHECK(std::set<int>(seen.begin(), seen.end()).size() == kMessages);  // none twice
  CHECK(*seen.begin() == 0);
  CHECK(*seen.rbegin() == kMessages - 1);
  // The promise is an upper bound: never more than rate·t + burst. Measured
  // here, on the consumer's side of a socket, so 100 ms of slack for a late
  // first arrival; below, the rate only has to be in the right range, since a
  // busy machine may well deliver slower.
  const double seconds = std::chrono::duration<double>(arrivals.back() - arrivals.front()).count();
  const double rate = (kMessages - 1) / seconds;
  CAPTURE(rate);
  CHECK(kMessages - 1 <= 1000 * (seconds + 0.1) + 1);
  CHECK(rate > 500);

  const auto stats = (*producer)->stats("burst");
  REQUIRE(stats.ok());
  CHECK(stats->front().blocked_total > 0);  // the producer really was held back
  // Bounded: the memory limit plus the fixed overhead stated in the README (an idle broker,
  // and per connection one max frame in and the outbound bound out).
  const std::uint64_t peak = sluice::test::proc_status_kib(broker.pid(), "VmHWM:");
  CAPTURE(peak);
  CHECK(peak < (16 + 40) * 1024);
}

TEST_CASE("reject: the producer sees queue_full, retries, and every message arrives once") {
  TestBroker broker(
      {"--set", "queues.small.max_messages=100", "--set", "queues.small.overflow=reject"});
  SUBCASE("without retries the error says when to come back") {
    auto c = broker.connect();
    for (int i = 0; i < 100; ++i) REQUIRE(c->publish("small", {"x", {}}).ok());
    auto refused = c->publish("small", {"x", {}});
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == errc::queue_full);
    CHECK(refused.error().retry_after.count() > 0);
    CHECK(c->pressure() == 100);
    CHECK(c->connected());
  }
  SUBCASE("with retries, everything is confirmed and delivered exactly once") {
    std::mutex mutex;
    std::multiset<int> seen;
    std::atomic<int> redelivered{0};
    auto consumer = broker.connect("consumer");
    REQUIRE(consumer
                ->subscribe("small", SubscribeOptions{.max_in_flight = 16, .rate = 2000},
                            [&](const Delivery& d) {
                              std::lock_guard lk(mutex);
                              seen.insert(std::stoi(std::string(d.payload)));
                              if (d.attempt != 1) redelivered.fetch_add(1);
                              return Disposition::ack;
                            })
                .ok());
    auto options = broker.options();
    options.retry_queue_full_for = 60s;
    options.max_batch_bytes = 512;  // about 30 messages a frame: many frames meet the wall
    auto producer = sluice::client::Connection::connect(options);
    REQUIRE(producer.ok());
    std::atomic<int> failures{0};
    CHECK(publish_numbered(**producer, "small", 2000, 10, failures) == 2000);
    CHECK(failures == 0);
    REQUIRE(eventually(
        [&] {
          std::lock_guard lk(mutex);
          return seen.size() == 2000;
        },
        30s));
    std::lock_guard lk(mutex);
    CHECK(std::set<int>(seen.begin(), seen.end()).size() == 2000);
    CHECK(redelivered == 0);
    const auto stats = (*producer)->stats("small");
    REQUIRE(stats.ok());
    CHECK(stats->front().refused_total > 0);  // the wall was hit, and retried past
    CHECK(stats->front().acked_total == 2000);
  }
}

TEST_CASE("the queue-wide concurrency cap holds with 4 consumers asking for more") {
  TestBroker broker({"--set", "queues.capped.max_in_flight=5"});
  auto producer = broker.connect("producer");
  std::vector<sluice::client::Message> batch(200, {"job", {}});
  REQUIRE(producer->publish_batch("capped", batch).ok());

  struct Holder {
    std::unique_ptr<sluice::client::Connection> connection;
    std::mutex mutex;
    std::vector<LeaseHandle> held;
  };
  std::vector<std::unique_ptr<Holder>> holders;
  for (int i = 0; i < 4; ++i) {
    auto h = std::make_unique<Holder>();
    h->connection = broker.connect("consumer-" + std::to_string(i));
    Holder* self = h.get();
    REQUIRE(h->connection
                ->subscribe("capped", SubscribeOptions{.max_in_flight = 10},
                            [self](const Delivery& d) {
                              std::lock_guard lk(self->mutex);
                              self->held.push_back(sluice::client::handle(d));
                              return Disposition::manual;
                            })
                .ok());
    holders.push_back(std::move(h));
  }
  int acked = 0;
  while (acked < 200) {
    std::size_t holding = 0;
    for (auto& h : holders) {
      std::lock_guard lk(h->mutex);
      holding += h->held.size();
    }
    REQUIRE(holding <= 5);
    const auto stats = producer->stats("capped");
    REQUIRE(stats.ok());
    REQUIRE(stats->front().in_flight <= 5);
    // Settle one, from whoever holds the oldest.
    for (auto& h : holders) {
      std::unique_lock lk(h->mutex);
      if (h->held.empty()) continue;
      const LeaseHandle lease = h->held.front();
      h->held.erase(h->held.begin());
      lk.unlock();
      REQUIRE_FALSE(h->connection->ack(lease));
      ++acked;
      break;
    }
    if (holding == 0) std::this_thread::sleep_for(1ms);
  }
  CHECK(producer->stats("capped")->front().acked_total == 200);
}

namespace {
/// Counts deliveries of `queue` on its own connection; acks each.
struct CountingConsumer {
  std::unique_ptr<sluice::client::Connection> connection;
  std::mutex mutex;
  std::multiset<std::string> seen;

  CountingConsumer(const TestBroker& broker, const std::string& queue) {
    connection = broker.connect("counter");
    REQUIRE(connection
                ->subscribe(queue, SubscribeOptions{.max_in_flight = 100},
                            [this](const Delivery& d) {
                              std::lock_guard lk(mutex);
                              seen.emplace(d.payload);
                              return Disposition::ack;
                            })
                .ok());
  }
  std::size_t count() {
    std::lock_guard lk(mutex);
    return seen.size();
  }
  bool each_once(std::size_t n) {
    std::lock_guard lk(mutex);
    return seen.size() == n && std::set<std::string>(seen.begin(), seen.end()).size() == n;
  }
};

void publish_n(sluice::client::Connection& c, const std::string& queue, int n) {
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < n; ++i) batch.push_back({std::to_string(i), {}});
  REQUIRE(c.publish_batch(queue, batch).ok());
}
}  // namespace

TEST_CASE("live: sluicectl set changes a queue's rate at once, losing and repeating nothing") {
  TestBroker broker(
      {"--set", "queues.live.dispatch_rate=5", "--set", "queues.live.dispatch_burst=1"});
  auto producer = broker.connect("producer");
  publish_n(*producer, "live", 300);
  CountingConsumer consumer(broker, "live");
  std::this_thread::sleep_for(1s);
  const std::size_t slow = consumer.count();
  CHECK(slow >= 4);
  CHECK(slow <= 8);  // 5/s

  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address();
  auto bad = sluice::test::run_command(ctl + " set live dispatch_rate=fast 2>&1");
  CHECK(bad.status == 1);
  CHECK(bad.out.find("queues.live.dispatch_rate") != std::string::npos);
  CHECK(bad.out.find("allowed") != std::string::npos);

  auto ok = sluice::test::run_command(ctl + " set live dispatch_rate=0 max_in_flight=50");
  CHECK(ok.status == 0);
  CHECK(eventually([&] { return consumer.count() == 300; }, 5s));
  CHECK(consumer.each_once(300));
  CHECK(broker.log().find("\"event\":\"queue_configured\"") != std::string::npos);
}

TEST_CASE("live: SIGHUP reloads the config file, a bad file changes nothing") {
  auto dir = sluice::test::make_temp_dir("sluice-reload");
  const auto path = (dir / "sluiced.toml").string();
  std::ofstream(path) << "[queues.hup]\ndispatch_rate = 5\ndispatch_burst = 1\n";
  TestBroker broker({"--config", path});
  auto producer = broker.connect("producer");
  publish_n(*producer, "hup", 300);
  CountingConsumer consumer(broker, "hup");
  std::this_thread::sleep_for(1s);
  CHECK(consumer.count() <= 8);

  std::ofstream(path, std::ios::trunc) << "[queues.hup]\ndispatch_rate = \"very fast\"\n";
  ::kill(broker.pid(), SIGHUP);
  CHECK(eventually([&] { return broker.log().find("reload_failed") != std::string::npos; }));
  std::this_thread::sleep_for(500ms);
  CHECK(consumer.count() <= 12);  // still 5/s

  std::ofstream(path, std::ios::trunc)
      << "[limits]\nframe_timeout = \"5s\"\n[queues.hup]\ndispatch_rate = 0\n";
  ::kill(broker.pid(), SIGHUP);
  CHECK(eventually([&] { return consumer.count() == 300; }, 5s));
  CHECK(consumer.each_once(300));
  CHECK(broker.log().find("\"event\":\"reloaded\"") != std::string::npos);
  // A setting only a restart changes is named, and the rest still applied.
  CHECK(broker.log().find("\"setting\":\"limits.frame_timeout\"") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("block: a blocked producer outlives the frame timeout, and one that leaves is let go") {
  TestBroker broker({"--set", "queues.tight.max_messages=10", "--set", "limits.frame_timeout=300ms",
                     "--log-level", "debug"});
  SUBCASE("blocked longer than the frame timeout, then everything is confirmed") {
    auto options = broker.options();
    options.max_batch_bytes = 64;  // many small frames pipelined behind the blocked one
    auto producer = sluice::client::Connection::connect(options);
    REQUIRE(producer.ok());
    std::atomic<int> failures{0};
    std::atomic<int> confirmed{0};
    for (int i = 0; i < 100; ++i)
      (*producer)->publish_async("tight", "m" + std::to_string(i),
                                 [&](const sluice::client::Error& e, std::uint64_t) {
                                   (e ? failures : confirmed).fetch_add(1);
                                 });
    std::this_thread::sleep_for(1s);  // blocked, with frames waiting behind it
    CHECK(confirmed < 100);
    CountingConsumer consumer(broker, "tight");
    REQUIRE((*producer)->wait_confirms(10s));
    CHECK(confirmed == 100);
    CHECK(failures == 0);
    CHECK((*producer)->connected());
    CHECK(eventually([&] { return consumer.each_once(100); }));
  }
  SUBCASE("a blocked producer that disconnects is closed within seconds") {
    {
      auto options = broker.options();
      options.max_batch_bytes = 64;  // several frames: the later ones block
      options.request_timeout = 300ms;
      auto producer = sluice::client::Connection::connect(options);
      REQUIRE(producer.ok());
      for (int i = 0; i < 40; ++i) (*producer)->publish_async("tight", "m", nullptr);
      // Blocked: not even a ping is read. Sent once the broker has stopped
      // reading, it stays unread in the socket: leaving must be seen anyway.
      std::this_thread::sleep_for(200ms);
      CHECK((*producer)->ping().code == errc::timed_out);
    }  // gone
    CHECK(eventually([&] { return broker.log().find("blocked_peer_gone") != std::string::npos; },
                     5s));
  }
}
