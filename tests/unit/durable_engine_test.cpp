// The engine's side of durable queues: a publish waits, staged, for its
// journal write to commit before anyone can receive it; deliveries, delays
// and acks are written through; a restart's restore brings messages back with
// their attempts. The journal here records calls (the LMDB one is exercised
// end to end by the integration tests against a real sluiced).
#include "engine_fixtures.hpp"

namespace sluice::test {
namespace {

engine::QueueOptions durable_options() {
  engine::QueueOptions o;
  o.durable = true;
  return o;
}

}  // namespace

TEST_CASE("durable: without a journal no queue can be durable") {
  Engine e;
  auto& q = e.queue("q");
  CHECK(e.reconfigure(q, durable_options(), 0).code == errc::invalid_argument);
  CHECK_FALSE(q.durable());
}

TEST_CASE("durable: a publish is delivered only once its write is committed, in order") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto& q = e.declare("q", durable_options());
  REQUIRE(q.durable());
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  const auto a = e.publish(q, encode("a"), 0, 0).id;
  const auto seq_a = journal.seq;
  const auto b = e.publish(q, encode("b"), 0, 0).id;
  CHECK(sink.got.empty());
  CHECK(q.counters().staged == 2);
  CHECK(q.counters().messages() == 2);  // staged messages count against capacity
  e.committed(seq_a, 1);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].payload == "a");
  CHECK(sink.got[0].delivery.message_id == a);
  e.committed(journal.seq, 2);
  REQUIRE(sink.got.size() == 2);
  CHECK(sink.got[1].delivery.message_id == b);
  CHECK(q.counters().staged == 0);
}

TEST_CASE("durable: deliveries, delays and acks are written through, memory queues write nothing") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto& q = e.declare("q", durable_options());
  auto& mem = e.queue("mem");
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  subscribe(e, mem, sink, 10, 0, 0, 2);
  const auto id = e.publish(q, encode("x"), 0, 0).id;
  e.publish(mem, encode("m"), 0, 0);
  e.committed(journal.seq, 0);
  REQUIRE(sink.got.size() == 2);
  auto calls = journal.take();
  CHECK(calls == std::vector<std::string>{"stored q " + std::to_string(id) + " x",
                                          "delivered " + std::to_string(id) + " 1"});
  const auto& d = sink.got[0].delivery.message_id == id ? sink.got[0] : sink.got[1];
  REQUIRE(e.nack(sink, id, d.delivery.lease_token, 5 * kSecond, kSecond) == errc::ok);
  CHECK(journal.take() == std::vector<std::string>{"attempted " + std::to_string(id) + " 1 " +
                                                   std::to_string(6 * kSecond)});
  e.advance(6 * kSecond);
  CHECK(sink.got.size() == 2);  // due, but its attempt record is not on disk yet
  e.committed(journal.seq, 6 * kSecond);
  REQUIRE(sink.got.size() == 3);
  CHECK(sink.got[2].delivery.attempt == 2);
  journal.take();
  REQUIRE(e.ack(sink, id, sink.got[2].delivery.lease_token, 6 * kSecond) == errc::ok);
  CHECK(journal.take() == std::vector<std::string>{"removed " + std::to_string(id)});
  const auto& m = sink.got[0].delivery.message_id == id ? sink.got[1] : sink.got[0];
  REQUIRE(e.ack(sink, m.delivery.message_id, m.delivery.lease_token, 6 * kSecond) == errc::ok);
  CHECK(journal.take().empty());
}

TEST_CASE("durable: restored messages keep their ids, attempts and retry times") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto& q = e.declare("q", durable_options());
  e.restore(q, 7, encode("seven"), 111, 2, 0, 0, 0);
  e.restore(q, 9, encode("nine"), 222, 1, 5 * kSecond, 0, 0);
  e.set_next_id(100);
  CHECK(q.counters().ready == 1);
  CHECK(q.counters().delayed == 1);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].delivery.message_id == 7);
  CHECK(sink.got[0].delivery.attempt == 3);
  CHECK(sink.got[0].delivery.publish_time_us == 111);
  e.advance(5 * kSecond);
  REQUIRE(sink.got.size() == 2);
  CHECK(sink.got[1].delivery.message_id == 9);
  CHECK(sink.got[1].delivery.attempt == 2);
  CHECK(e.publish(q, encode("new"), 5 * kSecond, 0).id >= 100);
  // Restored messages are durable: their ack goes to the journal.
  journal.take();
  REQUIRE(e.ack(sink, 7, sink.got[0].delivery.lease_token, 5 * kSecond) == errc::ok);
  CHECK(journal.take() == std::vector<std::string>{"removed 7"});
}

