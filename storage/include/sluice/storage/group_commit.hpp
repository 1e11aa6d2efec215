// GroupCommitter: the storage thread. It owns the LMDB write transaction; the
// engine thread hands it puts and erases through a lock-free single-producer
// queue (no lock on the hot path) and it commits everything that has arrived
// in one transaction — one fsync for many messages. After each commit it
// reports the sequence number up to which every operation is durable, so the
// engine can confirm exactly the publishes that are on disk.
//
// A full store never loses an operation. New records (`grows`) stop at a
// soft limit below the map's size, so that erases and small updates, which
// need a few pages of their own to commit, always have room: past the limit
// (or at MDB_MAP_FULL or a full disk) new records wait, in order, while the
// rest goes through and frees space, and are retried every kRetryInterval
// until they fit. Meanwhile CommitResult::full tells the engine to push back
// on publishers.
//
// Threading: submit() and pump() from one thread only (the engine's); the
// callback runs on the storage thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "sluice/storage/lmdb.hpp"

namespace sluice::storage {

/// One change to make durable.
struct StorageOp {
  /// erase_pair: `key` is erased from `db` and from `pair_db` (a message and
  /// its attempts record, on every ack) without the allocation of `also`.
  enum class Kind : std::uint8_t { put, erase, erase_pair };
  Kind kind = Kind::put;
  bool grows = false;   // a new record: under a full map it waits instead of failing others
  bool append = false;  // put with a key above every key of `db` (MDB_APPEND: dense pages)
  Db db;
  std::string key;
  std::string value;  // put only
  /// Changes committed in the same transaction as this one, or not at all: a
  /// message moving into its dead-letter queue (or back out) is in exactly one
  /// place after any crash. They share this op's sequence number and `grows`,
  /// and may carry `also` ops of their own.
  std::vector<StorageOp> also;
  Db pair_db{};  // erase_pair only
};

/// What one commit (or one failed attempt) did.
struct CommitResult {
  std::uint64_t durable_seq = 0;  // every operation up to this one is committed
  /// Every operation up to this one is committed except new records still
  /// waiting for room (>= durable_seq): what erases and small updates, which
  /// never wait, may be answered on, even while the store is full.
  std::uint64_t settled_seq = 0;
  std::uint64_t operations = 0;   // operations this transaction committed
  std::uint64_t duration_us = 0;  // the transaction(s) from begin to commit, fsync included
  bool full = false;  // operations wait for room (map or disk full): push back on publishers
  Status error;       // the failure behind `full`, for the log
};

/// Running totals, readable from any thread.
struct CommitStats {
  std::uint64_t commits = 0;       // transactions committed (= fsyncs when syncing)
  std::uint64_t operations = 0;    // operations committed
  std::uint64_t failures = 0;      // transactions that failed (then retried)
  std::uint64_t waiting = 0;       // operations waiting for room now
  std::uint64_t median_batch = 0;  // operations per commit, median of the last 1024 commits
};

class GroupCommitter {
 public:
  using OnCommit = std::function<void(const CommitResult&)>;
  static constexpr std::chrono::milliseconds kRetryInterval{100};

  struct Options {
    /// Operations travelling in the lock-free ring at once; more wait in a
    /// backlog of the submitting thread until pump().
    std::size_t capacity = 1 << 16;
    /// Bytes in use past which new records wait (0: only the map's size).
    std::uint64_t soft_limit = 0;
    /// New records' bytes per transaction, so that one batch cannot jump far
    /// past the soft limit (one record always goes).
    std::uint64_t max_batch_bytes = 8 << 20;
  };

  /// Starts the storage thread on `env` (which must outlive this).
  GroupCommitter(Env& env, OnCommit on_commit, Options options);
  GroupCommitter(Env& env, OnCommit on_commit) : GroupCommitter(env, std::move(on_commit), {}) {}
  /// Commits what was submitted (what waits for room is given up: it was
  /// never reported durable), then stops the thread.
  ~GroupCommitter();
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  /// Hands `op` to the storage thread and returns its sequence number
  /// (1, 2, ...). Never refuses: a full ring leaves it in the backlog, which
  /// the caller bounds (the broker writes only for messages and dead letters
  /// its limits admitted: queue capacities, limits.memory, storage.max_size).
  std::uint64_t submit(StorageOp&& op);
  /// Moves the backlog into the ring as far as it fits. Call after commits.
  void pump();
  /// The sequence number of the last operation submitted.
  std::uint64_t last_seq() const noexcept { return next_seq_ - 1; }

  CommitStats stats() const noexcept;

 private:
  struct Sequenced {
    std::uint64_t seq;
    StorageOp op;
  };
  void run();
  void wake();
  /// Applies `ops` in one transaction; only the ones `include` accepts.
  Status apply(const std::vector<Sequenced>& ops, bool (*include)(const StorageOp&),
               std::size_t& applied);
  void record_batch(std::size_t operations);
  /// Tells the engine how far everything is durable without a commit.
  void report_progress(std::uint64_t received, const std::vector<Sequenced>& pending,
                       const std::vector<Sequenced>& waiting, bool full);
  /// Whether the store is past the soft limit (counts free pages only when near it).
  bool over_soft_limit();
  /// Commits a tiny write: LMDB reuses pages freed by a transaction only two
  /// commits later, so after the last erases this makes their space usable.
  void tick();

  struct Queue;
  Env& env_;
  OnCommit on_commit_;
  Options options_;
  Db tick_db_;
  std::unique_ptr<Queue> queue_;
  // Submitting thread only; bounded by the caller (see submit()).
  std::deque<StorageOp> backlog_;  // taken from the front as the ring has room
  std::uint64_t next_seq_ = 1;     // submitting thread only
  std::atomic<std::uint64_t> submitted_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> commits_{0}, operations_{0}, failures_{0}, waiting_{0};
  std::array<std::atomic<std::uint32_t>, 1024> batches_{};  // recent batch sizes, a ring
  std::atomic<std::uint64_t> batch_count_{0};
  std::thread thread_;
};

}  // namespace sluice::storage
