// LMDB RAII against real LMDB in a temporary directory.
#include <doctest/doctest.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "sluice/storage/lmdb.hpp"

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

}  // namespace

TEST_CASE("storage: committed writes survive reopening; aborted ones do not") {
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
