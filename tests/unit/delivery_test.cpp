// Delivery semantics in the engine, driven by a manual clock: the retry
// backoff schedule, dead-lettering (held until its write commits), ordering
// keys under random acks, nacks, expiries and disconnects, dedup ids, the
// resequencer and delayed publishes.
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "engine_fixtures.hpp"

namespace sluice::test {
namespace {

using engine::Jitter;
using engine::RetryPolicy;
constexpr Micros kMs = 1000;

}  // namespace

TEST_CASE("retry: the backoff schedule is exact with jitter none and inside its bounds otherwise") {
  RetryPolicy p;
  p.initial_backoff = 100 * kMs;
  p.multiplier_milli = 2000;
  p.max_backoff = kSecond;
  p.jitter = Jitter::none;
  std::mt19937_64 rng(7);
  const Micros expected[] = {100 * kMs, 200 * kMs, 400 * kMs, 800 * kMs, kSecond, kSecond};
  for (std::uint32_t n = 1; n <= 6; ++n) {
    CAPTURE(n);
    CHECK(p.base(n) == expected[n - 1]);
    CHECK(p.backoff(n, rng) == expected[n - 1]);
  }
  p.multiplier_milli = 1500;  // fractional growth: 100, 150, 225 ms
  CHECK(p.base(3) == 225 * kMs);
  p.multiplier_milli = 2000;
  CHECK(p.base(1'000'000) == kSecond);  // no overflow far out

  for (Jitter j : {Jitter::full, Jitter::equal}) {
    p.jitter = j;
    for (std::uint32_t n = 1; n <= 6; ++n) {
      CAPTURE(n);
      const Micros base = p.base(n);
      const Micros low = j == Jitter::full ? 0 : base / 2;
      Micros seen_min = engine::kNever, seen_max = 0;
      for (int i = 0; i < 2000; ++i) {
        const Micros d = p.backoff(n, rng);
        REQUIRE(d >= low);
        REQUIRE(d <= base);
        seen_min = std::min(seen_min, d);
        seen_max = std::max(seen_max, d);
      }
      // Spread over the whole range, not stuck at one end.
      CHECK(seen_min < low + (base - low) / 10);
      CHECK(seen_max > base - (base - low) / 10);
    }
  }
}

TEST_CASE(
    "retry: nacks wait the backoff exactly, then the message is dead-lettered with its reason") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  engine::QueueOptions o;
  o.retry.max_attempts = 4;
  o.retry.initial_backoff = 100 * kMs;
  o.retry.max_backoff = kSecond;
  o.retry.jitter = Jitter::none;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  subscribe(e, q, sink, 1, 30 * kSecond);
  const auto id = e.publish(q, encode("poison"), 0, 0).id;
  Micros now = 0;
  for (std::uint32_t attempt = 1; attempt <= 4; ++attempt) {
    CAPTURE(attempt);
    auto got = sink.take();
    REQUIRE(got.size() == 1);
    CHECK(got[0].delivery.attempt == attempt);
    now += 10 * kMs;  // the consumer works a little
    REQUIRE(e.nack(sink, id, got[0].delivery.lease_token, 0, now,
                   "boom " + std::to_string(attempt)) == errc::ok);
    if (attempt == 4) break;
    const Micros wait = o.retry.base(attempt);
    CHECK(q.counters().delayed == 1);
    e.advance(now + wait - 1);
    CHECK(sink.got.empty());  // not a microsecond early
    now += wait;
    e.advance(now);
  }
  CHECK(sink.got.empty());
  // The dead letter is written; until it commits the message is still held.
  CHECK(journal.take().back() == "dead_lettered " + std::to_string(id) + " boom 4");
  CHECK(q.counters().dead_lettering == 1);
  CHECK(e.messages() == 1);
  e.committed(journal.seq, now);
  CHECK(e.messages() == 0);
  CHECK(q.counters().dead_lettered_total == 1);
  CHECK(q.counters().retried_total == 3);
}

