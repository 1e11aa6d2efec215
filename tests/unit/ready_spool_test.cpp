// The ready spool and a key lane's slot ring. The spool: parked messages come back byte for byte
// with their id, publish time and flags, in order with slot records, across chunk sizes; and in the
// engine, a backlog parked in the spool is delivered, requeued, purged and counted exactly as slots
// were.
#include <algorithm>
#include <deque>
#include <map>
#include <random>

#include "engine_fixtures.hpp"
#include "key_lanes.hpp"
#include "ready_spool.hpp"

namespace sluice::test {
namespace {

using engine::kNil;
using engine::ReadySpool;
using engine::Slot;

struct Expected {
  std::uint32_t slot = kNil;
  std::string message;
  std::uint64_t id = 0;
  std::int64_t time = 0;
  std::uint16_t key_at = 0;
  bool durable = false, redriven = false;
};

void check_head(const ReadySpool& spool, const Expected& want) {
  const ReadySpool::Head h = spool.front();
  REQUIRE(h.slot == want.slot);
  if (want.slot != kNil) return;
  std::string message = "stale bytes from a reused slot";
  h.message(message);
  CHECK(message == want.message);
  CHECK(h.message_size() == want.message.size());
  CHECK(h.id == want.id);
  CHECK(h.publish_wall_us == want.time);
  CHECK(h.key_at == want.key_at);
  CHECK(h.durable == want.durable);
  CHECK(h.redriven == want.redriven);
}

}  // namespace

TEST_CASE("ready spool: records come back in order, byte for byte, across chunks") {
  std::mt19937_64 rng(42);
  ReadySpool spool;
  std::deque<Expected> want;
  std::uint64_t id = 1000;
  std::int64_t time = 1'700'000'000'000'000;
  const auto push = [&] {
    Expected e;
    const auto kind = rng() % 10;
    if (kind == 0) {
      e.slot = static_cast<std::uint32_t>(rng() % 5'000'000);
      spool.push_slot(e.slot);
    } else {
      // Sizes from empty to past the largest chunk; ids and times mostly
      // rising by a little, sometimes falling or jumping (restores, redrives).
      const std::size_t size = kind == 1 ? rng() % 200'000 : rng() % 300;
      const std::string payload(size, static_cast<char>('a' + rng() % 26));
      e.message = kind == 2 ? with_headers(payload, {{"sluice-key", "k"}}) : encode(payload);
      if (kind == 3) e.message[0] = 1;  // not the bare form: kept verbatim
      id = kind == 4 ? id - rng() % 100 : kind == 5 ? id + (rng() >> 20) : id + 1;
      time += kind == 6        ? -static_cast<std::int64_t>(rng() % 1'000'000)
              : rng() % 3 == 0 ? 0
                               : static_cast<std::int64_t>(rng() % 50);
      e.id = id;
      e.time = time;
      e.key_at = kind == 2 ? 7 : 0;
      e.durable = rng() % 2 == 0;
      e.redriven = rng() % 7 == 0;
      Slot s;
      s.message = e.message;
      s.id = e.id;
      s.publish_wall_us = e.time;
      s.key_at = e.key_at;
      s.durable = e.durable;
      s.redriven = e.redriven;
      REQUIRE(ReadySpool::parkable(s));
      spool.park(s);
    }
    want.push_back(e);
  };

  // Fill and drain in waves of different depths, interleaving pushes and pops.
  for (int wave = 0; wave < 6; ++wave) {
    const int depth = wave % 2 == 0 ? 3000 : 40;
    for (int i = 0; i < depth; ++i) push();
    while (!want.empty()) {
      CHECK(spool.size() == want.size());
      check_head(spool, want.front());
      spool.pop_front();
      want.pop_front();
      if (rng() % 4 == 0 && want.size() < 100) push();
    }
    CHECK(spool.empty());
    CHECK(spool.parked() == 0);
    // Drained: at most one small chunk stays.
    CHECK(spool.chunk_bytes() <= 4096 + 64);
  }

  for (int i = 0; i < 500; ++i) push();
  std::size_t seen = 0;
  spool.drain(
      [&](std::uint32_t slot) {
        CHECK(slot == want[seen].slot);
        ++seen;
      },
      [&](const ReadySpool::Head& h) {
        CHECK(h.id == want[seen].id);
        ++seen;
      });
  CHECK(seen == 500);
  CHECK(spool.empty());
}

TEST_CASE("ready spool: a record too large for the small chunk an emptied spool kept") {
  // Drained, the spool keeps its small chunk; a larger record then needs a
  // new one, and the reader must start there, not in the empty kept chunk.
  ReadySpool spool;
  std::uint64_t id = 1;
  const auto park = [&](std::size_t size) {
    Slot s;
    s.message = encode(std::string(size, static_cast<char>('a' + id % 26)));
    s.id = id++;
    s.publish_wall_us = static_cast<std::int64_t>(s.id) * 10;
    spool.park(s);
    return s.message;
  };
  for (const std::size_t second : {600u, 1000u, 3000u, 5000u, 70'000u}) {
    CAPTURE(second);
    park(100);
    spool.pop_front();
    REQUIRE(spool.empty());
    const std::string big = park(second);
    const std::uint64_t big_id = id - 1;
    const std::string after = park(10);
    REQUIRE(spool.size() == 2);
    std::string got;
    spool.front().message(got);
    CHECK(got == big);
    CHECK(spool.front().id == big_id);
    spool.pop_front();
    REQUIRE(spool.size() == 1);
    spool.front().message(got);
    CHECK(got == after);
    CHECK(spool.front().id == big_id + 1);
    spool.pop_front();
    CHECK(spool.empty());
  }
}

TEST_CASE("slot ring: a key lane's FIFO with fronts, as a deque would hold it") {
  std::mt19937_64 rng(7);
  engine::SlotRing ring;
  std::deque<std::uint32_t> want;
  CHECK(ring.capacity() == 0);  // nothing allocated before the first message
  for (int step = 0; step < 200'000; ++step) {
    const auto op = rng() % 10;
    const auto slot = static_cast<std::uint32_t>(rng());
    // Waves: long runs of pushes, then of pops, so the ring grows and drains.
    const bool filling = (step / 5000) % 2 == 0;
    if (op < (filling ? 6u : 2u)) {
      ring.push_back(slot);
      want.push_back(slot);
    } else if (op < (filling ? 7u : 3u)) {
      ring.push_front(slot);
      want.push_front(slot);
    } else if (!want.empty()) {
      REQUIRE(ring.front() == want.front());
      ring.pop_front();
      want.pop_front();
    }
    REQUIRE(ring.size() == want.size());
    REQUIRE(ring.empty() == want.empty());
    if (want.empty()) CHECK(ring.capacity() <= 16);  // a drained backlog gives its buffer back
  }
  std::vector<std::uint32_t> out{42};
  ring.move_to(out);
  REQUIRE(out.size() == want.size() + 1);
  CHECK(std::equal(want.begin(), want.end(), out.begin() + 1));
  CHECK(ring.empty());
}

TEST_CASE("ready spool: a slot with a retry, a failure or a key lane is not parked") {
  Slot s;
  CHECK(ReadySpool::parkable(s));
  s.attempt = 1;
  CHECK_FALSE(ReadySpool::parkable(s));
  s.attempt = 0;
  s.repeat_attempt = true;
  CHECK_FALSE(ReadySpool::parkable(s));
  s.repeat_attempt = false;
  s.failed = true;
  CHECK_FALSE(ReadySpool::parkable(s));
}

TEST_CASE("ready spool: a parked backlog is delivered, requeued and purged as slots were") {
  Engine e;
  auto& q = e.queue("q");
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 5000; ++i) {
    const std::string m = i % 3 == 0 ? with_headers("m" + std::to_string(i), {{"h", "v"}})
                                     : encode("m" + std::to_string(i));
    ids.push_back(e.publish(q, m, 0, 1000 + i).id);
  }
  CHECK(e.messages() == 5000);
  CHECK(q.counters().ready == 5000);
  const std::uint64_t bytes = q.counters().bytes;
  const std::uint64_t memory = e.memory_used();
  CHECK(bytes > 0);
  CHECK(e.oldest_ready_wall_us(q) == 1000);

  // A consumer takes 10, leaves without settling: they go back to the front, in order.
  RecordingSink first;
  auto* c1 = subscribe(e, q, first, 10, 30 * kSecond);
  auto got = first.take();
  REQUIRE(got.size() == 10);
  for (int i = 0; i < 10; ++i) {
    CHECK(got[i].payload == "m" + std::to_string(i));
    CHECK(got[i].delivery.message_id == ids[i]);
    CHECK(got[i].delivery.publish_time_us == static_cast<std::uint64_t>(1000 + i));
    CHECK(got[i].delivery.attempt == 1);
  }
  e.disconnect(*c1, 0);
  CHECK(q.counters().ready == 5000);
  CHECK(e.oldest_ready_wall_us(q) == 1000);

  // A new one gets everything in publish order: the requeued ten first.
  RecordingSink second;
  auto* c2 = subscribe(e, q, second, 100, 30 * kSecond, 0, 2);
  std::vector<std::uint64_t> delivered;
  std::map<std::uint64_t, std::string> payloads;
  while (delivered.size() < 2000) {
    for (const auto& g : second.take()) {
      delivered.push_back(g.delivery.message_id);
      payloads[g.delivery.message_id] = g.payload;
      REQUIRE(e.ack(second, g.delivery.message_id, g.delivery.lease_token, 0) == errc::ok);
    }
  }
  e.unsubscribe(*c2);
  for (const auto& g : second.take()) {
    delivered.push_back(g.delivery.message_id);
    payloads[g.delivery.message_id] = g.payload;
    REQUIRE(e.ack(second, g.delivery.message_id, g.delivery.lease_token, 0) == errc::ok);
  }
  for (std::size_t i = 0; i < delivered.size(); ++i) {
    CHECK(delivered[i] == ids[i]);
    CHECK(payloads[ids[i]] == "m" + std::to_string(i));
  }
  CHECK(e.oldest_ready_wall_us(q) == 1000 + static_cast<std::int64_t>(delivered.size()));

  // The rest are purged: counters, memory accounting and the engine's count go to zero.
  CHECK(e.purge(q, 0) == 5000 - delivered.size());
  CHECK(q.counters().ready == 0);
  CHECK(q.counters().bytes == 0);
  CHECK(e.memory_used() == 0);
  CHECK(e.messages() == 0);
  CHECK(e.oldest_ready_wall_us(q) == 0);
  CHECK(bytes < memory);
}

}  // namespace sluice::test
