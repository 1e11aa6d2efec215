// Engine tests: a manual clock (plain integers) and fixed seeds. No sleeping.
#include <utility>
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "engine_fixtures.hpp"

using namespace sluice;
using namespace sluice::test;
using engine::Engine;
using engine::Micros;

TEST_CASE(
    "engine: messages published before a consumer arrives are delivered in order, attempt 1") {
  Engine e;
  auto& q = e.queue("orders");
  for (int i = 0; i < 5; ++i) e.publish(q, encode("m" + std::to_string(i)), 0, 1000 + i);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  auto got = sink.take();
  REQUIRE(got.size() == 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(got[i].payload == "m" + std::to_string(i));
    CHECK(got[i].delivery.attempt == 1);
    CHECK(got[i].delivery.publish_time_us == static_cast<std::uint64_t>(1000 + i));
  }
  CHECK(q.counters().in_flight == 5);
  CHECK(q.counters().ready == 0);
}

TEST_CASE(
    "engine: a consumer never holds more than its credit, each ack lets exactly one more through") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink sink;
  auto* c = subscribe(e, q, sink, 3);
  for (int i = 0; i < 10; ++i) e.publish(q, encode("x"), 0, 0);
  auto got = sink.take();
  CHECK(got.size() == 3);
  CHECK(c->in_flight() == 3);
  CHECK(q.counters().ready == 7);
  CHECK(e.ack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, 1) == errc::ok);
  CHECK(sink.take().size() == 1);
  CHECK(c->in_flight() == 3);
  CHECK(c->peak_in_flight() == 3);
}

TEST_CASE("engine: dispatch is round-robin across a queue's consumers") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink a, b, c;
  subscribe(e, q, a, 1000, 0, 0, 1);
  subscribe(e, q, b, 1000, 0, 0, 2);
  subscribe(e, q, c, 1000, 0, 0, 3);
  for (int i = 0; i < 300; ++i) e.publish(q, encode("x"), 0, 0);
  CHECK(a.got.size() == 100);
  CHECK(b.got.size() == 100);
  CHECK(c.got.size() == 100);
}

TEST_CASE(
    "engine: an expired lease is redelivered with the next attempt, and the late ack is stale") {
  Engine e;
  engine::QueueOptions options;
  options.retry.initial_backoff = 0;  // retry at once (backoff has tests of its own)
  auto& q = e.declare("q", options);
  RecordingSink first, second;
  subscribe(e, q, first, 1, 5 * kSecond, 0, 1);
  e.publish(q, encode("job"), 0, 0);
  auto got = first.take();
  REQUIRE(got.size() == 1);
  const auto original = got[0].delivery;
  CHECK(e.next_deadline() == 5 * kSecond);

  subscribe(e, q, second, 1, 5 * kSecond, kSecond, 2);
  e.advance(5 * kSecond - 1);
  CHECK(second.got.empty());  // not a microsecond early
  e.advance(5 * kSecond);
  auto redelivered = second.take();
  REQUIRE(redelivered.size() == 1);
  CHECK(redelivered[0].delivery.message_id == original.message_id);
  CHECK(redelivered[0].delivery.attempt == 2);
  CHECK(redelivered[0].delivery.lease_token != original.lease_token);
  CHECK(q.counters().expired_total == 1);

  // The first consumer wakes up and acks: refused, and the copy is untouched.
  CHECK(e.ack(first, original.message_id, original.lease_token, 6 * kSecond) == errc::stale_lease);
  CHECK(q.counters().in_flight == 1);
  CHECK(e.ack(second, original.message_id, redelivered[0].delivery.lease_token, 6 * kSecond) ==
        errc::ok);
  CHECK(q.counters().acked_total == 1);
  CHECK(e.messages() == 0);
}