TEST_CASE("durable: a full store holds back publishes to durable queues only") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto reject = durable_options();
  reject.overflow = engine::Overflow::reject;
  auto& q = e.declare("q", reject);
  auto& mem = e.queue("mem");
  e.set_storage_full(true, 0);
  const auto refused = e.admit(q, 1, 0);
  CHECK(refused.code == errc::queue_full);
  CHECK(refused.retry_after > 0);
  CHECK(std::string(refused.detail).find("storage") != std::string::npos);
  CHECK(e.admit(mem, 1, 0).code == errc::ok);
  e.set_storage_full(false, 1);
  CHECK(e.admit(q, 1, 1).code == errc::ok);
}

TEST_CASE("durable: a blocked producer of a durable queue is let go when storage has room") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto& q = e.declare("q", durable_options());
  struct Waiter final : engine::PublishWaiter {
    int rooms = 0;
    void room(engine::Queue&) override { ++rooms; }
  } waiter;
  e.set_storage_full(true, 0);
  REQUIRE(e.admit(q, 1, 0).code == errc::queue_full);
  e.wait_for_room(q, waiter, 0);
  e.advance(10 * kSecond);
  CHECK(waiter.rooms == 0);  // no timer ends a storage wait
  e.set_storage_full(false, 10 * kSecond);
  CHECK(waiter.rooms == 1);
}

TEST_CASE("durable: after a restart an ordered key waits for its message that was retrying") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto o = durable_options();
  o.ordered = true;
  auto& q = e.declare("q", o);
  const std::string a = with_headers("a", {{"sluice-key", "k"}});
  const std::string b = with_headers("b", {{"sluice-key", "k"}});
  // a failed once and waits out its backoff until 5 s; b was never delivered.
  e.restore(q, 1, a, 0, 1, 5 * kSecond, 0, 0);
  e.restore(q, 2, b, 0, 0, 0, 0, 0);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  CHECK(sink.got.empty());  // b must not overtake a
  e.advance(5 * kSecond);
  auto got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "a");
  REQUIRE(e.ack(sink, 1, got[0].delivery.lease_token, 5 * kSecond) == errc::ok);
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "b");
}

TEST_CASE(
    "durable: a delivery the restart interrupted is a failed attempt - retried after its backoff") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto o = durable_options();
  o.retry.max_attempts = 3;
  o.retry.initial_backoff = 2 * kSecond;
  o.retry.jitter = engine::Jitter::none;
  auto& q = e.declare("q", o);
  // Delivered once (out when the broker stopped), and never delivered.
  e.restore(q, 7, encode("seven"), 0, 1, 0, 0, 0, /*interrupted=*/true);
  e.restore(q, 8, encode("eight"), 0, 0, 0, 0, 0);
  e.set_next_id(100);
  e.finish_recovery(0);
  CHECK(q.counters().delayed == 1);
  CHECK(journal.take() == std::vector<std::string>{"attempted 7 1 " + std::to_string(2 * kSecond)});
  e.committed(journal.seq, 0);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].delivery.message_id == 8);
  e.advance(2 * kSecond);
  REQUIRE(sink.got.size() == 2);
  CHECK(sink.got[1].delivery.message_id == 7);
  CHECK(sink.got[1].delivery.attempt == 2);
}

TEST_CASE(
    "durable: a restart never gives a message more than max_attempts - the last goes to the DLQ") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto o = durable_options();
  o.retry.max_attempts = 1;
  o.ordered = true;
  auto& q = e.declare("q", o);
  const std::string a = with_headers("a", {{"sluice-key", "k"}});
  const std::string b = with_headers("b", {{"sluice-key", "k"}});
  e.restore(q, 1, a, 0, 1, 0, 0, 0, /*interrupted=*/true);
  e.restore(q, 2, b, 0, 0, 0, 0, 0);
  e.set_next_id(100);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  CHECK(sink.got.empty());  // b waits behind a, whose delivery was out
  e.finish_recovery(0);
  CHECK(journal.take() ==
        std::vector<std::string>{"dead_lettered 1 broker restarted during delivery"});
  CHECK(q.counters().dead_lettering == 1);
  CHECK(sink.got.empty());  // a leaves its key only once the DLQ entry is written
  e.committed(journal.seq, 0);
  CHECK(q.counters().dead_lettered_total == 1);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].payload == "b");
  CHECK(sink.got[0].delivery.attempt == 1);
}