TEST_CASE(
    "retry: a nack may ask for dead-lettering at once and expiry and disconnect count attempts") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  engine::QueueOptions o;
  o.retry.max_attempts = 2;
  o.retry.initial_backoff = 50 * kMs;
  o.retry.jitter = Jitter::none;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  auto* c = subscribe(e, q, sink, 2, kSecond);
  const auto poison = e.publish(q, encode("poison"), 0, 0).id;
  const auto flaky = e.publish(q, encode("flaky"), 0, 0).id;
  auto got = sink.take();
  REQUIRE(got.size() == 2);
  REQUIRE(e.nack(sink, poison, got[0].delivery.lease_token, 0, 1, "bad input", true) == errc::ok);
  CHECK(journal.take().back() == "dead_lettered " + std::to_string(poison) + " bad input");
  // flaky: its lease runs out (attempt 1), then its consumer leaves (attempt 2): dead.
  e.advance(kSecond);
  CHECK(q.counters().expired_total == 1);
  e.advance(kSecond + 50 * kMs);
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].delivery.message_id == flaky);
  CHECK(got[0].delivery.attempt == 2);
  e.disconnect(*c, kSecond + 60 * kMs);
  CHECK(journal.take().back() ==
        "dead_lettered " + std::to_string(flaky) + " consumer disconnected");
  e.committed(journal.seq, 2 * kSecond);
  CHECK(e.messages() == 0);
  CHECK(q.counters().dead_lettered_total == 2);
}

