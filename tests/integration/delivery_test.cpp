// Delivery semantics against the real sluiced: retries at the configured
// backoff, then the dead-letter queue on LMDB surviving kill -9 and a redrive;
// the resequencer putting four producers' shuffled sequence numbers back in
// order and giving up a gap; dedup ids within and after their window.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_broker.hpp"

namespace {

std::uint64_t dead_letters(sluice::client::Connection& conn, const std::string& queue) {
  auto stats = conn.stats(queue);
  return stats && !stats->empty() ? stats->front().dead_letters : 0;
}

sluice::client::DeadLetterQuery query(sluice::client::DeadLetterQuery::Op op,
                                      const std::string& queue,
                                      std::vector<std::uint64_t> ids = {}) {
  sluice::client::DeadLetterQuery q;
  q.op = op;
  q.queue = queue;
  q.ids = std::move(ids);
  return q;
}

using Op = sluice::client::DeadLetterQuery::Op;

}  // namespace

TEST_CASE(
    "dlq: a message nacked every time is retried at the backoff then dead-lettered and "
    "kept across kill -9 and redriven with attempt 1") {
  sluice::test::ScopedTempDir dir("sluice-delivery");
  const std::vector<std::string> args = {"--set", "storage.path=" + (dir.path / "data").string(),
                                         "--set", "queues.jobs.max_attempts=4",
                                         "--set", "queues.jobs.retry_backoff=200ms",
                                         "--set", "queues.jobs.retry_multiplier=2",
                                         "--set", "queues.jobs.retry_jitter=none"};
  std::uint64_t entry_id = 0;
  std::uint64_t message_id = 0;
  {
    TestBroker broker(args);
    auto conn = broker.connect();
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<std::pair<LeaseHandle, std::chrono::steady_clock::time_point>> got;
    std::vector<std::uint32_t> attempts;
    REQUIRE(conn->subscribe("jobs", {.max_in_flight = 1}, [&](const Delivery& d) {
      std::lock_guard lk(mutex);
      got.emplace_back(sluice::client::handle(d), std::chrono::steady_clock::now());
      attempts.push_back(d.attempt);
      cv.notify_all();
      return Disposition::manual;
    }));
    auto published = conn->publish(
        "jobs", {"charge card", {{"sluice-correlation-id", "corr-7"}, {"tenant", "acme"}}});
    REQUIRE(published);
    message_id = *published;
    for (std::size_t n = 1; n <= 4; ++n) {
      LeaseHandle lease;
      {
        std::unique_lock lk(mutex);
        REQUIRE(cv.wait_for(lk, 5s, [&] { return got.size() >= n; }));
        lease = got[n - 1].first;
      }
      REQUIRE_FALSE(conn->nack(lease, sluice::client::NackOptions{
                                          0ms, "attempt " + std::to_string(n) + " failed", false}));
    }
    REQUIRE(eventually([&] { return dead_letters(*conn, "jobs") == 1; }));
    std::this_thread::sleep_for(1s);  // nothing more comes
    std::lock_guard lk(mutex);
    CHECK(attempts == std::vector<std::uint32_t>{1, 2, 3, 4});
    // Backoff 200 ms, ×2: the next attempt comes that long after the nack (±50 ms).
    const std::chrono::milliseconds expected[] = {200ms, 400ms, 800ms};
    for (std::size_t i = 0; i + 1 < got.size(); ++i) {
      CAPTURE(i);
      const auto gap =
          std::chrono::duration_cast<std::chrono::milliseconds>(got[i + 1].second - got[i].second);
      CHECK(gap >= expected[i]);
      CHECK(gap <= expected[i] + 50ms);
    }
    auto list = conn->dead_letters(query(Op::list, "jobs"));
    REQUIRE(list);
    REQUIRE(list->entries.size() == 1);
    const auto& e = list->entries[0];
    CHECK(e.message_id == message_id);
    CHECK(e.attempts == 4);
    CHECK(e.reason == "attempt 4 failed");
    CHECK(e.message.payload == "charge card");
    CHECK(e.first_failure_us > 0);
    CHECK(e.last_failure_us - e.first_failure_us >= 1'300'000);  // 200 + 400 + 800 ms, and work
    entry_id = e.entry_id;
    broker.kill9();
  }
  TestBroker broker(args);
  auto conn = broker.connect();
  CHECK(dead_letters(*conn, "jobs") == 1);
  auto shown = conn->dead_letters(query(Op::show, "jobs", {entry_id}));
  REQUIRE(shown);
  REQUIRE(shown->entries.size() == 1);
  CHECK(shown->entries[0].message_id == message_id);
  CHECK(shown->entries[0].attempts == 4);
  CHECK(shown->entries[0].reason == "attempt 4 failed");
  bool correlated = false;
  for (const auto& [k, v] : shown->entries[0].message.headers)
    correlated |= k == "sluice-correlation-id" && v == "corr-7";
  CHECK(correlated);
  // sluicectl sees it too.
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address();
  const auto listed = sluice::test::run_command(ctl + " dlq list jobs 2>/dev/null");
  CHECK(listed.status == 0);
  CHECK(listed.out.find(std::to_string(entry_id) + " " + std::to_string(message_id) + " 4 ") == 0);
  CHECK(listed.out.find("attempt 4 failed") != std::string::npos);

  std::mutex mutex;
  std::vector<std::pair<std::string, std::uint32_t>> redelivered;
  REQUIRE(conn->subscribe("jobs", {.max_in_flight = 4}, [&](const Delivery& d) {
    std::lock_guard lk(mutex);
    redelivered.emplace_back(std::string(d.payload), d.attempt);
    return Disposition::ack;
  }));
  const auto redrive =
      sluice::test::run_command(ctl + " dlq redrive jobs " + std::to_string(entry_id));
  CHECK(redrive.status == 0);
  CHECK(redrive.out == "redriving 1\n");
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return !redelivered.empty();
  }));
  {
    std::lock_guard lk(mutex);
    CHECK(redelivered[0] == std::pair<std::string, std::uint32_t>{"charge card", 1});
  }
  CHECK(eventually([&] { return dead_letters(*conn, "jobs") == 0; }));
  auto missing = conn->dead_letters(query(Op::show, "jobs", {entry_id}));
  CHECK(missing.error().code == sluice::errc::not_found);
}

