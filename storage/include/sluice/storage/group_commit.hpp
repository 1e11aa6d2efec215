// GroupCommitter: the storage thread. It owns the LMDB write transaction; the
// engine thread hands it puts and erases through a lock-free single-producer
// queue (no lock on the hot path) and it commits everything that has arrived
// in one transaction — one fsync for many messages. After each commit it
// reports the sequence number of the last operation made durable, so the
// engine can confirm exactly the publishes that are on disk.
//
// Threading: submit() from one thread only (the engine's); the callback runs
// on the storage thread. Errors (MDB_MAP_FULL, disk full) fail the whole
// batch, which is reported and not applied; the committer keeps running.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "sluice/storage/lmdb.hpp"

namespace sluice::storage {

/// One change to make durable.
struct StorageOp {
  enum class Kind : std::uint8_t { put, erase };
  Kind kind = Kind::put;
  Db db;
  std::string key;
  std::string value;  // put only
};

/// What one commit did.
struct CommitResult {
  std::uint64_t first_seq = 0;  // the batch's operations, inclusive
  std::uint64_t last_seq = 0;
  Status error;  // set: none of first..last was applied
};

/// Running totals, readable from any thread.
struct CommitStats {
  std::uint64_t commits = 0;     // transactions committed (= fsyncs when syncing)
  std::uint64_t operations = 0;  // operations committed
  std::uint64_t failures = 0;    // batches that failed
};

class GroupCommitter {
 public:
  using OnCommit = std::function<void(const CommitResult&)>;

  /// Starts the storage thread on `env` (which must outlive this). Up to
  /// `capacity` operations wait at once; submit() refuses beyond that.
  GroupCommitter(Env& env, OnCommit on_commit, std::size_t capacity = 1 << 16);
  /// Commits what was submitted, then stops the thread.
  ~GroupCommitter();
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  /// Hands `op` to the storage thread; its sequence number (1, 2, ...) in
  /// `seq`. False when the queue is full: try again after a commit.
  /// Not thread-safe: one submitting thread.
  bool submit(StorageOp&& op, std::uint64_t& seq);

  CommitStats stats() const noexcept;

 private:
  void run();

  struct Queue;
  Env& env_;
  OnCommit on_commit_;
  std::unique_ptr<Queue> queue_;
  std::uint64_t next_seq_ = 1;  // submitting thread only
  std::atomic<std::uint64_t> submitted_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> commits_{0}, operations_{0}, failures_{0};
  std::thread thread_;
};

}  // namespace sluice::storage
