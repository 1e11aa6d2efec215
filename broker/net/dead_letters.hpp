// The dead-letter queues: every queue's entries in LMDB (storage's
// DeadLetterStore), their counts, retention by count and age, and redrive
// jobs that move entries back to their queue at a chosen rate. One module
// answers list / show / redrive / remove / purge with typed results for
// every front end: the protocol's DEAD_LETTERS (sluicectl dlq) and the HTTP
// API's /v1/queues/{queue}/dlq. Engine thread only.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine.hpp"
#include "sluice/protocol/errc.hpp"
#include "sluice/protocol/error.hpp"
#include "sluice/protocol/frames.hpp"
#include "sluice/storage/dead_letter_store.hpp"
#include "sluice/storage/lmdb.hpp"
#include "string_map.hpp"

namespace sluice::net {

class DurableStore;

/// One dead-letter entry, owned.
struct DeadLetter {
  std::uint64_t entry_id = 0;  // the DLQ's own id (increasing: dead-letter order)
  std::uint64_t message_id = 0;
  std::string queue;  // the origin queue
  std::uint32_t attempts = 0;
  std::int64_t publish_wall_us = 0;  // Unix µs
  std::int64_t first_failure_wall_us = 0;
  std::int64_t last_failure_wall_us = 0;
  std::string reason;
  std::string message;  // the raw message encoding (headers and payload)
  /// The same entry as the protocol's DEAD_LETTERS_RESULT carries it (views into this).
  protocol::DeadLetterEntry view() const noexcept;
};

/// What a dead-letter request did.
struct DeadLetterResult {
  std::vector<DeadLetter> entries;  // list: a page; show: the one entry
  /// list: entries in the DLQ; redrive, remove, purge: entries acted on.
  std::uint64_t affected = 0;
  std::uint64_t next_after = 0;  // list: the cursor of the next page (0: this is the last)
};

class DeadLetters {
 public:
  DeadLetters(boost::asio::io_context& io, engine::Engine& engine, DurableStore& store);
  ~DeadLetters();
  DeadLetters(const DeadLetters&) = delete;
  DeadLetters& operator=(const DeadLetters&) = delete;

  /// Opens the database (after the store's environment) and counts each queue's entries.
  Error open(storage::Env& env);

  /// Runs one request. A list page holds at most `max_bytes` of entries (as
  /// the protocol encodes them); an entry too large alone is listed without
  /// its message. Redrive jobs and erases are started before it returns.
  Error run(const protocol::DeadLetterRequest& request, std::size_t max_bytes,
            DeadLetterResult& result);
  /// Entries in `queue`'s dead-letter queue, and those waiting to be redriven.
  std::uint64_t count(std::string_view queue) const;
  std::uint64_t redriving(std::string_view queue) const;
  /// Applies every queue's retention by age (dlq_retention); runs once a
  /// minute by itself. Retention by count applies as entries arrive.
  void sweep(std::int64_t wall_now);
  /// Stops the retention and redrive timers (shutdown: io.run() may return).
  void stop_timers();

  // ---- for the durable store ----
  /// The write that stores `e` in its dead-letter queue (the caller adds the
  /// message's erase to it and submits it; then calls added()).
  storage::StorageOp put(const engine::DeadLetter& e) const;
  /// An entry was written to `queue`'s dead-letter queue: count it, trim to dlq_max_entries.
  void added(const engine::DeadLetter& e);
  /// The erase of entry `entry_id` of `queue`, which a redrive's store write
  /// carries. Then call erasing(queue, entry_id, seq) with that write's seq.
  storage::StorageOp erase_op(std::string_view queue, std::uint64_t entry_id) const;
  /// Hides and uncounts an entry whose erase is in write `seq`.
  void erasing(const std::string& queue, std::uint64_t entry_id, std::uint64_t seq);
  /// Every entry of `queue`'s dead-letter queue (for the write that deletes the queue).
  std::vector<std::uint64_t> entries_of(const std::string& queue) const;
  /// `queue` was deleted, its `entries` erased by write `seq`: forgets its
  /// count and its redrives.
  void queue_deleted(const std::string& queue, const std::vector<std::uint64_t>& entries,
                     std::uint64_t seq);
  /// Writes up to `seq` are durable: erased entries are gone from disk too.
  void committed(std::uint64_t seq);

 private:
  struct QueueState {
    std::uint64_t count = 0;
    std::uint64_t trimmed_to = 0;  // entries up to this id are being erased by retention
    std::uint64_t redriving = 0;
  };
  struct RedriveJob {
    std::string queue;
    std::deque<std::uint64_t> ids;  // bounded by the entries of the DLQ
    engine::TokenBucket bucket;
  };
  Error list(const protocol::DeadLetterRequest& request, std::size_t max_bytes,
             DeadLetterResult& result);
  Error redrive(const protocol::DeadLetterRequest& request, DeadLetterResult& result);
  Error remove(const protocol::DeadLetterRequest& request, DeadLetterResult& result);
  /// Whether the entry exists and is not being erased (nullopt: the read failed).
  std::optional<bool> exists(const std::string& queue, std::uint64_t id) const;
  bool live(std::uint64_t id) const { return erasing_.count(id) == 0; }
  /// Erases the oldest entries of `queue` while over its dlq_max_entries.
  void trim(const std::string& queue, QueueState& state);
  /// Removes an entry: hidden and uncounted at once, the write submitted now.
  void erase_entry(const std::string& queue, std::uint64_t entry_id);
  /// Hides and uncounts an entry (false: it was going already).
  bool forget_entry(const std::string& queue, std::uint64_t entry_id);
  void redrive_step();
  void arm_redrive();
  void arm_sweep();

  engine::Engine& engine_;
  DurableStore& store_;
  storage::Env* env_ = nullptr;
  storage::DeadLetterStore db_;
  // Entries erased but perhaps not committed yet (still visible to readers):
  // id set plus (write seq, id) in order, pruned as commits come back. Both
  // bounded by the entries of the DLQs.
  std::unordered_set<std::uint64_t> erasing_;
  std::deque<std::pair<std::uint64_t, std::uint64_t>> erasing_order_;
  std::unordered_set<std::uint64_t> redrive_pending_;  // bounded by the entries of the DLQs
  StringMap<QueueState> queues_;                       // bounded by limits.max_queues
  std::deque<RedriveJob> redrives_;                    // one per accepted redrive request
  boost::asio::steady_timer redrive_timer_;
  boost::asio::steady_timer sweep_timer_;
  bool redrive_armed_ = false;
  bool stopped_ = false;
  // Timer handlers hold this; cleared at destruction.
  std::shared_ptr<DeadLetters*> alive_;
};

}  // namespace sluice::net