TEST_CASE(
    "resequencer: 1000 sequence numbers from 4 producers in shuffled order come out in "
    "order and a gap is given up after the timeout") {
  TestBroker broker({"--set", "queues.seq.resequence=on", "--set", "queues.seq.gap_timeout=500ms"});
  auto consumer = broker.connect("consumer");
  std::mutex mutex;
  std::vector<int> order;
  REQUIRE(consumer->subscribe("seq", {.max_in_flight = 64}, [&](const Delivery& d) {
    std::lock_guard lk(mutex);
    order.push_back(std::stoi(std::string(d.payload)));
    return Disposition::ack;
  }));
  std::vector<int> numbers(1000);
  for (int i = 0; i < 1000; ++i) numbers[static_cast<std::size_t>(i)] = i + 1;
  std::mt19937 rng(11);
  std::shuffle(numbers.begin(), numbers.end(), rng);
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      auto conn = broker.connect("producer" + std::to_string(p));
      for (std::size_t i = static_cast<std::size_t>(p); i < numbers.size(); i += 4) {
        const std::string n = std::to_string(numbers[i]);
        conn->publish_async("seq", {n, {{"sluice-key", "orders"}, {"sluice-seq", n}}}, {});
      }
      CHECK(conn->wait_confirms(10s));
    });
  }
  for (auto& t : producers) t.join();
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return order.size() == 1000;
  }));
  {
    std::lock_guard lk(mutex);
    std::vector<int> expected(1000);
    for (int i = 0; i < 1000; ++i) expected[static_cast<std::size_t>(i)] = i + 1;
    CHECK(order == expected);
  }
  // 1001 never comes: 1002 waits one gap timeout, then goes, and the gap is counted.
  auto producer = broker.connect("late");
  const auto sent = std::chrono::steady_clock::now();
  REQUIRE(producer->publish("seq", {"1002", {{"sluice-key", "orders"}, {"sluice-seq", "1002"}}}));
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return order.size() == 1001;
  }));
  CHECK(std::chrono::steady_clock::now() - sent >= 450ms);
  {
    std::lock_guard lk(mutex);
    CHECK(order.back() == 1002);
  }
  auto stats = producer->stats("seq");
  REQUIRE(stats);
  CHECK(stats->front().sequence_gaps_total == 1);
  CHECK(stats->front().held == 0);
}