TEST_CASE("ordering: 10000 messages over 100 keys keep key order through random failures") {
  // Random acks, nacks (some poison), lease expiries and consumer disconnects.
  // Checked at every delivery: it is the oldest unsettled message of its key,
  // and no other message of that key is out. At the end every message was
  // acked exactly once or dead-lettered.
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    Engine e;
    e.set_seed(seed);
    RecordingJournal journal;
    e.set_journal(&journal);
    engine::QueueOptions o;
    o.ordered = true;
    o.retry.max_attempts = 4;
    o.retry.initial_backoff = 2 * kMs;
    o.retry.max_backoff = 20 * kMs;
    o.retry.jitter = Jitter::full;
    auto& q = e.declare("q", o);
    constexpr int kKeys = 100, kMessages = 10'000;
    constexpr Micros kLease = 30 * kMs;

    struct Out {
      std::uint64_t id, token;
      int key;
      Micros deadline;
    };
    struct Member {
      RecordingSink sink;
      engine::Consumer* consumer = nullptr;
      std::vector<Out> held;
    };
    std::vector<std::unique_ptr<Member>> members;
    Micros now = 0;
    for (int i = 0; i < 4; ++i) {
      members.push_back(std::make_unique<Member>());
      members.back()->consumer =
          subscribe(e, q, members.back()->sink, 1 + i * 3, kLease, now, i + 1);
    }
    std::vector<std::vector<std::uint64_t>> order(kKeys);  // ids per key, publish order
    std::map<std::uint64_t, int> key_of;
    std::set<std::uint64_t> settled, acked, dead;
    std::vector<std::size_t> first_unsettled(kKeys, 0);
    std::map<int, Out> out_by_key;  // the one message of a key we know is out
    int published = 0;
    std::uint64_t violations = 0;

    const auto settle = [&](std::uint64_t id) {
      settled.insert(id);
      const int k = key_of[id];
      auto& pos = first_unsettled[static_cast<std::size_t>(k)];
      while (pos < order[static_cast<std::size_t>(k)].size() &&
             settled.count(order[static_cast<std::size_t>(k)][pos]))
        ++pos;
    };
    const auto collect = [&] {
      // Dead letters whose write committed are settled.
      for (const auto& line : journal.take()) {
        if (!line.starts_with("dead_lettered ")) continue;
        dead.insert(std::stoull(line.substr(14)));
      }
      e.committed(journal.seq, now);
      for (auto id : dead)
        if (!settled.count(id)) {
          settle(id);
          const int k = key_of[id];
          if (out_by_key.count(k) && out_by_key[k].id == id) out_by_key.erase(k);
        }
      for (auto& m : members) {
        for (auto& g : m->sink.take()) {
          const std::uint64_t id = g.delivery.message_id;
          const int k = key_of[id];
          const auto& ids = order[static_cast<std::size_t>(k)];
          // Order: the oldest unsettled message of its key.
          if (first_unsettled[static_cast<std::size_t>(k)] >= ids.size() ||
              ids[first_unsettled[static_cast<std::size_t>(k)]] != id)
            ++violations;
          // One out per key: the previous one was settled, expired or abandoned.
          if (auto it = out_by_key.find(k); it != out_by_key.end() && it->second.deadline > now)
            ++violations;
          const Out o2{id, g.delivery.lease_token, k, now + kLease};
          out_by_key[k] = o2;
          m->held.push_back(o2);
        }
      }
    };

    for (int step = 0; published < kMessages || step < 400'000; ++step) {
      const int op = static_cast<int>(rng() % 100);
      if (op < 35 && published < kMessages) {
        const int k = static_cast<int>(rng() % kKeys);
        const auto id =
            e.publish(q, with_headers("m", {{"sluice-key", "k" + std::to_string(k)}}), now, 0).id;
        key_of[id] = k;
        order[static_cast<std::size_t>(k)].push_back(id);
        ++published;
      } else if (op < 85) {
        auto& m = *members[rng() % members.size()];
        if (m.held.empty()) continue;
        const std::size_t i = rng() % m.held.size();
        const Out o2 = m.held[i];
        m.held.erase(m.held.begin() + static_cast<std::ptrdiff_t>(i));
        const int kind = static_cast<int>(rng() % 10);
        errc code;
        if (kind < 7) {
          code = e.ack(m.sink, o2.id, o2.token, now);
          if (code == errc::ok) {
            CHECK(acked.insert(o2.id).second);
            settle(o2.id);
          }
        } else {
          code = e.nack(m.sink, o2.id, o2.token, 0, now, "no", kind == 9 && rng() % 4 == 0);
        }
        if (code == errc::ok) out_by_key.erase(o2.key);
      } else if (op < 97) {
        now += static_cast<Micros>(rng() % (5 * kMs));
        e.advance(now);
      } else if (op < 98) {
        auto& m = *members[rng() % members.size()];
        for (const auto& o2 : m.held)
          if (out_by_key.count(o2.key) && out_by_key[o2.key].id == o2.id) out_by_key.erase(o2.key);
        m.held.clear();
        e.disconnect(*m.consumer, now);
        m.consumer = subscribe(e, q, m.sink, 1 + static_cast<std::uint32_t>(rng() % 8), kLease, now,
                               100 + static_cast<std::uint32_t>(step));
      }
      collect();
      if (published == kMessages && acked.size() + dead.size() == kMessages) break;
    }
    CHECK(violations == 0);
    CHECK(acked.size() + dead.size() == kMessages);
    for (auto id : dead) CHECK_FALSE(acked.count(id));
    CHECK(e.messages() == 0);
    CHECK(q.counters().dead_lettered_total == dead.size());
    CHECK(q.counters().expired_total > 0);
    CHECK(q.counters().retried_total > 0);
    CHECK(dead.size() > 0);
  }
}

TEST_CASE("dedup: a repeat within the window is the first message and after it a new one") {
  Engine e;
  engine::QueueOptions o;
  o.dedup_window = 10 * kSecond;
  o.dedup_max_entries = 3;
  auto& q = e.declare("q", o);
  const auto msg = with_headers("order 42", {{"sluice-dedup-id", "order-42"}});
  const auto first = e.publish(q, msg, 0, 0);
  CHECK_FALSE(first.duplicate);
  const auto again = e.publish(q, msg, 5 * kSecond, 0);
  CHECK(again.duplicate);
  CHECK(again.id == first.id);
  CHECK(q.counters().ready == 1);
  CHECK(q.counters().duplicates_total == 1);
  const auto later = e.publish(q, msg, 10 * kSecond, 0);  // the window has ended
  CHECK_FALSE(later.duplicate);
  CHECK(later.id != first.id);
  CHECK(q.counters().ready == 2);
  // Full ledger: the oldest entries go first, counted.
  for (int i = 0; i < 4; ++i)
    e.publish(q, with_headers("x", {{"sluice-dedup-id", "id" + std::to_string(i)}}), 11 * kSecond,
              0);
  CHECK(q.dedup_evicted() == 2);
  CHECK_FALSE(
      e.publish(q, with_headers("x", {{"sluice-dedup-id", "id0"}}), 11 * kSecond, 0).duplicate);
  CHECK(e.publish(q, with_headers("x", {{"sluice-dedup-id", "id3"}}), 11 * kSecond, 0).duplicate);
}

