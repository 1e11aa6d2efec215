// publish_async's two ways to the socket, against the real sluiced: written on
// the calling thread while the connection is idle, or batched by the I/O
// thread while it is busy. Whichever way each message took, every one is
// confirmed once and arrives once, in each publisher's order, intact.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_broker.hpp"

namespace {

/// "<thread>:<seq>:" then filler up to `size` bytes, so a torn frame shows.
std::string numbered(int thread, int seq, std::size_t size) {
  std::string s = std::to_string(thread) + ":" + std::to_string(seq) + ":";
  s.reserve(size);
  while (s.size() < size) s.push_back(static_cast<char>('a' + (seq + s.size()) % 26));
  return s;
}

/// Takes every delivery of a queue and checks, per publishing thread, that
/// its numbers arrive in order, once, with their bytes intact.
struct Arrivals {
  std::mutex mutex;
  std::vector<int> next;  // per thread: the number expected next
  int out_of_order = 0;
  int torn = 0;
  int total = 0;

  explicit Arrivals(int threads) : next(static_cast<std::size_t>(threads), 0) {}

  Disposition take(const Delivery& d) {
    const std::string payload(d.payload);
    const auto first = payload.find(':');
    const auto second = payload.find(':', first + 1);
    std::lock_guard lk(mutex);
    ++total;
    if (first == std::string::npos || second == std::string::npos) {
      ++torn;
      return Disposition::ack;
    }
    const int thread = std::stoi(payload.substr(0, first));
    const int seq = std::stoi(payload.substr(first + 1, second - first - 1));
    if (thread < 0 || static_cast<std::size_t>(thread) >= next.size() ||
        payload != numbered(thread, seq, payload.size())) {
      ++torn;
      return Disposition::ack;
    }
    if (seq != next[static_cast<std::size_t>(thread)]) ++out_of_order;
    next[static_cast<std::size_t>(thread)] = seq + 1;
    return Disposition::ack;
  }
  int count() {
    std::lock_guard lk(mutex);
    return total;
  }
  /// A consumer of `queue` whose deliveries come here; keep it while they arrive.
  std::unique_ptr<sluice::client::Connection> consume(const TestBroker& broker,
                                                      const std::string& queue,
                                                      std::uint32_t credit) {
    auto consumer = broker.connect("consumer");
    REQUIRE(consumer
                ->subscribe(queue, SubscribeOptions{.max_in_flight = credit},
                            [this](const Delivery& d) { return take(d); })
                .ok());
    return consumer;
  }
};

}  // namespace

TEST_CASE("publish_async: an idle connection's messages leave from the calling thread") {
  TestBroker broker;
  auto producer = broker.connect("producer");
  for (int i = 0; i < 200; ++i) {
    producer->publish_async("idle", numbered(0, i, 100), nullptr);
    REQUIRE(producer->wait_confirms(10s));  // idle again before the next one
  }
  // Nothing else is written on this connection, so each one found it idle.
  CHECK(producer->direct_publishes() == 200);

  Arrivals arrivals(1);
  auto consumer = arrivals.consume(broker, "idle", 64);
  REQUIRE(eventually([&] { return arrivals.count() == 200; }));
  CHECK(arrivals.out_of_order == 0);
  CHECK(arrivals.torn == 0);
}

TEST_CASE(
    "publish_async from 4 threads, paced and in bursts: each message confirmed and delivered once, "
    "in its thread's order") {
  TestBroker broker;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  Arrivals arrivals(kThreads);
  auto consumer = arrivals.consume(broker, "mixed", 256);

  auto producer = broker.connect("producer");
  std::atomic<int> confirmed{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < kPerThread; ++i) {
        // Bursts of 1..40 back to back, then a pause: some messages find the
        // connection idle, others a write or other threads' messages under way.
        producer->publish_async("mixed", numbered(t, i, 20 + rng() % 3000),
                                [&](const sluice::client::Error& e, std::uint64_t) {
                                  (e ? failed : confirmed).fetch_add(1);
                                });
        if (rng() % 20 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
      }
    });
  for (auto& th : threads) th.join();
  REQUIRE(producer->wait_confirms(60s));
  CHECK(confirmed == kThreads * kPerThread);
  CHECK(failed == 0);
  CHECK(producer->direct_publishes() > 0);
  REQUIRE(eventually([&] { return arrivals.count() >= kThreads * kPerThread; }, 30s));
  std::this_thread::sleep_for(100ms);  // a duplicate would arrive now
  std::lock_guard lk(arrivals.mutex);
  CHECK(arrivals.total == kThreads * kPerThread);
  CHECK(arrivals.out_of_order == 0);
  CHECK(arrivals.torn == 0);
}

TEST_CASE(
    "publish_async into a broker that stopped reading (overflow = block): the rest of a frame a "
    "caller began goes out first, and nothing is lost or reordered") {
  // Four small messages fill the queue; the broker then stops reading the
  // producer. The next messages are 8 MiB each: while fewer than 8 await
  // confirms they find the connection idle and are written by the caller,
  // until the socket's buffers are full (loopback holds some 10 MiB, these 8
  // are 64 MiB); what did not fit is written by the I/O thread later, before
  // the batched rest.
  TestBroker broker({"--set", "queues.wall.max_messages=4", "--set", "queues.wall.overflow=block",
                     "--set", "limits.max_frame_bytes=16MiB", "--set",
                     "limits.max_payload_bytes=8MiB", "--set",
                     "limits.connection_outbound_bytes=32MiB"});
  auto producer = broker.connect("producer");
  for (int i = 0; i < 4; ++i) {
    producer->publish_async("wall", numbered(0, i, 100), nullptr);
    REQUIRE(producer->wait_confirms(10s));
  }
  constexpr int kLarge = 12;
  std::atomic<int> failed{0};
  for (int i = 4; i < 4 + kLarge; ++i)
    producer->publish_async("wall", numbered(0, i, (8u << 20) - 64),
                            [&](const sluice::client::Error& e, std::uint64_t) {
                              if (e) failed.fetch_add(1);
                            });
  CHECK(producer->direct_publishes() >= 5);     // the four, and at least the first large one
  CHECK_FALSE(producer->wait_confirms(300ms));  // held back by the full queue

  Arrivals arrivals(1);
  auto consumer = arrivals.consume(broker, "wall", 4);
  REQUIRE(producer->wait_confirms(60s));
  CHECK(failed == 0);
  REQUIRE(eventually([&] { return arrivals.count() == 4 + kLarge; }, 30s));
  CHECK(arrivals.out_of_order == 0);
  CHECK(arrivals.torn == 0);
}