TEST_CASE("engine: an ack at the deadline is stale even before the timer fires") {
  Engine e;
  engine::QueueOptions options;
  options.retry.initial_backoff = 0;
  auto& q = e.declare("q", options);
  RecordingSink sink;
  subscribe(e, q, sink, 1, kSecond);
  e.publish(q, encode("x"), 0, 0);
  auto d = sink.take().at(0).delivery;
  // No advance(): the engine must notice the lease ran out by itself.
  CHECK(e.ack(sink, d.message_id, d.lease_token, kSecond) == errc::stale_lease);
  CHECK(q.counters().expired_total == 1);
  auto again = sink.take();  // redelivered to the same consumer, whose credit came back
  REQUIRE(again.size() == 1);
  CHECK(again[0].delivery.attempt == 2);
}

TEST_CASE("engine: stale and forged lease tokens are refused and change nothing") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  e.publish(q, encode("x"), 0, 0);
  auto d = sink.take().at(0).delivery;
  CHECK(e.ack(sink, d.message_id + 1, d.lease_token, 1) == errc::stale_lease);  // wrong message
  CHECK(e.ack(sink, d.message_id, d.lease_token ^ 1, 1) == errc::stale_lease);  // wrong generation
  CHECK(e.ack(sink, d.message_id, 0xffffffff00000000ull, 1) == errc::stale_lease);  // no such slot
  CHECK(e.nack(sink, d.message_id, d.lease_token + (1ull << 32), 0, 1) == errc::stale_lease);
  // The right token from another connection: not its lease to settle.
  RecordingSink other;
  CHECK(e.ack(other, d.message_id, d.lease_token, 1) == errc::stale_lease);
  CHECK(e.nack(other, d.message_id, d.lease_token, 0, 1) == errc::stale_lease);
  CHECK(e.extend(other, d.message_id, d.lease_token, kSecond, 1) == errc::stale_lease);
  CHECK(q.counters().in_flight == 1);
  CHECK(e.ack(sink, d.message_id, d.lease_token, 1) == errc::ok);
  CHECK(e.ack(sink, d.message_id, d.lease_token, 1) == errc::stale_lease);  // twice
  CHECK(e.extend(sink, d.message_id, d.lease_token, kSecond, 1) == errc::stale_lease);
}

TEST_CASE("engine: a disconnect puts held messages back at the front at once, in delivery order") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink a, b;
  auto* ca = subscribe(e, q, a, 3, 30 * kSecond, 0, 1);
  for (int i = 0; i < 5; ++i) e.publish(q, encode("m" + std::to_string(i)), 0, 0);
  CHECK(a.take().size() == 3);
  e.disconnect(*ca, kSecond);
  CHECK(q.counters().requeued_total == 3);
  subscribe(e, q, b, 10, 0, kSecond, 2);
  auto got = b.take();
  REQUIRE(got.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(got[i].payload == "m" + std::to_string(i));
  CHECK(got[0].delivery.attempt == 2);
  CHECK(got[3].delivery.attempt == 1);
  CHECK(q.consumer_count() == 1);
}

TEST_CASE("engine: nack redelivers, with a delay, not before the delay") {
  Engine e;
  engine::QueueOptions options;
  options.retry.initial_backoff = 0;  // a nack without a delay retries at once
  auto& q = e.declare("q", options);
  RecordingSink sink;
  subscribe(e, q, sink, 1);
  e.publish(q, encode("a"), 0, 0);
  e.publish(q, encode("b"), 0, 0);
  auto a = sink.take().at(0);
  CHECK(e.nack(sink, a.delivery.message_id, a.delivery.lease_token, 0, 1) == errc::ok);
  auto b = sink.take().at(0);
  CHECK(b.payload == "b");  // an immediate nack goes to the back
  CHECK(e.nack(sink, b.delivery.message_id, b.delivery.lease_token, 2 * kSecond, 10) == errc::ok);
  auto a2 = sink.take().at(0);
  CHECK(a2.payload == "a");
  CHECK(a2.delivery.attempt == 2);
  CHECK(e.ack(sink, a2.delivery.message_id, a2.delivery.lease_token, 20) == errc::ok);
  CHECK(sink.got.empty());
  CHECK(q.counters().delayed == 1);
  e.advance(10 + 2 * kSecond - 1);
  CHECK(sink.got.empty());
  e.advance(10 + 2 * kSecond);
  auto b2 = sink.take().at(0);
  CHECK(b2.payload == "b");
  CHECK(b2.delivery.attempt == 2);
  CHECK(q.counters().nacked_total == 2);
}