TEST_CASE(
    "durable: after a restart an ordered key waits for its later-published message that was out") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto o = durable_options();
  o.ordered = true;
  o.retry.initial_backoff = 2 * kSecond;
  o.retry.jitter = engine::Jitter::none;
  auto& q = e.declare("q", o);
  const std::string c = with_headers("c", {{"sluice-key", "k"}});
  const std::string b = with_headers("b", {{"sluice-key", "k"}});
  // c (id 1) was published with a delay that ran out meanwhile; b (id 2) went
  // first and was out when the broker stopped. Restored in id order.
  e.restore(q, 1, c, 0, 0, 0, 0, 0);
  e.restore(q, 2, b, 0, 1, 0, 0, 0, /*interrupted=*/true);
  e.set_next_id(100);
  e.finish_recovery(0);
  e.committed(journal.seq, 0);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  CHECK(sink.got.empty());  // b is still the key's message out: c waits
  e.advance(2 * kSecond);
  auto got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "b");
  CHECK(got[0].delivery.attempt == 2);
  REQUIRE(e.ack(sink, 2, got[0].delivery.lease_token, 2 * kSecond) == errc::ok);
  got = sink.take();
  REQUIRE(got.size() == 1);
  CHECK(got[0].payload == "c");
}

TEST_CASE("durable: a consumer that disconnects puts its messages back in line, not out") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto& q = e.declare("q", durable_options());
  const auto id = e.publish(q, encode("x"), 0, 0).id;
  e.committed(journal.seq, 0);
  RecordingSink sink;
  auto* consumer = subscribe(e, q, sink, 10);
  REQUIRE(sink.got.size() == 1);
  journal.take();
  e.disconnect(*consumer, kSecond);
  // Its attempt counted and stored as back in line: a restart now does not fail it again.
  CHECK(journal.take() == std::vector<std::string>{"attempted " + std::to_string(id) + " 1 0"});
}

TEST_CASE("durable: a retry is not delivered before its attempt record is on disk") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  auto o = durable_options();
  o.retry.initial_backoff = 1000;  // 1 ms: shorter than a commit
  o.retry.jitter = engine::Jitter::none;
  auto& q = e.declare("q", o);
  const auto id = e.publish(q, encode("x"), 0, 0).id;
  e.committed(journal.seq, 0);
  RecordingSink sink;
  auto* consumer = subscribe(e, q, sink, 10);
  REQUIRE(sink.got.size() == 1);
  // A nack: attempt 1's failure is written; attempt 2 waits for that write,
  // even past its backoff, so a crash can never bring back attempt 1's state
  // after the consumer has seen attempt 2.
  REQUIRE(e.nack(sink, id, sink.got[0].delivery.lease_token, 0, 0) == errc::ok);
  e.advance(kSecond);
  CHECK(sink.got.size() == 1);
  CHECK(q.counters().delayed == 1);
  e.committed(journal.seq, kSecond);
  REQUIRE(sink.got.size() == 2);
  CHECK(sink.got[1].delivery.attempt == 2);
  CHECK(q.counters().delayed == 0);
  // The same for a consumer that disconnects: back first in line once written.
  e.disconnect(*consumer, 2 * kSecond);
  RecordingSink other;
  subscribe(e, q, other, 10, 0, 2 * kSecond, 2);
  CHECK(other.got.empty());
  e.committed(journal.seq, 2 * kSecond);
  REQUIRE(other.got.size() == 1);
  CHECK(other.got[0].delivery.attempt == 3);
}

