// What the engine measures for /metrics, on a manual clock: the publish →
// first-delivery latency and deliver → ack processing histograms (extended
// leases included), held-back publishes by reason, time spent waiting for the
// dispatch rate, the age of the oldest ready message, and the failed-attempt
// events behind the log lines.
#include <doctest/doctest.h>

#include "engine_fixtures.hpp"

using namespace sluice;
using namespace sluice::test;
using engine::Engine;
using engine::Micros;
using engine::QueueOptions;

namespace {

/// The bucket an observation of `value` landed in (index into counts()).
std::size_t bucket_of(const engine::Histogram& h, std::int64_t value) {
  std::size_t i = 0;
  while (i < h.bounds().size() && value > h.bounds()[i]) ++i;
  return i;
}

struct EventLog final : engine::MessageEvents {
  std::vector<std::string> lines;
  void attempt_failed(const engine::FailedAttempt& e) override {
    lines.push_back(e.queue.name() + " " + std::to_string(e.message_id) + " attempt " +
                    std::to_string(e.attempt) + " " + std::string(e.reason) + " retry_in " +
                    std::to_string(e.retry_in));
  }
};

}  // namespace

TEST_CASE("histogram: buckets are upper bounds, inclusive, and the last takes the rest") {
  engine::Histogram h(engine::kLatencyBoundsUs);
  h.observe(100);         // exactly the first bound: in it
  h.observe(101);         // just past it: the next
  h.observe(-5);          // a clock step: counted as 0
  h.observe(61'000'000);  // past every bound
  CHECK(h.count() == 4);
  CHECK(h.sum() == 100 + 101 + 0 + 61'000'000);
  CHECK(h.counts()[0] == 2);
  CHECK(h.counts()[1] == 1);
  CHECK(h.counts().back() == 1);
}