TEST_CASE("engine: extend moves the lease deadline") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink sink;
  subscribe(e, q, sink, 1, kSecond);
  e.publish(q, encode("x"), 0, 0);
  auto d = sink.take().at(0).delivery;
  CHECK(e.extend(sink, d.message_id, d.lease_token, 10 * kSecond, kSecond / 2) == errc::ok);
  e.advance(5 * kSecond);
  CHECK(sink.got.empty());
  CHECK(q.counters().expired_total == 0);
  CHECK(e.ack(sink, d.message_id, d.lease_token, 5 * kSecond) == errc::ok);
  CHECK(e.extend(sink, d.message_id, d.lease_token, 0, 0) == errc::invalid_argument);
}

TEST_CASE("engine: an unsubscribed consumer gets nothing new but can settle what it holds") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink sink;
  auto* c = subscribe(e, q, sink, 2);
  for (int i = 0; i < 4; ++i) e.publish(q, encode("x"), 0, 0);
  auto held = sink.take();
  REQUIRE(held.size() == 2);
  e.unsubscribe(*c);
  CHECK(e.ack(sink, held[0].delivery.message_id, held[0].delivery.lease_token, 1) == errc::ok);
  CHECK(sink.got.empty());
  CHECK(sink.released_consumers.empty());
  CHECK(e.ack(sink, held[1].delivery.message_id, held[1].delivery.lease_token, 1) == errc::ok);
  CHECK(sink.released_consumers.size() == 1);
  CHECK(q.consumer_count() == 0);
  CHECK(q.counters().ready == 2);
}

TEST_CASE("engine: a sink that is full pauses its consumer until resumed") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink sink;
  auto* c = subscribe(e, q, sink, 100);
  sink.accepting = false;
  e.publish(q, encode("1"), 0, 0);
  e.publish(q, encode("2"), 0, 0);
  CHECK(sink.take().size() == 1);
  CHECK(c->paused());
  sink.accepting = true;
  e.resume(*c, 1);
  CHECK(sink.take().size() == 1);
}

TEST_CASE("engine: subscribe refuses credit 0 and credit over the queue's maximum") {
  Engine e;
  engine::QueueOptions small;
  small.lease = kSecond;
  small.max_consumer_in_flight = 5;
  e.declare("small", small);
  RecordingSink sink;
  CHECK(e.subscribe(e.queue("small"), sink, 1, 0, 0, 0).code == errc::invalid_argument);
  CHECK(e.subscribe(e.queue("small"), sink, 1, 6, 0, 0).code == errc::invalid_argument);
  CHECK(e.subscribe(e.queue("small"), sink, 1, 5, 0, 0).code == errc::ok);
  CHECK(e.queue("small").options().lease == kSecond);
}