TEST_CASE("resequencer: early arrivals wait and a gap is given up after the timeout") {
  Engine e;
  engine::QueueOptions o;
  o.resequence = true;
  o.gap_timeout = kSecond;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  subscribe(e, q, sink, 100);
  const auto seq = [](int n, std::string key = "a") {
    return with_headers("s" + std::to_string(n),
                        {{"sluice-key", key}, {"sluice-seq", std::to_string(n)}});
  };
  e.publish(q, seq(3), 0, 0);
  e.publish(q, seq(2), 0, 0);
  e.publish(q, seq(1, "b"), 0, 0);  // another key is not held up
  CHECK(q.counters().held == 2);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.take()[0].payload == "s1");
  e.publish(q, seq(1), 0, 0);
  auto got = sink.take();
  REQUIRE(got.size() == 3);
  CHECK(got[0].payload == "s1");
  CHECK(got[1].payload == "s2");
  CHECK(got[2].payload == "s3");
  CHECK(e.publish(q, seq(2), 0, 0).duplicate);  // a number seen before: dropped, flagged
  CHECK(q.counters().duplicates_total == 1);
  // 4 never comes: 5 and 6 wait one gap timeout, then go in order.
  e.publish(q, seq(6), 10, 0);
  e.publish(q, seq(5), 20, 0);
  e.advance(10 + kSecond - 1);
  CHECK(sink.got.empty());
  CHECK(e.next_deadline() == 10 + kSecond);
  e.advance(10 + kSecond);
  got = sink.take();
  REQUIRE(got.size() == 2);
  CHECK(got[0].payload == "s5");
  CHECK(got[1].payload == "s6");
  CHECK(q.sequence_gaps() == 1);
  // 4 arrives late: let through, not taken for a duplicate.
  e.publish(q, seq(4), 2 * kSecond, 0);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.take()[0].payload == "s4");
  CHECK(q.counters().held == 0);
}

TEST_CASE("delay: a publish with sluice-delay-ms or sluice-not-before-ms waits") {
  Engine e;
  auto& q = e.queue("q");
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  e.publish(q, with_headers("later", {{"sluice-delay-ms", "500"}}), 0, 1'000'000'000);
  // Wall clock at publish: 1000 s; not before 1000.25 s.
  e.publish(q, with_headers("at", {{"sluice-not-before-ms", "1000250"}}), 0, 1'000'000'000);
  e.publish(q, encode("now"), 0, 1'000'000'000);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.take()[0].payload == "now");
  CHECK(q.counters().delayed == 2);
  e.advance(250 * kMs - 1);
  CHECK(sink.got.empty());
  e.advance(250 * kMs);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.take()[0].payload == "at");
  e.advance(500 * kMs);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.take()[0].payload == "later");
  CHECK(sink.got.empty());
}

TEST_CASE(
    "resequencer: a repeated number is a duplicate - the held one's id or 0, never published") {
  Engine e;
  engine::QueueOptions o;
  o.resequence = true;
  o.gap_timeout = kSecond;
  auto& q = e.declare("q", o);
  const auto seq = [](int n) {
    return with_headers("s" + std::to_string(n),
                        {{"sluice-key", "k"}, {"sluice-seq", std::to_string(n)}});
  };
  const auto first = e.publish(q, seq(1), 0, 0);
  CHECK_FALSE(first.duplicate);
  const auto again = e.publish(q, seq(1), 0, 0);  // gone on already: its id is not kept
  CHECK(again.duplicate);
  CHECK(again.id == 0);
  const auto held = e.publish(q, seq(3), 0, 0);  // early: held
  const auto held_again = e.publish(q, seq(3), 0, 0);
  CHECK(held_again.duplicate);
  CHECK(held_again.id == held.id);
  CHECK(q.counters().published_total == 2);
  CHECK(q.counters().duplicates_total == 2);
  CHECK(q.counters().held == 1);
  CHECK(q.counters().ready == 1);
}

TEST_CASE("delay under key order: a delayed message joins its key's line when due") {
  Engine e;
  engine::QueueOptions o;
  o.ordered = true;
  o.key_header = "sluice-key";
  auto& q = e.declare("q", o);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  e.publish(q, with_headers("delayed", {{"sluice-key", "k"}, {"sluice-delay-ms", "1500"}}), 0, 0);
  e.publish(q, with_headers("now", {{"sluice-key", "k"}}), 0, 0);
  // Not in its key's line before it is due: the undelayed message goes at once.
  REQUIRE(sink.got.size() == 1);
  auto got = sink.take();
  CHECK(got[0].payload == "now");
  e.publish(q, with_headers("meanwhile", {{"sluice-key", "k"}}), kSecond, 0);
  CHECK(sink.got.empty());  // the key's message is out: order within the key holds
  REQUIRE(e.ack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, kSecond) ==
          errc::ok);
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "meanwhile");
  REQUIRE(e.ack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, kSecond) ==
          errc::ok);
  e.advance(1500 * kMs);  // due: at the back of its key's line, then delivered
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "delayed");
}

