// Durable queues against the real sluiced and a real LMDB data directory:
// confirmed publishes survive kill -9 with their attempt counts and retry
// times, a directory in use is refused, a full store pushes back and then
// recovers, and a crash loop loses nothing that was confirmed.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "http_client.hpp"
#include "test_broker.hpp"

using sluice::client::Connection;

namespace {

/// A data directory for one test, removed at the end.
struct DataDir {
  sluice::test::ScopedTempDir scratch{"sluice-durable"};
  std::filesystem::path path = scratch.path / "data";
};

std::vector<std::string> durable_args(const DataDir& dir, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"--set", "storage.path=" + dir.path.string(), "--set",
                                   "queues.d.durability=durable"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

/// True once queue "d" holds nothing (ready, delayed, out or being committed), within 60 s.
bool queue_drained(Connection& conn) {
  return eventually(
      [&] {
        auto s = conn.stats("d");
        return s.ok() && !s->empty() &&
               (*s)[0].ready + (*s)[0].delayed + (*s)[0].in_flight + (*s)[0].staged == 0;
      },
      60s);
}

/// Publishes `n` messages ("<i><payload>") to "d" without waiting, counting
/// the confirms and the refusals as they come.
void publish_counted(Connection& producer, int n, const std::string& payload,
                     std::atomic<int>& confirmed, std::atomic<int>& failed) {
  for (int i = 0; i < n; ++i)
    producer.publish_async("d", std::to_string(i) + payload,
                           [&](const sluice::client::Error& e, std::uint64_t) {
                             (e ? failed : confirmed).fetch_add(1);
                           });
}

/// Publishes one message and waits for its confirm: since commits go in
/// order, everything this connection's broker was told before is durable too.
void barrier(Connection& conn) {
  REQUIRE(conn.publish("d", {"barrier", {}}).ok());
}

struct Received {
  std::mutex mutex;
  std::map<std::string, std::vector<std::uint32_t>> attempts;  // payload -> attempts seen
  std::size_t count() {
    std::lock_guard lk(mutex);
    std::size_t n = 0;
    for (const auto& [p, a] : attempts) n += a.size();
    return n;
  }
};

}  // namespace

TEST_CASE("durable: confirmed messages survive kill -9 with their attempts and retry times") {
  DataDir dir;
  std::map<std::string, std::uint64_t> ids;
  std::set<std::string> acked, held;
  {
    TestBroker broker(durable_args(dir));
    auto producer = broker.connect("producer");
    REQUIRE(producer->publish("d", {"later", {}}).ok());
    std::vector<sluice::client::Message> batch;
    for (int i = 0; i < 100; ++i) batch.push_back({"m" + std::to_string(i), {}});
    auto confirmed = producer->publish_batch("d", batch);
    REQUIRE(confirmed.ok());
    for (int i = 0; i < 100; ++i) ids["m" + std::to_string(i)] = (*confirmed)[std::size_t(i)];

    // A consumer acks five messages, holds ten unsettled, and puts "later" off by 3 s.
    auto consumer = broker.connect("consumer");
    std::mutex mutex;
    std::optional<sluice::client::LeaseHandle> later;
    REQUIRE(consumer
                ->subscribe("d", {.max_in_flight = 10},
                            [&](const Delivery& d) {
                              std::lock_guard lk(mutex);
                              if (d.payload == "later") {
                                later = sluice::client::handle(d);
                                return Disposition::manual;
                              }
                              if (acked.size() < 5) {
                                acked.insert(std::string(d.payload));
                                return Disposition::ack;
                              }
                              held.insert(std::string(d.payload));
                              return Disposition::manual;
                            })
                .ok());
    REQUIRE(eventually([&] {
      std::lock_guard lk(mutex);
      return later.has_value();
    }));
    REQUIRE(!consumer->nack(*later, 3000ms));
    REQUIRE(eventually([&] {
      std::lock_guard lk(mutex);
      return held.size() == 10;
    }));
    REQUIRE(eventually([&] {
      auto s = consumer->stats("d");
      return s.ok() && !s->empty() && (*s)[0].acked_total == 5;
    }));
    barrier(*producer);
    broker.kill9();
  }
  const auto restarted = std::chrono::steady_clock::now();
  TestBroker broker(durable_args(dir));
  CHECK(broker.log().find("\"event\":\"recovered\"") != std::string::npos);
  // sluicectl shows the storage: size, use against the limit, commits.
  const auto ctl = sluice::test::run_command(std::string(SLUICECTL_PATH) + " --broker " +
                                             broker.address() + " stats");
  CHECK(ctl.status == 0);
  CHECK(ctl.out.find("STORAGE  file ") != std::string::npos);
  CHECK(ctl.out.find("of 4096.0 MiB") != std::string::npos);
  CHECK(ctl.out.find("median batch") != std::string::npos);
  auto stats = broker.connect()->stats("d");
  REQUIRE(stats.ok());
  REQUIRE(stats->size() == 1);
  // later + 100 + barrier, less the five acked; "later" waits for its time,
  // and the ten held when the broker died wait out the backoff of that
  // failed attempt.
  CHECK((*stats)[0].ready + (*stats)[0].delayed == 97);
  CHECK((*stats)[0].delayed >= 1);

  Received got;
  std::map<std::string, std::uint64_t> id_after;
  auto consumer = broker.connect("after-restart");
  std::atomic<long long> later_after_ms{-1};
  REQUIRE(consumer
              ->subscribe("d", {.max_in_flight = 64},
                          [&](const Delivery& d) {
                            std::lock_guard lk(got.mutex);
                            got.attempts[std::string(d.payload)].push_back(d.attempt);
                            id_after[std::string(d.payload)] = d.message_id;
                            if (d.payload == "later")
                              later_after_ms =
                                  std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - restarted)
                                      .count();
                            return Disposition::ack;
                          })
              .ok());
  REQUIRE(eventually([&] { return got.count() == 97; }));
  std::lock_guard lk(got.mutex);
  for (const auto& payload : acked) CHECK(got.attempts.count(payload) == 0);
  for (int i = 0; i < 100; ++i) {
    const std::string payload = "m" + std::to_string(i);
    if (acked.count(payload)) continue;
    const auto& a = got.attempts[payload];
    REQUIRE(a.size() == 1);
    // Delivered once before the crash: that attempt counts.
    CHECK(a[0] == (held.count(payload) ? 2u : 1u));
    CHECK(id_after[payload] == ids[payload]);  // the same ids
  }
  // "later" kept its retry time across the restart (3 s from the nack, not from now).
  REQUIRE(got.attempts["later"].size() == 1);
  CHECK(got.attempts["later"][0] == 2);
  CHECK(later_after_ms.load() > 300);
  CHECK(later_after_ms.load() < 3500);
}