TEST_CASE("engine: randomized run keeps every limit and loses nothing") {
  // Thousands of random operations over several consumers with tiny credits,
  // short leases, nacks, expiries and disconnects. Invariants after every step:
  // no consumer over its credit, counters agree with the store. At the end
  // every published message was acked exactly once.
  for (std::uint32_t seed : {1u, 2u, 3u, 42u}) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    Engine e;
    engine::QueueOptions options;
    options.max_in_flight = 6;            // queue-wide cap, below the members' total credit
    options.dispatch_rate = {20'000, 3};  // 20/s
    options.retry.max_attempts = 0;       // nothing is dead-lettered: every message gets acked
    if (seed % 2 == 1) {                  // and per-tenant lanes with their own rate
      options.key_header = "tenant";
      options.key_rate = {5'000, 2};  // 5/s per tenant
    }
    auto& q = e.declare("q", options);
    struct Member {
      RecordingSink sink;
      engine::Consumer* consumer = nullptr;
      std::uint32_t credit = 0;
      std::vector<protocol::Delivery> held;
    };
    std::vector<std::unique_ptr<Member>> members;
    std::set<std::uint64_t> published, acked;
    Micros now = 0;
    std::uint32_t next_sub = 1;

    auto collect = [&] {
      for (auto& m : members) {
        for (auto& g : m->sink.take()) {
          REQUIRE(g.consumer == m->consumer);
          m->held.push_back(g.delivery);
        }
      }
    };
    auto add_member = [&] {
      auto m = std::make_unique<Member>();
      m->credit = 1 + rng() % 4;
      m->consumer = subscribe(e, q, m->sink, m->credit, (1 + rng() % 5) * kSecond, now, next_sub++);
      members.push_back(std::move(m));
    };
    add_member();
    add_member();

    for (int step = 0; step < 5000; ++step) {
      now += rng() % (kSecond / 2);
      const int op = static_cast<int>(rng() % 100);
      if (op < 35) {
        std::string message;
        const std::string tenant = "t" + std::to_string(rng() % 6);  // "t5": no header
        const protocol::Header header{"tenant", tenant};
        protocol::encode_message(message, {&header, tenant == "t5" ? 0u : 1u}, "p");
        published.insert(e.publish(q, message, now, 0).id);
      } else if (op < 70) {
        auto& m = *members[rng() % members.size()];
        if (!m.held.empty()) {
          const std::size_t i = rng() % m.held.size();
          const auto d = m.held[i];
          m.held.erase(m.held.begin() + static_cast<std::ptrdiff_t>(i));
          const bool nack = rng() % 5 == 0;
          // Another member trying the same token is always refused.
          auto& stranger = *members[rng() % members.size()];
          if (&stranger != &m)
            REQUIRE(e.ack(stranger.sink, d.message_id, d.lease_token, now) == errc::stale_lease);
          const errc r =
              nack ? e.nack(m.sink, d.message_id, d.lease_token, (rng() % 2) * kSecond, now)
                   : e.ack(m.sink, d.message_id, d.lease_token, now);
          if (r == errc::ok && !nack) {
            REQUIRE(acked.insert(d.message_id).second);  // never acked twice
          }
          if (r != errc::ok) REQUIRE(r == errc::stale_lease);
        }
      } else if (op < 90) {
        e.advance(now);
      } else if (op < 95 && members.size() > 1) {
        const std::size_t i = rng() % members.size();
        e.disconnect(*members[i]->consumer, now);
        members.erase(members.begin() + static_cast<std::ptrdiff_t>(i));
      } else if (members.size() < 6) {
        add_member();
      }
      collect();
      std::uint64_t in_flight = 0;
      for (auto& m : members) {
        REQUIRE(m->consumer->in_flight() <= m->credit);
        in_flight += m->consumer->in_flight();
      }
      const auto& c = q.counters();
      REQUIRE(c.in_flight == in_flight);
      REQUIRE(c.in_flight <= 6);
      REQUIRE(c.ready + c.delayed + c.in_flight == e.messages());
      REQUIRE(e.messages() == published.size() - acked.size());
    }

    // Drain: one patient consumer acks whatever is left.
    for (auto& m : members) e.disconnect(*m->consumer, now);
    members.clear();
    add_member();
    for (int round = 0; round < 100000 && acked.size() < published.size(); ++round) {
      now += kSecond;
      e.advance(now);
      collect();
      for (auto& d : members[0]->held) {
        if (e.ack(members[0]->sink, d.message_id, d.lease_token, now) == errc::ok)
          REQUIRE(acked.insert(d.message_id).second);
      }
      members[0]->held.clear();
    }
    CHECK(acked == published);
    CHECK(e.messages() == 0);
    CHECK(members[0]->consumer->peak_in_flight() <= members[0]->credit);
  }
}