TEST_CASE("lifecycle: purge drops ready messages of plain and keyed queues, in one write") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  engine::QueueOptions keyed = durable_options();
  keyed.ordered = true;
  for (auto* options : {&keyed, static_cast<engine::QueueOptions*>(nullptr)}) {
    auto& q = e.declare(options ? "keyed" : "plain", options ? *options : durable_options());
    RecordingSink sink;
    auto* consumer = subscribe(e, q, sink, 1);
    for (int i = 0; i < 6; ++i)
      e.publish(q, with_headers("m" + std::to_string(i), {{"sluice-key", std::to_string(i % 3)}}),
                0, 0);
    e.committed(journal.seq, 1);
    REQUIRE(sink.got.size() == 1);  // one in flight stays, and settles as usual
    journal.take();
    CHECK(e.purge(q, 2) == 5);
    const auto calls = journal.take();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].rfind("purged " + q.name() + " ", 0) == 0);
    CHECK(q.counters().ready == 0);
    CHECK(q.counters().messages() == 1);
    CHECK(q.counters().bytes > 0);  // the one left
    const auto& d = sink.got[0].delivery;
    CHECK(e.ack(sink, d.message_id, d.lease_token, 3) == errc::ok);
    CHECK(q.counters().messages() == 0);
    CHECK(sink.got.size() == 1);  // nothing left to deliver
    e.publish(q, encode("later"), 4, 0);
    e.committed(journal.seq, 5);
    CHECK(sink.got.size() == 2);  // the queue works on
    e.unsubscribe(*consumer);
  }
}

TEST_CASE("lifecycle: remove_queue ends consumers and drops every state of message") {
  Engine e;
  RecordingJournal journal;
  e.set_journal(&journal);
  engine::QueueOptions o = durable_options();
  o.resequence = true;
  o.gap_timeout = kSecond;
  auto& q = e.declare("doomed", o);
  auto& other = e.queue("other");
  RecordingSink sink;
  subscribe(e, q, sink, 1);
  const auto in_flight = e.publish(q, encode("a"), 0, 0).id;
  e.publish(q, encode("b"), 0, 0);                                                    // ready
  e.publish(q, with_headers("c", {{"sluice-delay-ms", "60000"}}), 0, 0);              // delayed
  e.publish(q, with_headers("d", {{"sluice-key", "k"}, {"sluice-seq", "5"}}), 0, 0);  // held
  e.publish(other, encode("x"), 0, 0);
  // Writes under way: not yet.
  CHECK(e.can_remove(q, true).code == errc::queue_in_use);
  e.committed(journal.seq, 1);
  REQUIRE(sink.got.size() == 1);
  CHECK(sink.got[0].delivery.message_id == in_flight);
  CHECK(q.counters().held == 1);
  CHECK(q.counters().delayed == 1);
  CHECK(e.can_remove(q, false).code == errc::queue_in_use);  // holds messages
  CHECK_FALSE(e.can_remove(q, true));
  const auto removals = e.removals();
  const auto token = sink.got[0].delivery.lease_token;
  journal.take();
  CHECK(e.remove_queue(q, 2) == 4);
  CHECK(e.removals() == removals + 1);
  CHECK(sink.ended_consumers.size() == 1);
  CHECK(e.find("doomed") == nullptr);
  CHECK(e.messages() == 1);  // only other's
  const auto calls = journal.take();
  REQUIRE(calls.size() == 1);
  CHECK(calls[0].rfind("queue_removed doomed", 0) == 0);
  CHECK(std::count(calls[0].begin(), calls[0].end(), ' ') == 5);  // four ids
  // Its lease is stale, and time passing touches nothing of it.
  CHECK(e.ack(sink, in_flight, token, 3) == errc::stale_lease);
  e.advance(120 * kSecond);
  CHECK(e.messages() == 1);
  // An empty queue with no consumers goes without force.
  auto& empty = e.queue("empty");
  CHECK_FALSE(e.can_remove(empty, false));
  CHECK(e.remove_queue(empty, 3) == 0);
  CHECK(e.find("empty") == nullptr);
}

TEST_CASE("lifecycle: a purge keeps an ordered key blocked while its message is out") {
  Engine e;
  engine::QueueOptions o;
  o.ordered = true;
  auto& q = e.declare("q", o);
  RecordingSink sink;
  subscribe(e, q, sink, 10);
  const auto key = [](std::string payload) {
    return with_headers(std::move(payload), {{"sluice-key", "k"}});
  };
  e.publish(q, key("m1"), 0, 0);
  e.publish(q, key("m2"), 0, 0);
  REQUIRE(sink.got.size() == 1);  // m1 out: k is blocked
  CHECK(e.purge(q, 1) == 1);      // m2
  e.publish(q, key("m3"), 2, 0);
  CHECK(sink.got.size() == 1);  // still blocked behind m1
  const auto& d = sink.got[0].delivery;
  CHECK(e.ack(sink, d.message_id, d.lease_token, 3) == errc::ok);
  REQUIRE(sink.got.size() == 2);
  CHECK(sink.got[1].payload == "m3");
}

}  // namespace sluice::test
