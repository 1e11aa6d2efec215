// RAII over LMDB: an environment, transactions, named databases and cursors,
// with every failure returned as a typed StorageError value instead of an
// exception. The stores of later issues (message log, dead letters, dedup
// ledger) are built on these; nothing here knows about queues.
//
// LMDB's rules apply (see lmdb.h "Caveats"): one write transaction at a time
// per environment, a transaction is used by the thread that began it, and a
// long-lived read transaction keeps old pages from being reused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "sluice/protocol/error.hpp"

struct MDB_env;
struct MDB_txn;
struct MDB_cursor;

namespace sluice::storage {

/// An LMDB failure: the MDB_* or errno code and what we were doing.
struct StorageError {
  int code = 0;
  std::string context;
  /// The map is full (MDB_MAP_FULL): callers turn this into backpressure, not a crash.
  bool map_full() const noexcept;
  /// "context: LMDB's description of code"
  std::string to_string() const;
};

/// Empty on success.
using Status = std::optional<StorageError>;

/// A storage failure in the one Error shape, for callers above storage (errc::internal).
inline Error storage_error(std::string detail) {
  return {errc::internal, std::move(detail)};
}
inline Error storage_error(const StorageError& e) {
  return storage_error(e.to_string());
}

class Txn;

/// How much of an environment's map is in use.
struct EnvUsage {
  std::uint64_t page_size = 0;
  std::uint64_t map_size = 0;    // bytes the file may grow to
  std::uint64_t file_pages = 0;  // pages ever used (the file's high-water mark)
  std::uint64_t free_pages = 0;  // of those, free for reuse (counted only when asked)
  std::uint64_t used_bytes() const noexcept { return (file_pages - free_pages) * page_size; }
  std::uint64_t file_bytes() const noexcept { return file_pages * page_size; }
};

/// One LMDB environment (a directory with data.mdb and lock.mdb). Thread-safe
/// to share; not copyable.
class Env {
 public:
  struct Options {
    std::size_t map_size = std::size_t{1} << 30;  // most bytes the file may grow to
    unsigned max_dbs = 16;                        // named databases
    bool sync = true;  // false: MDB_NOSYNC (faster, loses the last commits on power loss)
  };

  Env() = default;
  ~Env();
  Env(Env&& other) noexcept;
  Env& operator=(Env&& other) noexcept;
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  /// Opens (creating if needed) the environment in directory `path`, which must exist.
  Status open(const std::string& path, const Options& options);
  MDB_env* handle() const noexcept { return env_; }
  /// The map's size and high-water mark; with `count_free`, also the pages
  /// on LMDB's free list (a read transaction walking it: not for every call).
  Status usage(EnvUsage& out, bool count_free) const;

 private:
  MDB_env* env_ = nullptr;
};

/// A named database inside an Env; a plain handle, valid as long as the Env.
struct Db {
  unsigned dbi = 0;
};

/// A transaction; aborted on destruction unless committed. Not thread-safe.
class Txn {
 public:
  Txn() = default;
  ~Txn();
  Txn(Txn&& other) noexcept;
  Txn& operator=(Txn&& other) noexcept;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

  /// Begins a read-write (or read-only) transaction on `env`.
  Status begin(Env& env, bool read_only);
  /// Opens (in a write transaction: creates) the database `name`.
  Status open_db(std::string_view name, Db& db);
  /// Stores `value` under `key`, replacing what was there. `append`: the key is
  /// above every key in `db` (MDB_APPEND; fills pages densely; MDB_KEYEXIST if not).
  Status put(Db db, std::string_view key, std::string_view value, bool append = false);
  /// The value under `key` (a view into the map, valid until the transaction ends),
  /// nullopt if absent; an error only when LMDB fails.
  Status get(Db db, std::string_view key, std::optional<std::string_view>& value);
  /// Removes `key`; absent is not an error. `found` says whether it was there.
  Status erase(Db db, std::string_view key, bool* found = nullptr);
  /// Makes the changes durable (per Env::Options::sync) and ends the transaction.
  Status commit();
  /// Ends the transaction without its changes. Idempotent.
  void abort() noexcept;
  MDB_txn* handle() const noexcept { return txn_; }

 private:
  MDB_txn* txn_ = nullptr;
  bool read_only_ = false;
};

/// Walks a database in key order. Valid while its transaction is.
class Cursor {
 public:
  Cursor() = default;
  ~Cursor();
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  Status open(Txn& txn, Db db);
  /// Moves to the first key (or the first key >= `from` when given); false at the end.
  Status seek(std::optional<std::string_view> from, bool& positioned);
  /// Moves to the next key; false at the end.
  Status next(bool& positioned);
  /// Moves to the previous key; false before the first.
  Status prev(bool& positioned);
  /// Moves to the last key; false when the database is empty.
  Status last(bool& positioned);
  std::string_view key() const noexcept { return key_; }
  std::string_view value() const noexcept { return value_; }

 private:
  Status move(int op, std::optional<std::string_view> from, bool& positioned);
  MDB_cursor* cursor_ = nullptr;
  std::string_view key_;
  std::string_view value_;
};

}  // namespace sluice::storage
