// LMDB RAII against real LMDB in a temporary directory.
#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>
#include <random>
#include <string>
#include <vector>

#include "sluice/storage/data_dir.hpp"
#include "sluice/storage/dead_letter_store.hpp"
#include "sluice/storage/group_commit.hpp"
#include "sluice/storage/lmdb.hpp"
#include "sluice/storage/message_log.hpp"

namespace fs = std::filesystem;
using namespace sluice::storage;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("sluice-storage-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

/// Fails the test with LMDB's words unless `status` is success.
void require_ok(const Status& status) {
  INFO((status ? status->to_string() : ""));
  REQUIRE_FALSE(status.has_value());
}

/// Creates (or opens) the database `name` in a transaction of its own.
Db create_db(Env& env, std::string_view name) {
  Db db;
  Txn txn;
  require_ok(txn.begin(env, false));
  require_ok(txn.open_db(name, db));
  require_ok(txn.commit());
  return db;
}

}  // namespace

TEST_CASE("storage: committed writes survive reopening, aborted ones do not") {
  TempDir dir;
  {
    Env env;
    require_ok(env.open(dir.path.string(), {}));
    Txn txn;
    require_ok(txn.begin(env, false));
    Db db;
    require_ok(txn.open_db("messages", db));
    require_ok(txn.put(db, "a", "alpha"));
    require_ok(txn.put(db, "b", std::string("with\0nul", 8)));
    require_ok(txn.commit());

    Txn dropped;
    require_ok(dropped.begin(env, false));
    require_ok(dropped.open_db("messages", db));
    require_ok(dropped.put(db, "c", "never committed"));
  }  // `dropped` aborts, then the env closes
  Env env;
  require_ok(env.open(dir.path.string(), {}));
  Txn txn;
  require_ok(txn.begin(env, true));
  Db db;
  require_ok(txn.open_db("messages", db));
  std::optional<std::string_view> value;
  require_ok(txn.get(db, "a", value));
  CHECK(value == "alpha");
  require_ok(txn.get(db, "b", value));
  CHECK(value == std::string_view("with\0nul", 8));
  require_ok(txn.get(db, "c", value));
  CHECK_FALSE(value.has_value());
}

TEST_CASE("storage: erase, and cursors walk in key order from any key") {
  TempDir dir;
  Env env;
  require_ok(env.open(dir.path.string(), {}));
  Txn txn;
  require_ok(txn.begin(env, false));
  Db db;
  require_ok(txn.open_db("k", db));
  for (const char* k : {"d", "b", "a", "c"}) require_ok(txn.put(db, k, std::string(k) + "!"));
  bool found = false;
  require_ok(txn.erase(db, "c", &found));
  CHECK(found);
  require_ok(txn.erase(db, "zz", &found));
  CHECK_FALSE(found);

  Cursor cursor;
  require_ok(cursor.open(txn, db));
  std::vector<std::string> keys;
  bool at = false;
  for (require_ok(cursor.seek(std::nullopt, at)); at; require_ok(cursor.next(at))) {
    keys.emplace_back(cursor.key());
    CHECK(cursor.value() == std::string(cursor.key()) + "!");
  }
  CHECK(keys == std::vector<std::string>{"a", "b", "d"});
  require_ok(cursor.seek(std::string_view("bb"), at));
  REQUIRE(at);
  CHECK(cursor.key() == "d");
  require_ok(cursor.seek(std::string_view("e"), at));
  CHECK_FALSE(at);
}

TEST_CASE("storage: a full map is a typed error, not a crash, and the data before it stays") {
  TempDir dir;
  Env env;
  Env::Options options;
  options.map_size = 256 * 1024;
  require_ok(env.open(dir.path.string(), options));
  Db db;
  {
    Txn txn;
    require_ok(txn.begin(env, false));
    require_ok(txn.open_db("big", db));
    require_ok(txn.put(db, "kept", "yes"));
    require_ok(txn.commit());
  }
  Txn txn;
  require_ok(txn.begin(env, false));
  Status status;
  for (int i = 0; i < 1000 && !status; ++i)
    status = txn.put(db, "key" + std::to_string(i), std::string(4096, 'x'));
  REQUIRE(status.has_value());
  CHECK(status->map_full());
  CHECK(status->to_string().find("mdb_put") == 0);
  txn.abort();

  Txn reader;
  require_ok(reader.begin(env, true));
  std::optional<std::string_view> value;
  require_ok(reader.get(db, "kept", value));
  CHECK(value == "yes");
}

TEST_CASE("storage: opening a missing directory names it") {
  Env env;
  const Status status = env.open("/nonexistent/sluice/dir", {});
  REQUIRE(status.has_value());
  CHECK_FALSE(status->map_full());
  CHECK(status->to_string().find("/nonexistent/sluice/dir") != std::string::npos);
}