TEST_CASE("durable: a data directory is used by one sluiced at a time") {
  DataDir dir;
  TestBroker first(durable_args(dir));
  const auto second = sluice::test::run_command(
      std::string(SLUICED_PATH) +
      " --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --set storage.path=" + dir.path.string() +
      " 2>&1");
  CHECK(second.status == 2);
  CHECK(second.out.find("is in use by another sluiced (pid " + std::to_string(first.pid())) !=
        std::string::npos);
  CHECK(std::count(second.out.begin(), second.out.end(), '\n') == 1);  // one line
}

TEST_CASE("durable: a durable queue with storage.path = \"\" (memory only) is refused at start") {
  const auto result = sluice::test::run_command(std::string(SLUICED_PATH) +
                                                " --listen 127.0.0.1:0 --set storage.path= "
                                                "--set queues.d.durability=durable 2>&1");
  CHECK(result.status == 2);
  CHECK(result.out.find("queues.d.durability") != std::string::npos);
  CHECK(result.out.find("storage.path is \"\" (memory only)") != std::string::npos);
}

TEST_CASE("durable: a bare sluiced keeps its data in ./sluice-data, so a dead letter outlives it") {
  // No storage flag at all: the default data directory, in the working directory.
  sluice::test::ScopedTempDir cwd("sluice-bare");
  std::uint64_t entry = 0;
  for (int run = 0; run < 2; ++run) {
    CAPTURE(run);
    const auto port_file = cwd.path / ("port" + std::to_string(run));
    const pid_t pid = sluice::test::spawn({SLUICED_PATH, "--listen", "127.0.0.1:0", "--http-listen",
                                           "127.0.0.1:0", "--port-file", port_file.string()},
                                          cwd.path / ("sluiced" + std::to_string(run) + ".log"),
                                          STDERR_FILENO, cwd.path);
    std::uint16_t port = 0;
    REQUIRE(eventually([&] {
      std::ifstream f(port_file);
      return static_cast<bool>(f >> port);
    }));
    sluice::client::Options o;
    o.host = "127.0.0.1";
    o.port = port;
    auto connected = sluice::client::Connection::connect(o);
    REQUIRE(connected.ok());
    std::unique_ptr<Connection> conn = std::move(connected).value();
    sluice::client::DeadLetterQuery list;
    list.queue = "bare";
    if (run == 0) {
      REQUIRE(conn->publish("bare", sluice::test::text_message("poison")).ok());
      std::mutex mutex;
      std::optional<sluice::client::LeaseHandle> held;
      REQUIRE(conn->subscribe("bare", {},
                              [&](const sluice::client::Delivery& d) {
                                std::lock_guard lock(mutex);
                                held = sluice::client::handle(d);
                                return sluice::client::Disposition::manual;
                              })
                  .ok());
      REQUIRE(eventually([&] {
        std::lock_guard lock(mutex);
        return held.has_value();
      }));
      sluice::client::NackOptions poison;
      poison.reason = "bad";
      poison.dead_letter = true;
      REQUIRE_FALSE(conn->nack(*held, poison));
      REQUIRE(eventually([&] {
        auto r = conn->dead_letters(list);
        return r.ok() && r->entries.size() == 1;
      }));
      entry = conn->dead_letters(list)->entries.at(0).entry_id;
      // Created for it, readable by its user only.
      const auto perms = std::filesystem::status(cwd.path / "sluice-data").permissions();
      CHECK((perms & std::filesystem::perms::all) == std::filesystem::perms::owner_all);
    } else {
      auto r = conn->dead_letters(list);
      REQUIRE(r.ok());
      REQUIRE(r->entries.size() == 1);
      CHECK(r->entries[0].entry_id == entry);
      CHECK(r->entries[0].reason == "bad");
    }
    conn.reset();
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
  }
  std::ifstream log(cwd.path / "sluiced0.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK(text.find("\"event\":\"storage_default\"") != std::string::npos);
  CHECK(text.find((cwd.path / "sluice-data").string()) != std::string::npos);
}