TEST_CASE("dedup: the same dedup id twice within the window is delivered once and after it twice") {
  TestBroker broker({"--set", "queues.dd.dedup_window=1s"});
  auto conn = broker.connect();
  std::mutex mutex;
  std::vector<std::uint64_t> delivered;
  REQUIRE(conn->subscribe("dd", {.max_in_flight = 8}, [&](const Delivery& d) {
    std::lock_guard lk(mutex);
    delivered.push_back(d.message_id);
    return Disposition::ack;
  }));
  const sluice::client::Message m{"pay invoice 9", {{"sluice-dedup-id", "invoice-9"}}};
  auto first = conn->publish_checked("dd", m);
  auto second = conn->publish_checked("dd", m);
  REQUIRE(first);
  REQUIRE(second);
  CHECK_FALSE(first->duplicate);
  CHECK(second->duplicate);
  CHECK(second->id == first->id);
  std::this_thread::sleep_for(1100ms);
  auto third = conn->publish_checked("dd", m);
  REQUIRE(third);
  CHECK_FALSE(third->duplicate);
  CHECK(third->id != first->id);
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return delivered.size() == 2;
  }));
  std::this_thread::sleep_for(200ms);
  std::lock_guard lk(mutex);
  CHECK(delivered == std::vector<std::uint64_t>{first->id, third->id});
  auto stats = conn->stats("dd");
  REQUIRE(stats);
  CHECK(stats->front().duplicates_total == 1);
}

TEST_CASE(
    "headers: bad sluice-* headers are refused with invalid_argument and nothing is enqueued") {
  TestBroker broker;
  auto conn = broker.connect();
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"sluice-seq", "0"},
                                                        {"sluice-seq", "12x"},
                                                        {"sluice-delay-ms", "-5"},
                                                        {"sluice-delay-ms", "99999999999999"},
                                                        {"sluice-not-before-ms", "soon"},
                                                        {"sluice-not-before-ms", "9999999999999"},
                                                        {"sluice-not-before-ms", "4102444700000"},
                                                        {"sluice-dedup-id", ""}}) {
    CAPTURE(key);
    CAPTURE(value);
    auto r = conn->publish("bad", {"x", {{key, value}}});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == sluice::errc::invalid_argument);
  }
  auto stats = conn->stats("bad");
  REQUIRE(stats);
  CHECK((stats->empty() || stats->front().published_total == 0));
  CHECK(conn->ping().code == sluice::errc::ok);
}

TEST_CASE("workers: handlers run off the I/O thread, N at once, ack on return, nack on throw") {
  TestBroker broker({"--set", "queues.w.max_attempts=1"});
  auto producer = broker.connect("producer");
  auto consumer = broker.connect("consumer");
  constexpr int kMessages = 40;
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < kMessages; ++i)
    batch.push_back({i % 10 == 9 ? "bad " + std::to_string(i) : "ok " + std::to_string(i), {}});
  REQUIRE(producer->publish_batch("w", batch).ok());
  std::atomic<int> running{0}, most{0}, done{0}, blocking_calls_ok{0};
  sluice::client::SubscribeOptions options;
  options.workers = 4;
  options.max_in_flight = 1000;  // the workers decide: 4
  auto sub = consumer->subscribe("w", options, [&](const sluice::client::Delivery& d) {
    const int now = ++running;
    for (int seen = most.load(); now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    // A blocking call from the handler: refused on the I/O thread, fine on a worker.
    if (!consumer->ping()) ++blocking_calls_ok;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    const std::string payload(d.payload);
    --running;
    ++done;
    if (payload.starts_with("bad")) throw std::runtime_error("cannot parse " + payload);
    return sluice::client::Disposition::ack;
  });
  REQUIRE(sub.ok());
  REQUIRE(eventually([&] { return done.load() == kMessages; }, std::chrono::seconds(30)));
  CHECK(most.load() == 4);  // never more than the workers, and all of them busy
  CHECK(blocking_calls_ok.load() == kMessages);
  CHECK(consumer->subscription_stats(*sub).peak_held <= 4);
  // 36 acked; the 4 that threw were nacked with the exception's message, and with one
  // attempt allowed they are dead letters carrying it.
  REQUIRE(eventually([&] {
    auto s = producer->stats("w");
    return s.ok() && s->front().acked_total == 36 && s->front().dead_letters == 4;
  }));
  // The count includes entries whose write is still being committed; a list
  // reads what is on disk, so it may lag by a commit.
  sluice::client::DeadLetterQuery q;
  q.queue = "w";
  sluice::client::Result<sluice::client::DeadLetterResult> dead = sluice::client::Error{};
  REQUIRE(eventually([&] {
    dead = producer->dead_letters(q);
    return dead.ok() && dead->entries.size() == 4;
  }));
  for (const auto& e : dead->entries) {
    CAPTURE(e.reason);
    CHECK(e.reason.starts_with("cannot parse bad "));
  }
  CHECK_FALSE(consumer->unsubscribe(*sub));
}
