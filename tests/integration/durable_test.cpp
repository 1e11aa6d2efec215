// Durable queues against the real sluiced and a real LMDB data directory:
// confirmed publishes survive kill -9 with their attempt counts and retry
// times, a directory in use is refused, a full store pushes back and then
// recovers, and a crash loop loses nothing that was confirmed.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_broker.hpp"

using namespace std::chrono_literals;
using sluice::errc;
using sluice::client::Connection;
using sluice::client::Delivery;
using sluice::client::Disposition;
using sluice::test::eventually;
using sluice::test::TestBroker;

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
  // later + 100 + barrier, less the five acked; "later" waits for its time.
  CHECK((*stats)[0].ready == 96);
  CHECK((*stats)[0].delayed == 1);

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

TEST_CASE("durable: a durable queue without storage.path is refused at start") {
  const auto result = sluice::test::run_command(
      std::string(SLUICED_PATH) + " --listen 127.0.0.1:0 --set queues.d.durability=durable 2>&1");
  CHECK(result.status == 2);
  CHECK(result.out.find("queues.d.durability") != std::string::npos);
  CHECK(result.out.find("storage.path is not set") != std::string::npos);
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
    CHECK(refused.message.find("storage is full") != std::string::npos);
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
    for (int i = 0; i < kMessages; ++i)
      producer->publish_async("d", std::to_string(i) + payload,
                              [&](const sluice::client::Error& e, std::uint64_t) {
                                (e ? failed : confirmed).fetch_add(1);
                              });
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
      auto stats_conn = broker.connect("stats");
      REQUIRE(eventually(
          [&] {
            auto s = stats_conn->stats("d");
            return s.ok() && !s->empty() &&
                   (*s)[0].ready + (*s)[0].delayed + (*s)[0].in_flight + (*s)[0].staged == 0;
          },
          60s));
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