TEST_CASE("durable: at storage.max_size publishes meet the overflow policy, then resume") {
  DataDir dir;
  const std::string payload(1000, 'x');
  SUBCASE("reject: queue_full naming storage, and nothing confirmed is lost") {
    TestBroker broker(
        durable_args(dir, {"--set", "storage.max_size=1MiB", "--set", "queues.d.overflow=reject"}));
    auto producer = broker.connect("producer");
    int confirmed = 0;
    sluice::client::Error refused;
    for (int i = 0; i < 5000 && !refused; ++i) {
      auto r = producer->publish("d", {payload, {}});
      if (r.ok())
        ++confirmed;
      else
        refused = r.error();
    }
    REQUIRE(refused.code == errc::queue_full);
    CHECK(refused.detail.find("storage is full") != std::string::npos);
    CHECK(confirmed > 100);
    auto storage = producer->storage_stats();
    REQUIRE(storage.ok());
    REQUIRE(storage->has_value());
    CHECK((*storage)->full);
    // A consumer frees space; publishing works again.
    std::atomic<int> consumed{0};
    auto consumer = broker.connect("consumer");
    REQUIRE(consumer
                ->subscribe("d", {.max_in_flight = 100},
                            [&](const Delivery&) {
                              consumed.fetch_add(1);
                              return Disposition::ack;
                            })
                .ok());
    REQUIRE(eventually([&] { return consumed >= confirmed; }));
    CHECK(eventually([&] { return producer->publish("d", {payload, {}}).ok(); }));
    CHECK(eventually([&] { return consumed == confirmed + 1; }));
    CHECK(broker.log().find("\"event\":\"storage_full\"") != std::string::npos);
  }
  SUBCASE("block: the producer waits, and every message arrives once room is made") {
    TestBroker broker(durable_args(dir, {"--set", "storage.max_size=1MiB"}));
    auto producer = broker.connect("producer");
    std::atomic<int> confirmed{0}, failed{0};
    constexpr int kMessages = 2000;  // ~2 MB: twice what fits
    publish_counted(*producer, kMessages, payload, confirmed, failed);
    std::this_thread::sleep_for(1s);
    CHECK(confirmed < kMessages);  // held back
    CHECK(failed == 0);
    Received got;
    auto consumer = broker.connect("consumer");
    REQUIRE(consumer
                ->subscribe("d", {.max_in_flight = 100},
                            [&](const Delivery& d) {
                              std::lock_guard lk(got.mutex);
                              got.attempts[std::string(d.payload.substr(0, 8))].push_back(1);
                              return Disposition::ack;
                            })
                .ok());
    const bool all_confirmed = producer->wait_confirms(30s);
    {
      auto admin = broker.connect("admin");
      auto q = admin->stats("d");
      auto st = admin->storage_stats();
      INFO("confirmed " << confirmed << " got " << got.count() << " staged "
                        << (q.ok() && !q->empty() ? (*q)[0].staged : 0) << " ready "
                        << (q.ok() && !q->empty() ? (*q)[0].ready : 0) << " storage used "
                        << (st.ok() && st->has_value() ? (*st)->used_bytes : 0) << " file "
                        << (st.ok() && st->has_value() ? (*st)->file_bytes : 0) << " waiting "
                        << (st.ok() && st->has_value() ? (*st)->waiting : 0) << " full "
                        << (st.ok() && st->has_value() ? (*st)->full : 0) << "\n"
                        << broker.log());
      REQUIRE(all_confirmed);
    }
    CHECK(confirmed == kMessages);
    CHECK(failed == 0);
    CHECK(eventually([&] { return got.count() == kMessages; }, 30s));
  }
}