TEST_CASE("observe: publish-to-delivery latency and processing time, extended leases included") {
  Engine e;
  auto& q = e.declare("q", QueueOptions{});
  RecordingSink sink;
  const std::int64_t wall0 = 1'700'000'000'000'000;  // wall clock at engine time 0
  Micros now = 0;
  e.publish(q, encode("a"), now, wall0);
  e.publish(q, encode("b"), now, wall0);
  now = 30'000;  // 30 ms later a consumer comes
  subscribe(e, q, sink, 2, 10 * kSecond, now);
  auto got = sink.take();
  REQUIRE(got.size() == 2);
  const auto& latency = q.delivery_latency();
  CHECK(latency.count() == 2);
  CHECK(latency.sum() == 2 * 30'000);
  CHECK(latency.counts()[bucket_of(latency, 30'000)] == 2);

  // a: acked 2 s after delivery. b: extended at 5 s, acked at 12 s (past its
  // first deadline): 12 s of processing, not 7.
  now += 2 * kSecond;
  REQUIRE(e.ack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, now) == errc::ok);
  now += 3 * kSecond;
  REQUIRE(e.extend(sink, got[1].delivery.message_id, got[1].delivery.lease_token, 20 * kSecond,
                   now) == errc::ok);
  now += 7 * kSecond;
  REQUIRE(e.ack(sink, got[1].delivery.message_id, got[1].delivery.lease_token, now) == errc::ok);
  const auto& processing = q.processing_time();
  CHECK(processing.count() == 2);
  CHECK(processing.sum() == 2 * kSecond + 12 * kSecond);

  // A retry is not a first delivery: the latency histogram does not count it again.
  e.publish(q, encode("c"), now, wall0 + now);
  got = sink.take();
  REQUIRE(got.size() == 1);
  REQUIRE(e.nack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, 1, now) ==
          errc::ok);
  e.advance(now + 1);
  REQUIRE(sink.take().size() == 1);
  CHECK(latency.count() == 3);
}

TEST_CASE("observe: held-back publishes are counted by reason") {
  Engine e;
  QueueOptions small;
  small.max_messages = 2;
  small.overflow = engine::Overflow::reject;
  auto& full = e.declare("full", small);
  QueueOptions limited;
  limited.ingress_rate = {1000, 1};  // 1/s, burst 1
  auto& rated = e.declare("rated", limited);
  Micros now = 0;
  for (int i = 0; i < 2; ++i) {
    REQUIRE(e.admit(full, 1, now).code == errc::ok);
    e.publish(full, encode("x"), now, 0);
  }
  const auto refused = e.admit(full, 1, now);
  CHECK(refused.code == errc::queue_full);
  CHECK(refused.reason == engine::Throttle::capacity);
  CHECK(full.counters().throttled_total[0] == 1);
  CHECK(full.counters().refused_total == 1);

  REQUIRE(e.admit(rated, 1, now).code == errc::ok);
  const auto slow = e.admit(rated, 1, now);
  CHECK(slow.reason == engine::Throttle::rate);
  CHECK(rated.counters().throttled_total[3] == 1);
  // A poller (a redrive) is not a producer: not counted.
  e.admit(rated, 1, now, /*count_refusal=*/false);
  CHECK(rated.counters().throttled_total[3] == 1);

  e.set_memory_limit(1);
  const auto memory = e.admit(rated, 1, now + 10 * kSecond);
  CHECK(memory.reason == engine::Throttle::memory);
  CHECK(rated.counters().throttled_total[1] == 1);
}

TEST_CASE("observe: time spent waiting for the dispatch rate") {
  Engine e;
  QueueOptions o;
  o.dispatch_rate = {10'000, 1};  // 10/s: a token every 100 ms
  auto& q = e.declare("q", o);
  RecordingSink sink;
  Micros now = 0;
  for (int i = 0; i < 11; ++i) e.publish(q, encode("m"), now, 0);
  subscribe(e, q, sink, 100, 0, now);
  // The first goes at once (the burst); each of the next 10 waits 100 ms.
  while (auto next = e.next_deadline()) {
    if (*next > 10 * kSecond) break;
    now = *next;
    e.advance(now);
  }
  CHECK(sink.got.size() == 11);
  CHECK(q.counters().rate_wait_us_total == 10 * 100'000);
}

TEST_CASE("observe: the oldest ready message, on plain and keyed queues") {
  Engine e;
  QueueOptions keyed;
  keyed.ordered = true;
  auto& plain = e.declare("plain", QueueOptions{});
  auto& lanes = e.declare("lanes", keyed);
  CHECK(e.oldest_ready_wall_us(plain) == 0);
  e.publish(plain, encode("a"), 0, 5'000);
  e.publish(plain, encode("b"), 0, 9'000);
  CHECK(e.oldest_ready_wall_us(plain) == 5'000);

  const auto keyed_message = [](std::string_view key) {
    std::string out;
    const protocol::Header h{protocol::kKeyHeader, key};
    protocol::encode_message(out, std::span(&h, 1), "m");
    return out;
  };
  e.publish(lanes, keyed_message("k2"), 0, 7'000);
  e.publish(lanes, keyed_message("k1"), 0, 3'000);
  e.publish(lanes, keyed_message("k1"), 0, 4'000);
  CHECK(e.oldest_ready_wall_us(lanes) == 3'000);
  // Once each key's head is out, the oldest ready is k1's second.
  RecordingSink sink;
  subscribe(e, lanes, sink, 2, 0, 0);
  REQUIRE(sink.got.size() == 2);
  CHECK(e.oldest_ready_wall_us(lanes) == 4'000);
}

TEST_CASE("observe: each failed attempt is reported, with its retry delay or dead-lettering") {
  Engine e;
  EventLog events;
  e.set_events(&events);
  QueueOptions o;
  o.retry.max_attempts = 2;
  o.retry.jitter = engine::Jitter::none;
  o.retry.initial_backoff = 100'000;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  e.publish(q, encode("m"), 0, 0);
  subscribe(e, q, sink, 1, kSecond, 0);
  auto got = sink.take();
  REQUIRE(e.nack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, 0, 0, "boom") ==
          errc::ok);
  e.advance(100'000);
  got = sink.take();
  REQUIRE(got.size() == 1);
  e.advance(100'000 + kSecond);  // the lease runs out on the last attempt
  REQUIRE(events.lines.size() == 2);
  CHECK(events.lines[0] == "q 1 attempt 1 boom retry_in 100000");
  CHECK(events.lines[1] == "q 1 attempt 2 lease expired retry_in -1");
}
