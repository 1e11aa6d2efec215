// Flow control in the engine, on a manual clock: dispatch and consumer rates,
// the queue-wide concurrency cap, capacity with watermarks, the memory limit,
// the ingress rate, and waking blocked publishers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "engine_fixtures.hpp"

using namespace sluice;
using namespace sluice::test;
using engine::Engine;
using engine::Micros;
using engine::QueueOptions;

namespace {

/// A blocked publisher: counts the engine's "room" calls.
struct Waiter final : engine::PublishWaiter {
  int rooms = 0;
  void room(engine::Queue&) override { ++rooms; }
};

/// Runs the engine's timer until `end`, as the server's deadline timer does.
/// The sink acks everything at once, so only rates limit delivery.
void run_until(Engine& e, Micros& now, Micros end, RecordingSink& sink,
               std::vector<Micros>* delivered_at = nullptr) {
  for (;;) {
    for (auto& g : sink.take()) {
      if (delivered_at) delivered_at->push_back(now);
      REQUIRE(e.ack(sink, g.delivery.message_id, g.delivery.lease_token, now) == errc::ok);
    }
    if (!sink.got.empty()) continue;
    auto next = e.next_deadline();
    if (!next || *next > end) break;
    now = std::max(now, *next);
    e.advance(now);
  }
  now = end;
}

/// Most deliveries in any window of `window` µs.
std::size_t busiest_window(const std::vector<Micros>& times, Micros window) {
  std::size_t first = 0, worst = 0;
  for (std::size_t last = 0; last < times.size(); ++last) {
    while (times[last] - times[first] > window) ++first;
    worst = std::max(worst, last - first + 1);
  }
  return worst;
}

}  // namespace