TEST_CASE("a key past 64 KiB of headers still orders its message") {
  // The slot keeps where its key is; this one is too far in for that, and is read again.
  Engine e;
  engine::QueueOptions o;
  o.ordered = true;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  const std::string big(16000, 'x');
  e.publish(
      q,
      with_headers(
          "first",
          {{"h1", big}, {"h2", big}, {"h3", big}, {"h4", big}, {"h5", big}, {"sluice-key", "far"}}),
      0, 0);
  e.publish(q, with_headers("second", {{"sluice-key", "far"}}), 0, 0);
  e.publish(q, with_headers("other", {{"sluice-key", "near"}}), 0, 0);
  auto got = sink.take();
  REQUIRE(got.size() == 2);  // "second" waits for "first": the same key
  CHECK(got[0].payload == "first");
  CHECK(got[1].payload == "other");
  REQUIRE(e.ack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, 0) == errc::ok);
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "second");
}

TEST_CASE("resequencer: a delayed message takes its place in sequence when due") {
  Engine e;
  engine::QueueOptions o;
  o.resequence = true;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  e.publish(q, with_headers("two", {{"sluice-key", "k"}, {"sluice-seq", "2"}}), 0, 0);
  e.publish(
      q,
      with_headers("one", {{"sluice-key", "k"}, {"sluice-seq", "1"}, {"sluice-delay-ms", "1000"}}),
      0, 0);
  CHECK(sink.got.empty());  // 2 waits for 1, which waits for its time
  e.advance(kSecond);
  auto got = sink.take();
  REQUIRE(got.size() == 2);
  CHECK(got[0].payload == "one");
  CHECK(got[1].payload == "two");
}

TEST_CASE("release: a delivery given back unused keeps its attempt number and its place") {
  Engine e;
  engine::QueueOptions o;
  o.ordered = true;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  e.publish(q, with_headers("first", {{"sluice-key", "k"}}), 0, 0);
  e.publish(q, with_headers("second", {{"sluice-key", "k"}}), 0, 0);
  auto got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].delivery.attempt == 1);
  // Released with a delay: its key waits (order), and no attempt is used.
  REQUIRE(e.release(sink, got[0].delivery.message_id, got[0].delivery.lease_token, kSecond, 0) ==
          errc::ok);
  CHECK(sink.got.empty());
  e.advance(kSecond);
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "first");
  CHECK(got[0].delivery.attempt == 1);
  // A nack is a used attempt: the next delivery is attempt 2.
  REQUIRE(e.nack(sink, got[0].delivery.message_id, got[0].delivery.lease_token, 1, kSecond) ==
          errc::ok);
  e.advance(2 * kSecond);
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "first");
  CHECK(got[0].delivery.attempt == 2);
  CHECK(e.release(sink, got[0].delivery.message_id, 12345, 0, 2 * kSecond) == errc::stale_lease);
}

}  // namespace sluice::test