// The crash test of the durability issue: producers and consumers run while
// sluiced is killed with SIGKILL at random moments, restarted on the same
// data directory each time. Every confirmed message must be delivered at
// some point; redeliveries (acks lost in a crash) are counted and printed.
TEST_CASE("durable: kill -9 at random moments loses no confirmed message") {
  DataDir dir;
  constexpr int kKills = 6;
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  INFO("seed " << seed);
  std::mutex mutex;
  std::set<std::string> confirmed;
  std::map<std::string, int> received;
  const auto consume = [&](const Delivery& d) {
    std::lock_guard lk(mutex);
    received[std::string(d.payload)]++;
    return Disposition::ack;
  };
  std::uint64_t published = 0;
  for (int round = 0; round <= kKills; ++round) {
    TestBroker broker(durable_args(dir));
    auto consumer = broker.connect("consumer");
    REQUIRE(consumer->subscribe("d", {.max_in_flight = 64}, consume).ok());
    if (round == kKills) {
      // The last start: drain everything, then check.
      REQUIRE(queue_drained(*broker.connect("stats")));
      break;
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> producers;
    for (int p = 0; p < 2; ++p) {
      producers.emplace_back([&, p, round] {
        auto conn = Connection::connect(broker.options());
        if (!conn.ok()) return;
        for (int i = 0; !stop; ++i) {
          if (i % 100 == 99)
            std::this_thread::sleep_for(5ms);  // ~20,000/s: still going at the kill
          std::string payload =
              "r" + std::to_string(round) + "p" + std::to_string(p) + "-" + std::to_string(i);
          (*conn)->publish_async("d", payload,
                                 [&, payload](const sluice::client::Error& e, std::uint64_t) {
                                   if (e) return;
                                   std::lock_guard lk(mutex);
                                   confirmed.insert(payload);
                                 });
          if (!(*conn)->connected()) break;
        }
        (*conn)->wait_confirms(5s);
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 1000));
    broker.kill9();
    stop = true;
    for (auto& t : producers) t.join();
    std::lock_guard lk(mutex);
    published = confirmed.size();
  }
  std::lock_guard lk(mutex);
  std::size_t lost = 0, duplicates = 0;
  for (const auto& payload : confirmed) {
    auto it = received.find(payload);
    if (it == received.end())
      ++lost;
    else if (it->second > 1)
      duplicates += static_cast<std::size_t>(it->second - 1);
  }
  std::printf(
      "crash test (seed %u): %d kills, %zu confirmed, %zu received, %zu lost, %zu redelivered\n",
      seed, kKills, confirmed.size(), received.size(), lost, duplicates);
  CHECK(published > 1000);
  CHECK(lost == 0);
}

TEST_CASE("durable: a delivery out at a restart is a failed attempt - never past max_attempts") {
  DataDir dir;
  for (const bool sigkill : {true, false}) {
    CAPTURE(sigkill);
    const auto args = durable_args(dir, {"--set", "queues.d.max_attempts=1"});
    std::uint64_t id = 0;
    {
      TestBroker broker(args);
      auto conn = broker.connect();
      auto published = conn->publish("d", {sigkill ? "killed" : "stopped", {}});
      REQUIRE(published.ok());
      id = *published;
      std::atomic<int> got{0};
      REQUIRE(conn->subscribe("d", {.max_in_flight = 1},
                              [&](const Delivery&) {
                                got++;
                                return Disposition::manual;  // never settled
                              })
                  .ok());
      REQUIRE(eventually([&] { return got == 1; }));
      barrier(*broker.connect("barrier"));  // the delivery's record is on disk
      if (sigkill)
        broker.kill9();
      else
        CHECK(broker.stop() == 0);
    }
    TestBroker broker(args);
    auto conn = broker.connect();
    // Not delivered again: its one attempt was used up by the delivery the restart ended.
    std::atomic<int> redelivered{0};
    REQUIRE(conn->subscribe("d", {.max_in_flight = 10},
                            [&](const Delivery& d) {
                              if (d.payload != "barrier") redelivered++;
                              return Disposition::ack;
                            })
                .ok());
    sluice::client::DeadLetterQuery list;
    list.queue = "d";
    sluice::client::DeadLetter entry;
    REQUIRE(eventually([&] {
      auto r = conn->dead_letters(list);
      if (!r.ok()) return false;
      for (const auto& e : r->entries)
        if (e.message_id == id) entry = e;
      return entry.message_id == id;
    }));
    CHECK(entry.attempts == 1);
    // SIGTERM ends the consumer's connection first, a failed attempt of its own.
    if (sigkill)
      CHECK(entry.reason == "broker restarted during delivery");
    else
      CHECK((entry.reason == "broker restarted during delivery" ||
             entry.reason == "consumer disconnected"));
    std::this_thread::sleep_for(300ms);
    CHECK(redelivered == 0);
  }
}

TEST_CASE(
    "durable: a restart during a delivery costs one attempt, the rest come back after backoff") {
  DataDir dir;
  const auto args =
      durable_args(dir, {"--set", "queues.d.max_attempts=3", "--set", "queues.d.retry_backoff=1s",
                         "--set", "queues.d.retry_jitter=none"});
  {
    TestBroker broker(args);
    auto conn = broker.connect();
    REQUIRE(conn->publish("d", {"held", {}}).ok());
    std::atomic<int> got{0};
    REQUIRE(conn->subscribe("d", {.max_in_flight = 1},
                            [&](const Delivery&) {
                              got++;
                              return Disposition::manual;
                            })
                .ok());
    REQUIRE(eventually([&] { return got == 1; }));
    barrier(*broker.connect("barrier"));
    broker.kill9();
  }
  TestBroker broker(args);
  auto conn = broker.connect();
  auto stats = conn->stats("d");
  REQUIRE(stats.ok());
  REQUIRE(stats->size() == 1);
  CHECK((*stats)[0].delayed == 1);  // waiting out the backoff of its failed attempt
  std::mutex mutex;
  std::vector<std::uint32_t> attempts;
  REQUIRE(conn->subscribe("d", {.max_in_flight = 10},
                          [&](const Delivery& d) {
                            std::lock_guard lk(mutex);
                            if (d.payload == "held") attempts.push_back(d.attempt);
                            return Disposition::ack;
                          })
              .ok());
  REQUIRE(eventually([&] {
    std::lock_guard lk(mutex);
    return !attempts.empty();
  }));
  std::lock_guard lk(mutex);
  CHECK(attempts == std::vector<std::uint32_t>{2});
}

// Messages move into and out of a durable dead-letter queue all the time (a
// consumer fails every delivery, a redriver brings every entry back) while
// sluiced is killed at random moments. Moving is one write each way, so after
// every crash each message is in exactly one place, and no delivery's attempt
// number is below one seen before the crash or above max_attempts.
TEST_CASE(
    "durable: kill -9 while messages move into and out of the DLQ - each in exactly one place") {
  DataDir dir;
  constexpr int kKills = 20;
  constexpr int kPerRound = 150;
  constexpr std::uint32_t kMaxAttempts = 3;
  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  INFO("seed " << seed);
  const auto args =
      durable_args(dir, {"--set", "queues.d.max_attempts=" + std::to_string(kMaxAttempts), "--set",
                         "queues.d.retry_backoff=1ms", "--set", "queues.d.retry_jitter=none"});
  std::mutex mutex;
  std::set<std::string> confirmed;
  std::map<std::uint64_t, std::uint32_t> top_attempt;  // message id -> highest attempt seen
  std::vector<std::string> problems;
  std::size_t deliveries = 0, redrives = 0;
  for (int round = 0; round < kKills; ++round) {
    TestBroker broker(args);
    auto producer = broker.connect("producer");
    for (int i = 0; i < kPerRound; ++i) {
      const std::string payload = "r" + std::to_string(round) + "-" + std::to_string(i);
      producer->publish_async("d", payload,
                              [&, payload](const sluice::client::Error& e, std::uint64_t) {
                                if (e) return;
                                std::lock_guard lk(mutex);
                                confirmed.insert(payload);
                              });
    }
    REQUIRE(producer->wait_confirms(30s));
    auto consumer = broker.connect("consumer");
    REQUIRE(consumer
                ->subscribe("d", {.max_in_flight = 32},
                            [&](const Delivery& d) {
                              std::lock_guard lk(mutex);
                              ++deliveries;
                              auto& top = top_attempt[d.message_id];
                              if (d.attempt < top || d.attempt > kMaxAttempts)
                                problems.push_back("message " + std::to_string(d.message_id) +
                                                   " delivered as attempt " +
                                                   std::to_string(d.attempt) + " after " +
                                                   std::to_string(top));
                              top = std::max(top, d.attempt);
                              return Disposition::nack;  // fails until dead-lettered
                            })
                .ok());
    std::atomic<bool> stop{false};
    std::thread redriver([&] {
      auto conn = Connection::connect(broker.options());
      if (!conn.ok()) return;
      while (!stop) {
        sluice::client::DeadLetterQuery redrive;
        redrive.op = sluice::client::DeadLetterQuery::Op::redrive;
        redrive.queue = "d";
        redrive.min_age = 1ms;  // a filter that takes (nearly) all of them
        auto r = (*conn)->dead_letters(redrive);
        if (!r.ok()) return;
        redrives += r->affected;
        std::this_thread::sleep_for(20ms);
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 400));
    broker.kill9();
    stop = true;
    redriver.join();
  }
  // The last start: nothing moves now. Every confirmed message is either a
  // dead letter or in the queue, exactly once.
  TestBroker broker(args);
  auto conn = broker.connect("final");
  std::map<std::string, int> places;
  // Commits go in order: once this is confirmed, the recovery's own writes
  // (deliveries the crash interrupted, dead-lettered) are on disk too.
  REQUIRE(conn->publish("d", {"final-barrier", {}}).ok());
  sluice::client::DeadLetterQuery list;
  list.queue = "d";
  list.limit = 1000;
  for (;;) {
    auto page = conn->dead_letters(list);
    REQUIRE(page.ok());
    for (const auto& e : page->entries) {
      places[e.message.payload]++;
      std::lock_guard lk(mutex);
      if (e.attempts < top_attempt[e.message_id])
        problems.push_back("dead letter of message " + std::to_string(e.message_id) +
                           " has attempts " + std::to_string(e.attempts));
    }
    if (page->next_after == 0) break;
    list.after = page->next_after;
  }
  const std::size_t dead = places.size();
  std::atomic<std::size_t> drained{0};
  REQUIRE(conn->subscribe("d", {.max_in_flight = 256},
                          [&](const Delivery& d) {
                            std::lock_guard lk(mutex);
                            places[std::string(d.payload)]++;
                            if (d.attempt < top_attempt[d.message_id] || d.attempt > kMaxAttempts)
                              problems.push_back("message " + std::to_string(d.message_id) +
                                                 " drained as attempt " +
                                                 std::to_string(d.attempt));
                            drained++;
                            return Disposition::ack;
                          })
              .ok());
  REQUIRE(queue_drained(*conn));
  std::lock_guard lk(mutex);
  std::size_t missing = 0, twice = 0, unknown = 0;
  for (const auto& payload : confirmed) {
    const auto it = places.find(payload);
    if (it == places.end())
      ++missing;
    else if (it->second > 1)
      ++twice;
  }
  for (const auto& [payload, n] : places)
    if (!confirmed.count(payload) && payload != "final-barrier") ++unknown;
  std::printf(
      "DLQ crash test (seed %u): %d kills, %zu confirmed, %zu deliveries, %zu redriven, "
      "finally %zu dead letters and %zu in the queue; %zu missing, %zu in two places\n",
      seed, kKills, confirmed.size(), deliveries, redrives, dead, drained.load(), missing, twice);
  std::string first_problems;
  for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 10); ++i)
    first_problems += problems[i] + "\n";
  INFO(problems.size() << " problems, the first:\n" << first_problems);
  CHECK(problems.empty());
  CHECK(confirmed.size() == std::size_t{kKills} * kPerRound);
  CHECK(missing == 0);
  CHECK(twice == 0);
  CHECK(unknown == 0);
  CHECK(redrives > 0);
}

// storage.settle = "commit": an HTTP 200 for an ack means the ack is on disk,
// so kill -9 right after it brings nothing back. (With the default, at_once,
// the same kill usually brings the acked messages back: see PROTOCOL.md.)
TEST_CASE("durable: with storage.settle = commit an answered ack survives kill -9") {
  for (const char* settle : {"commit", "at_once"}) {
    CAPTURE(settle);
    DataDir dir;
    const auto args = durable_args(dir, {"--set", std::string("storage.settle=") + settle});
    std::size_t came_back = 0;
    {
      TestBroker broker(args);
      for (int i = 0; i < 200; ++i)
        REQUIRE(sluice::test::http_request(broker.http_port(), "POST", "/v1/queues/d/messages",
                                           "m" + std::to_string(i))
                    .status == 202);
      const auto got =
          sluice::test::http_request(broker.http_port(), "POST", "/v1/queues/d/receive",
                                     R"({"max_messages":200,"wait_ms":2000})");
      REQUIRE(got.status == 200);
      std::string receipts;
      for (std::size_t at = got.body.find("\"receipt\":\""); at != std::string::npos;
           at = got.body.find("\"receipt\":\"", at + 1)) {
        const auto start = at + 11;
        receipts += (receipts.empty() ? "\"" : ",\"") +
                    got.body.substr(start, got.body.find('"', start) - start) + "\"";
      }
      const auto acked = sluice::test::http_request(broker.http_port(), "POST", "/v1/queues/d/ack",
                                                    "{\"receipts\":[" + receipts + "]}");
      REQUIRE(acked.status == 200);
      CHECK(acked.body.find("\"succeeded\":200") != std::string::npos);
      broker.kill9();
    }
    TestBroker broker(args);
    auto stats = broker.connect()->stats("d");
    REQUIRE(stats.ok());
    if (!stats->empty()) came_back = (*stats)[0].ready + (*stats)[0].delayed;
    std::printf("storage.settle=%s: %zu of 200 acked messages back after kill -9\n", settle,
                came_back);
    if (std::string(settle) == "commit") CHECK(came_back == 0);
  }
}

// The same over the protocol: the client library's ack() returns on SETTLED.
TEST_CASE("durable: with storage.settle = commit a SETTLED ack survives kill -9") {
  DataDir dir;
  const auto args = durable_args(dir, {"--set", "storage.settle=commit"});
  {
    TestBroker broker(args);
    auto conn = broker.connect();
    std::vector<sluice::client::Message> batch;
    for (int i = 0; i < 100; ++i) batch.push_back({"m" + std::to_string(i), {}});
    REQUIRE(conn->publish_batch("d", batch).ok());
    std::mutex mutex;
    std::vector<sluice::client::LeaseHandle> held;
    REQUIRE(conn->subscribe("d", {.max_in_flight = 100},
                            [&](const Delivery& d) {
                              std::lock_guard lk(mutex);
                              held.push_back(sluice::client::handle(d));
                              return Disposition::manual;
                            })
                .ok());
    REQUIRE(eventually([&] {
      std::lock_guard lk(mutex);
      return held.size() == 100;
    }));
    std::lock_guard lk(mutex);
    for (const auto& h : held) REQUIRE_FALSE(conn->ack(h));
    broker.kill9();  // right after the last SETTLED
  }
  TestBroker broker(args);
  auto stats = broker.connect()->stats("d");
  REQUIRE(stats.ok());
  const std::uint64_t back = stats->empty() ? 0 : (*stats)[0].ready + (*stats)[0].delayed;
  CHECK(back == 0);
}

// storage.settle = "commit" while the store is full and publishes wait for
// room: an ack's answer waits only for its own erase (which never waits), so
// a consumer that acks one message at a time frees the store and everything
// gets through, rather than every ack waiting behind the waiting publishes.
TEST_CASE("durable: storage.settle = commit - acks are answered while the store is full") {
  DataDir dir;
  TestBroker broker(
      durable_args(dir, {"--set", "storage.max_size=1MiB", "--set", "storage.settle=commit"}));
  const std::string payload(1000, 'x');
  auto producer = broker.connect("producer");
  std::atomic<int> confirmed{0}, failed{0};
  constexpr int kMessages = 2000;  // ~2 MB: twice what fits
  publish_counted(*producer, kMessages, payload, confirmed, failed);
  auto admin = broker.connect("admin");  // the producer's answers wait behind its confirms
  REQUIRE(eventually([&] {
    auto st = admin->storage_stats();
    return st.ok() && st->has_value() && (*st)->full;
  }));
  auto consumer = broker.connect("consumer");
  std::mutex mutex;
  std::deque<sluice::client::LeaseHandle> handles;
  REQUIRE(consumer
              ->subscribe("d", {.max_in_flight = 1},
                          [&](const Delivery& d) {
                            std::lock_guard lk(mutex);
                            handles.push_back(sluice::client::handle(d));
                            return Disposition::manual;
                          })
              .ok());
  // One ack at a time, each waiting for its SETTLED.
  int acked = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (acked < kMessages && std::chrono::steady_clock::now() < deadline) {
    std::optional<sluice::client::LeaseHandle> h;
    {
      std::lock_guard lk(mutex);
      if (!handles.empty()) {
        h = handles.front();
        handles.pop_front();
      }
    }
    if (!h) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    REQUIRE_FALSE(consumer->ack(*h));
    ++acked;
  }
  {
    auto q = admin->stats("d");
    auto st = admin->storage_stats();
    INFO("acked " << acked << " confirmed " << confirmed << " staged "
                  << (q.ok() && !q->empty() ? (*q)[0].staged : 0) << " ready "
                  << (q.ok() && !q->empty() ? (*q)[0].ready : 0) << " in_flight "
                  << (q.ok() && !q->empty() ? (*q)[0].in_flight : 0) << " storage used "
                  << (st.ok() && st->has_value() ? (*st)->used_bytes : 0) << " file "
                  << (st.ok() && st->has_value() ? (*st)->file_bytes : 0) << " waiting "
                  << (st.ok() && st->has_value() ? (*st)->waiting : 0) << " full "
                  << (st.ok() && st->has_value() ? (*st)->full : 0) << "\n"
                  << broker.log().substr(broker.log().size() > 3000 ? broker.log().size() - 3000
                                                                    : 0));
    CHECK(acked == kMessages);
  }
  CHECK(producer->wait_confirms(10s));
  CHECK(confirmed == kMessages);
  CHECK(failed == 0);
}