TEST_CASE("flow: the queue's dispatch rate holds over time and in every window") {
  Engine e;
  QueueOptions o;
  o.dispatch_rate = {50'000, 5};  // 50/s, burst 5
  auto& q = e.declare("q", o);
  for (int i = 0; i < 5000; ++i) e.publish(q, encode("m"), 0, 0);
  RecordingSink sink;
  subscribe(e, q, sink, 1000);
  Micros now = 0;
  std::vector<Micros> at;
  run_until(e, now, 60 * kSecond, sink, &at);
  const double expected = 50.0 * 60 + 5;
  CAPTURE(at.size());
  CHECK(std::abs(static_cast<double>(at.size()) - expected) <= 0.01 * expected);
  for (Micros window : {Micros{1000}, kSecond / 10, kSecond, 10 * kSecond}) {
    CAPTURE(window);
    CHECK(static_cast<double>(busiest_window(at, window)) <=
          50.0 * static_cast<double>(window) / kSecond + 5);
  }
}

TEST_CASE("flow: a consumer's own rate limits it while others of the queue take the rest") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink slow, fast;
  auto slow_r = e.subscribe(q, slow, 1, 100, 0, 0, {10'000, 1});  // 10/s
  REQUIRE(slow_r.code == errc::ok);
  subscribe(e, q, fast, 1000, 0, 0, 2);
  Micros now = 0;
  std::size_t slow_total = 0, fast_total = 0;
  for (int step = 0; step < 1000; ++step) {  // 10 s in steps of 10 ms, 200 messages per step
    for (int i = 0; i < 200; ++i) e.publish(q, encode("m"), now, 0);
    now += 10'000;
    e.advance(now);
    for (auto& g : slow.take()) {
      ++slow_total;
      CHECK(e.ack(slow, g.delivery.message_id, g.delivery.lease_token, now) == errc::ok);
    }
    for (auto& g : fast.take()) {
      ++fast_total;
      CHECK(e.ack(fast, g.delivery.message_id, g.delivery.lease_token, now) == errc::ok);
    }
  }
  CAPTURE(slow_total);
  CHECK(slow_total <= 10 * 10 + 1);
  CHECK(slow_total >= 10 * 10 - 1);
  CHECK(fast_total + slow_total + q.counters().ready + q.counters().in_flight == 200'000);
  CHECK(q.counters().ready < 200);  // the fast consumer is not held back
}

TEST_CASE("flow: the queue's max_consumer_rate caps what a consumer asks for") {
  Engine e;
  QueueOptions o;
  o.max_consumer_rate = 5'000;  // 5/s
  auto& q = e.declare("q", o);
  for (int i = 0; i < 1000; ++i) e.publish(q, encode("m"), 0, 0);
  RecordingSink sink;
  subscribe(e, q, sink, 1000);  // asks for no limit at all
  Micros now = 0;
  std::vector<Micros> at;
  run_until(e, now, 10 * kSecond, sink, &at);
  CHECK(at.size() >= 50);
  CHECK(at.size() <= 51);
}

TEST_CASE("flow: the queue-wide concurrency cap holds with consumers asking for more") {
  Engine e;
  QueueOptions o;
  o.max_in_flight = 3;
  auto& q = e.declare("q", o);
  RecordingSink sinks[4];
  for (std::uint32_t i = 0; i < 4; ++i) subscribe(e, q, sinks[i], 10, 0, 0, i + 1);
  for (int i = 0; i < 100; ++i) e.publish(q, encode("m"), 0, 0);
  CHECK(q.counters().in_flight == 3);
  std::size_t acked = 0;
  while (acked < 100) {
    for (auto& s : sinks) {
      for (auto& g : s.take()) {
        REQUIRE(q.counters().in_flight <= 3);
        REQUIRE(e.ack(s, g.delivery.message_id, g.delivery.lease_token, 1) == errc::ok);
        ++acked;
      }
    }
  }
  CHECK(q.counters().acked_total == 100);
  CHECK(q.counters().in_flight == 0);
}

TEST_CASE("flow: capacity with high and low watermarks, and the pressure hint") {
  Engine e;
  QueueOptions o;
  o.max_messages = 10;
  o.low_watermark_pct = 50;
  auto& q = e.declare("q", o);
  for (int i = 0; i < 10; ++i) {
    REQUIRE(e.admit(q, 1, 0).code == errc::ok);
    e.publish(q, encode("m"), 0, 0);
  }
  CHECK(q.pressure() == 100);
  auto refused = e.admit(q, 1, 0);
  CHECK(refused.code == errc::queue_full);
  CHECK(refused.retry_after > 0);

  Waiter waiter;
  e.wait_for_room(q, waiter, 0);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  auto got = sink.take();
  // Acks down to 5 left: still full (hysteresis), nobody woken.
  for (int i = 0; i < 5; ++i)
    REQUIRE(e.ack(sink, got[i].delivery.message_id, got[i].delivery.lease_token, 1) == errc::ok);
  CHECK(waiter.rooms == 0);
  CHECK(e.admit(q, 1, 1).code == errc::queue_full);
  e.wait_for_room(q, waiter, 1);
  CHECK(q.pressure() == 50);
  // Below the low watermark: the waiter is told once, and publishes go in again.
  REQUIRE(e.ack(sink, got[5].delivery.message_id, got[5].delivery.lease_token, 1) == errc::ok);
  CHECK(waiter.rooms == 1);
  CHECK(e.admit(q, 1, 1).code == errc::ok);
  REQUIRE(e.ack(sink, got[6].delivery.message_id, got[6].delivery.lease_token, 1) == errc::ok);
  CHECK(waiter.rooms == 1);
}

TEST_CASE("flow: a frame is admitted whole below the high watermark, and may pass it") {
  Engine e;
  QueueOptions o;
  o.max_messages = 10;
  auto& q = e.declare("q", o);
  for (int i = 0; i < 9; ++i) e.publish(q, encode("m"), 0, 0);
  REQUIRE(e.admit(q, 50, 0).code == errc::ok);  // larger than the whole capacity
  for (int i = 0; i < 50; ++i) e.publish(q, encode("m"), 0, 0);
  CHECK(e.admit(q, 1, 0).code == errc::queue_full);
  CHECK(q.pressure() == 100);
}

TEST_CASE("flow: the broker memory limit spans queues") {
  Engine e;
  const std::string m = encode(std::string(865, 'x'));  // 1000 bytes with the overhead
  REQUIRE(m.size() + Engine::kMessageOverhead == 1000);
  e.set_memory_limit(10'000);
  auto& a = e.queue("a");
  auto& b = e.queue("b");
  for (int i = 0; i < 10; ++i) {
    auto& q = i % 2 ? a : b;
    REQUIRE(e.admit(q, 1, 0).code == errc::ok);
    e.publish(q, m, 0, 0);
  }
  CHECK(e.memory_used() == 10'000);
  const auto refused = e.admit(a, 1, 0);
  CHECK(refused.code == errc::queue_full);
  CHECK(std::string(refused.detail) == "broker memory limit reached");
  Waiter waiter;
  e.wait_for_room(a, waiter, 0);
  // Draining queue b frees memory that a's producer is waiting for.
  RecordingSink sink;
  subscribe(e, b, sink, 10);
  auto got = sink.take();
  REQUIRE(got.size() == 5);
  REQUIRE(e.ack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, 0) == errc::ok);
  CHECK(waiter.rooms == 0);  // 9,000 of 10,000: not yet below 90 %
  REQUIRE(e.ack(sink, got[1].delivery.message_id, got[1].delivery.lease_token, 0) == errc::ok);
  CHECK(waiter.rooms == 1);
  CHECK(e.admit(a, 1, 0).code == errc::ok);
}

TEST_CASE("flow: the ingress rate admits a batch whole, then makes the next wait") {
  Engine e;
  QueueOptions o;
  o.ingress_rate = {10'000, 2};  // 10/s, burst 2
  auto& q = e.declare("q", o);
  CHECK(e.admit(q, 5, 0).code == errc::ok);  // 2 tokens, 3 in debt
  const auto refused = e.admit(q, 1, 0);
  CHECK(refused.code == errc::queue_full);
  CHECK(refused.retry_after == 400'000);  // 3 owed + 1 = 4 tokens at 10/s
  Waiter waiter;
  e.wait_for_room(q, waiter, 0);
  REQUIRE(e.next_deadline() == 400'000);
  e.advance(399'999);
  CHECK(waiter.rooms == 0);
  e.advance(400'000);
  CHECK(waiter.rooms == 1);
  CHECK(e.admit(q, 1, 400'000).code == errc::ok);
}

TEST_CASE("flow: reconfiguring a live queue changes its rate and frees its waiters") {
  Engine e;
  QueueOptions o;
  o.max_messages = 2;
  o.dispatch_rate = {1'000, 1};  // 1/s
  auto& q = e.declare("q", o);
  for (int i = 0; i < 2; ++i) {
    REQUIRE(e.admit(q, 1, 0).code == errc::ok);
    e.publish(q, encode("m"), 0, 0);
  }
  CHECK(e.admit(q, 1, 0).code == errc::queue_full);
  Waiter waiter;
  e.wait_for_room(q, waiter, 0);

  o.max_messages = 100;
  o.dispatch_rate = {};  // unlimited
  e.reconfigure(q, o, 0);
  CHECK(waiter.rooms == 1);
  CHECK(e.admit(q, 1, 0).code == errc::ok);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  CHECK(sink.take().size() == 2);  // no longer one per second
  CHECK(e.messages() == 2);        // nothing lost or doubled by the change
}

namespace {
std::string keyed(std::string_view tenant, std::string_view payload) {
  std::string out;
  const protocol::Header h{"tenant", tenant};
  protocol::encode_message(out, {&h, 1}, payload);
  return out;
}
}  // namespace

TEST_CASE("flow: 10,000 keys each hold their limit and slow keys do not hold back the rest") {
  Engine e;
  QueueOptions o;
  o.key_header = "tenant";
  o.key_rate = {1'000, 1};  // 1/s per tenant
  auto& q = e.declare("q", o);
  // 10 hot tenants with 200 messages each, published first, then 9,990 tenants
  // with one message each, then 100 messages without a tenant. Payload = tenant.
  for (int round = 0; round < 200; ++round) {
    for (int hot = 0; hot < 10; ++hot) {
      const std::string tenant = "hot-" + std::to_string(hot);
      e.publish(q, keyed(tenant, tenant), 0, 0);
    }
  }
  for (int t = 0; t < 9990; ++t) {
    const std::string tenant = "t-" + std::to_string(t);
    e.publish(q, keyed(tenant, tenant), 0, 0);
  }
  for (int i = 0; i < 100; ++i) e.publish(q, encode(""), 0, 0);
  CHECK(q.key_lanes() == 10'000 + 1);

  RecordingSink sink;
  subscribe(e, q, sink, 10'000);
  std::map<std::string, std::vector<Micros>> by_tenant;
  Micros now = 0;
  std::size_t delivered = 0;
  auto drain = [&] {
    while (!sink.got.empty()) {
      for (auto& g : sink.take()) {
        ++delivered;
        by_tenant[g.payload].push_back(now);
        REQUIRE(e.ack(sink, g.delivery.message_id, g.delivery.lease_token, now) == errc::ok);
      }
    }
  };
  drain();
  // At once: every cold tenant's message, one per hot tenant (its burst), and the unkeyed.
  CHECK(delivered == 9990 + 10 + 100);
  // Then each hot tenant at exactly 1/s, for 20 s.
  while (now < 20 * kSecond) {
    const auto next = e.next_deadline();
    REQUIRE(next.has_value());
    now = *next;
    e.advance(now);
    drain();
  }
  CHECK(delivered == 10'100 + 10 * 20);
  for (int hot = 0; hot < 10; ++hot) {
    const auto& times = by_tenant["hot-" + std::to_string(hot)];
    REQUIRE(times.size() == 21);
    for (std::size_t i = 1; i < times.size(); ++i) CHECK(times[i] - times[i - 1] == kSecond);
  }
  // Idle tenants cost nothing: their lanes are gone once their buckets refilled.
  CHECK(q.key_lanes() == 10);  // the hot ones, which still hold messages
}

TEST_CASE("flow: a low watermark of 0 means until empty") {
  Engine e;
  QueueOptions o;
  o.max_messages = 2;
  o.low_watermark_pct = 0;
  auto& q = e.declare("q", o);
  for (int i = 0; i < 2; ++i) e.publish(q, encode("m"), 0, 0);
  CHECK(e.admit(q, 1, 0).code == errc::queue_full);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  auto got = sink.take();
  REQUIRE(e.ack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, 0) == errc::ok);
  CHECK(e.admit(q, 1, 0).code == errc::queue_full);
  REQUIRE(e.ack(sink, got[1].delivery.message_id, got[1].delivery.lease_token, 0) == errc::ok);
  CHECK(e.admit(q, 1, 0).code == errc::ok);
}

TEST_CASE("flow: idle key lanes are dropped once their buckets are full, with no throttling") {
  Engine e;
  QueueOptions o;
  o.key_header = "tenant";
  o.key_rate = {1'000, 5};  // 1/s, burst 5: one message each never throttles
  auto& q = e.declare("q", o);
  for (int t = 0; t < 100; ++t) e.publish(q, keyed("t" + std::to_string(t), "m"), 0, 0);
  RecordingSink sink;
  subscribe(e, q, sink, 1000);
  for (auto& g : sink.take())
    REQUIRE(e.ack(sink, g.delivery.message_id, g.delivery.lease_token, 0) == errc::ok);
  CHECK(q.key_lanes() == 100);  // each bucket still refilling its one token
  const auto next = e.next_deadline();
  REQUIRE(next.has_value());
  CHECK(*next == kSecond);
  e.advance(*next);
  CHECK(q.key_lanes() == 0);
}

TEST_CASE("flow: a rate token taken when due but not spent is given back") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink limited, other;
  REQUIRE(e.subscribe(q, limited, 1, 10, 0, 0, {1'000, 1}).code == errc::ok);  // 1/s
  e.publish(q, encode("m1"), 0, 0);
  CHECK(limited.take().size() == 1);  // its one token
  subscribe(e, q, other, 1, 0, 0, 2);
  e.publish(q, encode("m2"), 0, 0);  // limited is throttled until 1 s; other takes it
  CHECK(other.take().size() == 1);
  e.advance(kSecond);  // limited's token is due, but nothing is ready
  CHECK(limited.take().empty());
  // Much later two messages: burst 1 means one at once, not two.
  e.publish(q, encode("m3"), 100 * kSecond, 0);
  e.publish(q, encode("m4"), 100 * kSecond, 0);
  CHECK(limited.take().size() == 1);
  e.advance(101 * kSecond);
  CHECK(limited.take().size() == 1);
}

TEST_CASE("flow: switching a queue from block to reject answers its blocked publishers") {
  Engine e;
  QueueOptions o;
  o.max_messages = 1;
  auto& q = e.declare("q", o);
  e.publish(q, encode("m"), 0, 0);
  CHECK(e.admit(q, 1, 0).code == errc::queue_full);
  Waiter waiter;
  e.wait_for_room(q, waiter, 0);
  o.overflow = engine::Overflow::reject;
  REQUIRE_FALSE(e.reconfigure(q, o, 0));
  CHECK(waiter.rooms == 1);  // it tries again and is refused with queue_full
  CHECK(e.admit(q, 1, 0).code == errc::queue_full);
}

TEST_CASE("flow: open() creates queues up to the limit, and finds existing ones beyond it") {
  Engine e;
  e.set_max_queues(2);
  REQUIRE(e.open("a") != nullptr);
  REQUIRE(e.open("b") != nullptr);
  CHECK(e.open("c") == nullptr);
  CHECK(e.open("a") != nullptr);
  CHECK(e.queue_count() == 2);
}

TEST_CASE("flow: the dispatch rate holds when the timer fires late and acks come in between") {
  // A real timer fires tens to hundreds of µs late, and acks arrive while a
  // wake-up is pending; neither may cost the queue its rate.
  for (const auto& [rate, burst] : {std::pair{100'000, 1}, {1'000'000, 10}, {10'000'000, 100}}) {
    CAPTURE(rate);
    Engine e;
    QueueOptions o;
    o.dispatch_rate = {static_cast<engine::MilliRate>(rate), static_cast<std::uint32_t>(burst)};
    auto& q = e.declare("q", o);
    const double per_second = rate / 1000.0;
    const int seconds = 3;
    for (int i = 0; i < per_second * seconds * 2; ++i) e.publish(q, encode("m"), 0, 0);
    RecordingSink sink;
    subscribe(e, q, sink, 1000);
    Micros now = 0;
    std::size_t delivered = 0;
    const Micros end = seconds * kSecond;
    std::vector<std::pair<Micros, std::pair<std::uint64_t, std::uint64_t>>>
        acks;  // due, (id, token)
    while (now < end) {
      for (auto& g : sink.take()) {
        ++delivered;
        acks.push_back({now + 37, {g.delivery.message_id, g.delivery.lease_token}});
      }
      Micros next = end;
      if (auto d = e.next_deadline()) next = std::min(next, *d + 150);  // the timer, late
      if (!acks.empty()) next = std::min(next, acks.front().first);
      now = std::max(now, next);
      while (!acks.empty() && acks.front().first <= now) {
        REQUIRE(e.ack(sink, acks.front().second.first, acks.front().second.second, now) ==
                errc::ok);
        acks.erase(acks.begin());
      }
      e.advance(now);
    }
    const double expected = per_second * seconds + burst;
    CAPTURE(delivered);
    CHECK(std::abs(static_cast<double>(delivered) - expected) <= 0.005 * expected);
  }
}