TEST_CASE("storage: a data directory records its format, is held by one broker, refuses newer") {
  TempDir dir;
  const std::string path = (dir.path / "data").string();
  {
    DataDir first;
    REQUIRE_FALSE(first.open(path, {}));
    DataDir second;
    const auto refused = second.open(path, {});
    REQUIRE(refused);
    CHECK(refused.detail.find("in use by another sluiced (pid " + std::to_string(::getpid()) +
                              ")") != std::string::npos);

    // Pretend a future version wrote it.
    Txn txn;
    require_ok(txn.begin(first.env(), false));
    Db meta;
    require_ok(txn.open_db("meta", meta));
    const std::uint32_t future = DataDir::kFormatVersion + 1;
    require_ok(txn.put(meta, "format", {reinterpret_cast<const char*>(&future), 4}));
    require_ok(txn.commit());
  }
  DataDir again;
  const auto refused = again.open(path, {});
  REQUIRE(refused);
  CHECK(refused.detail.find("storage format 2, newer than this sluiced understands (1)") !=
        std::string::npos);
  // The failed open holds nothing: another try meets the format, not a lock.
  DataDir third;
  const auto also_refused = third.open(path, {});
  REQUIRE(also_refused);
  CHECK(also_refused.detail.find("newer than this sluiced") != std::string::npos);
}

