#include "sluice/storage/lmdb.hpp"

#include <lmdb.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace sluice::storage {

namespace {

Status check(int rc, const char* context) {
  if (rc == MDB_SUCCESS) return std::nullopt;
  return StorageError{rc, context};
}

MDB_val to_val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};  // LMDB does not write through it
}

std::string_view to_view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

}  // namespace

bool StorageError::map_full() const noexcept {
  return code == MDB_MAP_FULL;
}

std::string StorageError::to_string() const {
  return context + ": " + mdb_strerror(code);
}

// ---------------------------------------------------------------- Env

Env::~Env() {
  if (env_) mdb_env_close(env_);
}

Env::Env(Env&& other) noexcept : env_(std::exchange(other.env_, nullptr)) {}

Env& Env::operator=(Env&& other) noexcept {
  if (this != &other) {
    if (env_) mdb_env_close(env_);
    env_ = std::exchange(other.env_, nullptr);
  }
  return *this;
}

Status Env::open(const std::string& path, const Options& options) {
  if (env_) return StorageError{EINVAL, "mdb_env_open: environment already open"};
  MDB_env* env = nullptr;
  if (auto e = check(mdb_env_create(&env), "mdb_env_create")) return e;
  Status status = check(mdb_env_set_mapsize(env, options.map_size), "mdb_env_set_mapsize");
  if (!status) status = check(mdb_env_set_maxdbs(env, options.max_dbs), "mdb_env_set_maxdbs");
  // NOTLS: read transactions are not tied to a thread's slot, so a reader may be
  // reused by whichever thread owns it at the time.
  const unsigned flags = MDB_NOTLS | (options.sync ? 0u : unsigned{MDB_NOSYNC});
  if (!status) status = check(mdb_env_open(env, path.c_str(), flags, 0644), "mdb_env_open");
  if (status) {
    mdb_env_close(env);
    status->context += " (" + path + ")";
    return status;
  }
  env_ = env;
  return std::nullopt;
}

Status Env::usage(EnvUsage& out, bool count_free) const {
  MDB_envinfo info;
  MDB_stat stat;
  if (auto e = check(mdb_env_info(env_, &info), "mdb_env_info")) return e;
  if (auto e = check(mdb_env_stat(env_, &stat), "mdb_env_stat")) return e;
  out.page_size = stat.ms_psize;
  out.map_size = info.me_mapsize;
  out.file_pages = info.me_last_pgno + 1;
  out.free_pages = 0;
  if (!count_free) return std::nullopt;
  // Database 0 is LMDB's free list: txn id -> list of page numbers, whose
  // first word is the count.
  MDB_txn* txn = nullptr;
  if (auto e = check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn), "mdb_txn_begin")) return e;
  MDB_cursor* cursor = nullptr;
  Status status = check(mdb_cursor_open(txn, 0, &cursor), "mdb_cursor_open");
  MDB_val key, value;
  int rc = status ? MDB_NOTFOUND : mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
  while (rc == MDB_SUCCESS) {
    if (value.mv_size >= sizeof(std::size_t)) {
      std::size_t count;
      std::memcpy(&count, value.mv_data, sizeof count);
      out.free_pages += count;
    }
    rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
  }
  if (!status && rc != MDB_NOTFOUND) status = check(rc, "mdb_cursor_get (free list)");
  if (cursor) mdb_cursor_close(cursor);
  mdb_txn_abort(txn);
  out.free_pages = std::min(out.free_pages, out.file_pages);
  return status;
}

// ---------------------------------------------------------------- Txn

Txn::~Txn() {
  abort();
}

Txn::Txn(Txn&& other) noexcept
    : txn_(std::exchange(other.txn_, nullptr)), read_only_(other.read_only_) {}

Txn& Txn::operator=(Txn&& other) noexcept {
  if (this != &other) {
    abort();
    txn_ = std::exchange(other.txn_, nullptr);
    read_only_ = other.read_only_;
  }
  return *this;
}

Status Txn::begin(Env& env, bool read_only) {
  abort();
  if (!env.handle()) return StorageError{EINVAL, "mdb_txn_begin: environment not open"};
  read_only_ = read_only;
  return check(mdb_txn_begin(env.handle(), nullptr, read_only ? MDB_RDONLY : 0, &txn_),
               "mdb_txn_begin");
}

Status Txn::open_db(std::string_view name, Db& db) {
  const std::string n(name);
  const unsigned flags = read_only_ ? 0u : unsigned{MDB_CREATE};
  MDB_dbi dbi = 0;
  if (auto e = check(mdb_dbi_open(txn_, n.c_str(), flags, &dbi), "mdb_dbi_open")) {
    e->context += " (" + n + ")";
    return e;
  }
  db.dbi = dbi;
  return std::nullopt;
}

Status Txn::put(Db db, std::string_view key, std::string_view value, bool append) {
  MDB_val k = to_val(key), v = to_val(value);
  return check(mdb_put(txn_, db.dbi, &k, &v, append ? MDB_APPEND : 0u), "mdb_put");
}

Status Txn::get(Db db, std::string_view key, std::optional<std::string_view>& value) {
  MDB_val k = to_val(key), v{};
  const int rc = mdb_get(txn_, db.dbi, &k, &v);
  value.reset();
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (auto e = check(rc, "mdb_get")) return e;
  value = to_view(v);
  return std::nullopt;
}

Status Txn::erase(Db db, std::string_view key, bool* found) {
  MDB_val k = to_val(key);
  const int rc = mdb_del(txn_, db.dbi, &k, nullptr);
  if (found) *found = rc == MDB_SUCCESS;
  if (rc == MDB_NOTFOUND) return std::nullopt;
  return check(rc, "mdb_del");
}

Status Txn::commit() {
  if (!txn_) return StorageError{EINVAL, "mdb_txn_commit: no transaction"};
  // mdb_txn_commit frees the transaction even when it fails.
  const int rc = mdb_txn_commit(std::exchange(txn_, nullptr));
  return check(rc, "mdb_txn_commit");
}

void Txn::abort() noexcept {
  if (txn_) mdb_txn_abort(std::exchange(txn_, nullptr));
}

// ---------------------------------------------------------------- Cursor

Cursor::~Cursor() {
  if (cursor_) mdb_cursor_close(cursor_);
}

Status Cursor::open(Txn& txn, Db db) {
  if (cursor_) mdb_cursor_close(std::exchange(cursor_, nullptr));
  return check(mdb_cursor_open(txn.handle(), db.dbi, &cursor_), "mdb_cursor_open");
}

Status Cursor::seek(std::optional<std::string_view> from, bool& positioned) {
  return move(from ? MDB_SET_RANGE : MDB_FIRST, from, positioned);
}

Status Cursor::next(bool& positioned) {
  return move(MDB_NEXT, std::nullopt, positioned);
}

Status Cursor::prev(bool& positioned) {
  return move(MDB_PREV, std::nullopt, positioned);
}

Status Cursor::last(bool& positioned) {
  return move(MDB_LAST, std::nullopt, positioned);
}

Status Cursor::move(int op, std::optional<std::string_view> from, bool& positioned) {
  MDB_val k = from ? to_val(*from) : MDB_val{}, v{};
  const int rc = mdb_cursor_get(cursor_, &k, &v, static_cast<MDB_cursor_op>(op));
  positioned = rc == MDB_SUCCESS;
  if (rc == MDB_NOTFOUND) return std::nullopt;
  if (auto e = check(rc, "mdb_cursor_get")) return e;
  key_ = to_view(k);
  value_ = to_view(v);
  return std::nullopt;
}

}  // namespace sluice::storage