TEST_CASE("storage: group commit makes every submitted operation durable, many per commit") {
  TempDir dir;
  DataDir data;
  REQUIRE_FALSE(data.open(dir.path.string(), {}));
  const Db db = create_db(data.env(), "messages");
  std::atomic<std::uint64_t> durable{0};
  std::atomic<int> failed{0};
  constexpr std::uint64_t kOps = 50'000;
  {
    // A small ring: most operations pass through the backlog and pump().
    GroupCommitter committer(data.env(),
                             [&](const CommitResult& r) {
                               if (r.error || r.full) failed.fetch_add(1);
                               durable.store(r.durable_seq);
                             },
                             {.capacity = 1024});
    std::uint64_t seq = 0;
    for (std::uint64_t i = 0; i < kOps; ++i) {
      seq = committer.submit({StorageOp::Kind::put,
                              true,
                              false,
                              db,
                              "k" + std::to_string(i),
                              std::string(100, 'v'),
                              {}});
      if (i % 10 == 9)  // erase every tenth, later in the stream
        seq = committer.submit(
            {StorageOp::Kind::erase, false, false, db, "k" + std::to_string(i), {}, {}});
      if (i % 1000 == 0) committer.pump();
    }
    CHECK(seq == committer.last_seq());
    while (durable.load() < seq) {
      committer.pump();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const auto stats = committer.stats();
    CHECK(stats.operations == kOps + kOps / 10);
    CHECK(stats.commits < stats.operations / 10);  // grouped: many operations per fsync
    CHECK(stats.median_batch > 10);
    CHECK(failed == 0);
  }
  Txn reader;
  require_ok(reader.begin(data.env(), true));
  // Every record arrived whole (the ring and the backlog move them; nothing
  // was moved from twice) and every erase took.
  std::optional<std::string_view> value;
  std::uint64_t whole = 0, erased = 0;
  for (std::uint64_t i = 0; i < kOps; ++i) {
    require_ok(reader.get(db, "k" + std::to_string(i), value));
    if (i % 10 == 9)
      erased += !value.has_value();
    else
      whole += value == std::string(100, 'v');
  }
  CHECK(whole == kOps - kOps / 10);
  CHECK(erased == kOps / 10);
}

TEST_CASE("storage: when full, new records wait, erases go through, nothing is lost") {
  TempDir dir;
  DataDir data;
  Env::Options small;
  small.map_size = 2 << 20;  // 512 pages; a record of 8 KiB takes 3
  REQUIRE_FALSE(data.open(dir.path.string(), small));
  const Db db = create_db(data.env(), "messages");
  GroupCommitter::Options options;
  SUBCASE("at MDB_MAP_FULL") {}
  SUBCASE("at the soft limit") {
    options.soft_limit = 7 << 18;  // 1.75 MiB: above the 130 records alone, below all 190
  }
  std::mutex mutex;
  CommitResult last;
  bool saw_full = false;
  GroupCommitter committer(
      data.env(),
      [&](const CommitResult& r) {
        std::lock_guard lk(mutex);
        last = r;
        saw_full = saw_full || (r.full && r.error);
      },
      options);
  const auto reported = [&] {
    std::lock_guard lk(mutex);
    return last;
  };
  const auto wait_until = [&](auto condition) {
    for (int i = 0; i < 5000 && !condition(reported()); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return condition(reported());
  };
  // Fill the map to a third (60 records: below the soft limit however the
  // committer batches them), then ask for more than the rest.
  std::uint64_t seq = 0;
  for (int i = 0; i < 60; ++i)
    seq = committer.submit({StorageOp::Kind::put,
                            true,
                            false,
                            db,
                            "a" + std::to_string(i),
                            std::string(8192, 'x'),
                            {}});
  INFO("soft limit " << options.soft_limit);
  const bool first_durable =
      wait_until([&](const CommitResult& r) { return r.durable_seq == seq; });
  INFO("durable " << reported().durable_seq << " of " << seq << ", full " << reported().full
                  << ", waiting " << committer.stats().waiting << ", error "
                  << (reported().error ? reported().error->to_string() : "none"));
  REQUIRE(first_durable);
  // 130 more (390 pages): past the 512-page map with the first 60, within it alone.
  constexpr int kMoreRecords = 130;
  std::uint64_t first_waiting = 0;
  for (int i = 0; i < kMoreRecords; ++i) {
    const auto s = committer.submit({StorageOp::Kind::put,
                                     true,
                                     false,
                                     db,
                                     "b" + std::to_string(i),
                                     std::string(8192, 'x'),
                                     {}});
    if (i == 0) first_waiting = s;
  }
  REQUIRE(
      wait_until([&](const CommitResult& r) { return r.full && committer.stats().waiting > 0; }));
  {
    std::lock_guard lk(mutex);
    CHECK(saw_full);
  }
  // Erases still commit while records wait (this is how consumers free space)...
  for (int i = 0; i < 60; ++i)
    committer.submit({StorageOp::Kind::erase, false, false, db, "a" + std::to_string(i), {}, {}});
  seq = committer.last_seq();
  // ...and then what waited fits, in order: everything becomes durable.
  const bool all_durable = wait_until([&](const CommitResult& r) {
    // Past a soft limit the store may still say full (the b records alone pass it).
    return r.durable_seq == seq && (options.soft_limit != 0 || !r.full);
  });
  INFO("durable " << reported().durable_seq << " of " << seq << ", waiting "
                  << committer.stats().waiting << ", error "
                  << (reported().error ? reported().error->to_string() : "none"));
  REQUIRE(all_durable);
  CHECK(reported().durable_seq >= first_waiting);
  Txn reader;
  require_ok(reader.begin(data.env(), true));
  std::optional<std::string_view> value;
  require_ok(reader.get(db, "a0", value));
  CHECK_FALSE(value.has_value());
  int stored = 0;
  for (int i = 0; i < kMoreRecords; ++i) {
    require_ok(reader.get(db, "b" + std::to_string(i), value));
    stored += value.has_value();
  }
  CHECK(stored == kMoreRecords);
}

TEST_CASE("storage: the message log reads back what is stored, in id order") {
  TempDir dir;
  DataDir data;
  REQUIRE_FALSE(data.open(dir.path.string(), {}));
  MessageLog log;
  require_ok(log.open(data.env()));
  {
    std::atomic<std::uint64_t> durable{0};
    GroupCommitter committer(data.env(),
                             [&](const CommitResult& r) { durable.store(r.durable_seq); });
    committer.submit(log.put_next_id(1000));
    for (std::uint64_t id = 1; id <= 5; ++id)
      committer.submit(log.put_message(id, id % 2 ? "odd" : "even", 1'700'000'000'000'000 + id,
                                       "message " + std::to_string(id)));
    committer.submit(log.put_attempts(2, 3, 0));
    committer.submit(log.put_attempts(4, 1, 1'800'000'000'000'000));
    committer.submit(log.put_delivery(3, 1));
    committer.submit(log.erase(3));  // acked: both records in one op
    committer.submit(log.put_attempts(5, 1, 0));
    StorageOp message_only = log.erase(5);
    message_only.kind = StorageOp::Kind::erase;   // the message's record alone
    committer.submit(std::move(message_only));    // acked, its attempts record left behind
    committer.submit(log.put_delivery(1, 2));     // out, unsettled, when the broker stopped
    committer.submit(log.put_attempts(9, 2, 0));  // no message at all
    const auto last = committer.last_seq();
    while (durable.load() < last) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::vector<std::string> seen;
  std::uint64_t next_id = 0;
  RecoveryStats stats;
  require_ok(log.recover(
      data.env(),
      [&](const StoredMessage& m) {
        seen.push_back(std::to_string(m.id) + " " + std::string(m.queue) + " " +
                       std::to_string(m.attempts) + " " + std::to_string(m.not_before_wall_us) +
                       " " + std::string(m.message) + " " +
                       std::to_string(m.publish_wall_us - 1'700'000'000'000'000) +
                       (m.interrupted ? " interrupted" : ""));
      },
      next_id, stats));
  CHECK(seen == std::vector<std::string>{"1 odd 2 0 message 1 1 interrupted",
                                         "2 even 3 0 message 2 2",
                                         "4 even 1 1800000000000000 message 4 4"});
  CHECK(next_id == 1000);
  CHECK(stats.messages == 3);
  CHECK(stats.orphan_attempts == 2);
  // The orphans are gone: a second recovery finds none.
  require_ok(log.recover(
      data.env(), [](const StoredMessage&) {}, next_id, stats));
  CHECK(stats.orphan_attempts == 0);
  CHECK(stats.messages == 3);
}

TEST_CASE("storage: dead letters are listed per queue, either way, from a cursor") {
  TempDir dir;
  DataDir data;
  REQUIRE_FALSE(data.open(dir.path.string(), {}));
  DeadLetterStore store;
  require_ok(store.open(data.env()));
  {
    std::atomic<std::uint64_t> durable{0};
    GroupCommitter committer(data.env(),
                             [&](const CommitResult& r) { durable.store(r.durable_seq); });
    // "a" and "a.b" share a prefix: their entries must not mix.
    for (std::uint64_t id = 1; id <= 6; ++id) {
      DeadLetterRecord r;
      r.queue = id % 3 == 0 ? "a.b" : "a";
      r.entry_id = id * 10;
      r.message_id = id;
      r.publish_wall_us = 100;
      r.attempts = static_cast<std::uint32_t>(id);
      r.first_failure_wall_us = 200;
      r.last_failure_wall_us = 300 + static_cast<std::int64_t>(id);
      const std::string reason = "reason " + std::to_string(id);
      r.reason = reason;
      const std::string message = "m" + std::to_string(id);
      r.message = message;
      committer.submit(store.put(r));
    }
    committer.submit(store.erase("a", 20));
    const auto last = committer.last_seq();
    while (durable.load() < last) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const auto list = [&](std::string_view queue, bool newest, std::uint64_t after) {
    std::vector<std::uint64_t> ids;
    require_ok(store.scan(data.env(), queue, newest, after, [&](const DeadLetterRecord& r) {
      CHECK(r.queue == queue);
      CHECK(r.message == "m" + std::to_string(r.message_id));
      CHECK(r.reason == "reason " + std::to_string(r.message_id));
      ids.push_back(r.entry_id);
      return true;
    }));
    return ids;
  };
  CHECK(list("a", false, 0) == std::vector<std::uint64_t>{10, 40, 50});
  CHECK(list("a", true, 0) == std::vector<std::uint64_t>{50, 40, 10});
  CHECK(list("a", false, 10) == std::vector<std::uint64_t>{40, 50});
  CHECK(list("a", true, 40) == std::vector<std::uint64_t>{10});
  CHECK(list("a", true, 45) == std::vector<std::uint64_t>{40, 10});
  CHECK(list("a.b", true, 0) == std::vector<std::uint64_t>{60, 30});
  CHECK(list("b", false, 0).empty());
  CHECK(list("a.b", false, 60).empty());
  std::optional<OwnedDeadLetter> got;
  require_ok(store.get(data.env(), "a.b", 30, got));
  REQUIRE(got.has_value());
  CHECK(got->record.attempts == 3);
  CHECK(got->record.last_failure_wall_us == 303);
  CHECK(got->record.message == "m3");
  require_ok(store.get(data.env(), "a", 20, got));
  CHECK_FALSE(got.has_value());
  std::vector<std::pair<std::string, std::uint64_t>> counts;
  require_ok(store.count(data.env(),
                         [&](std::string_view q, std::uint64_t n) { counts.emplace_back(q, n); }));
  CHECK(counts == std::vector<std::pair<std::string, std::uint64_t>>{{"a", 3}, {"a.b", 2}});
}

TEST_CASE("storage: with the store full, a backlog still drains into the storage thread") {
  // The engine pumps its backlog only when the committer reports; while full,
  // records taken off the ring are not committed, and that must be reported too.
  TempDir dir;
  DataDir data;
  REQUIRE_FALSE(data.open(dir.path.string(), {}));
  const Db db = create_db(data.env(), "messages");
  std::atomic<bool> reported{false};
  std::atomic<bool> full{false};
  GroupCommitter committer(data.env(),
                           [&](const CommitResult& r) {
                             full = r.full;
                             reported = true;
                           },
                           {.capacity = 8, .soft_limit = 64 << 10});
  committer.submit({StorageOp::Kind::put, true, false, db, "big", std::string(100 << 10, 'x'), {}});
  for (int i = 0; i < 500 && !full; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(full);
  for (int i = 0; i < 100; ++i)
    committer.submit({StorageOp::Kind::put, true, false, db, "r" + std::to_string(i), "small", {}});
  for (int i = 0; i < 5000 && committer.stats().waiting < 100; ++i) {
    if (reported.exchange(false)) committer.pump();  // as DurableStore does, on each report
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(committer.stats().waiting == 100);
}
