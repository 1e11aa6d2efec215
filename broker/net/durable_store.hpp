// DurableStore: the engine's Journal over LMDB, and the bridge between the
// engine thread and the storage thread. It owns the data directory (lock and
// format check), the message log, the dead-letter queues and the
// GroupCommitter; engine calls become StorageOps handed over without a lock;
// each commit comes back to the engine thread as one posted handler, which
// makes the staged messages ready (Engine::committed) and runs what waits for
// that commit (a confirm, a settle answer, an HTTP response). It knows
// nothing of connections or frames.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "dead_letters.hpp"
#include "engine.hpp"
#include "sluice/storage/data_dir.hpp"
#include "sluice/storage/group_commit.hpp"
#include "sluice/storage/message_log.hpp"

namespace sluice::net {

struct StorageOptions {
  /// "" : a temporary directory, removed at exit (dead letters only; no durable queues).
  std::string path;
  bool sync = true;
  std::uint64_t max_size = 4ull << 30;
};

/// Everything `sluicectl stats` shows about storage.
struct StorageStats {
  storage::EnvUsage usage;
  storage::CommitStats commits;
  std::uint64_t limit = 0;
  bool full = false;
};

/// Engine thread only, except the committer's callback (which only posts).
class DurableStore final : public engine::Journal {
 public:
  DurableStore(boost::asio::io_context& io, engine::Engine& engine);
  ~DurableStore();
  DurableStore(const DurableStore&) = delete;
  DurableStore& operator=(const DurableStore&) = delete;

  /// Opens (creating) the data directory, starts the storage thread and
  /// attaches itself to the engine as its journal, so durable queues can be
  /// declared. The problem as one line, or nullopt.
  Error open(const StorageOptions& options);
  /// Reads back every stored message into the engine, in id order (queues it
  /// names are created if the config did not declare them; attempts and
  /// retry times kept). Call once, after the config's queues are declared.
  Error recover(engine::Micros now, std::int64_t wall_now, storage::RecoveryStats& recovered);

  /// The one way to wait for storage: runs `then` on the engine thread once
  /// every write up to `seq` is durable.
  void after_durable(std::uint64_t seq, std::function<void()> then);
  /// Runs `then` once write `seq` is settled: every write up to it committed
  /// except new records waiting for room (acks, nacks and extends never wait
  /// for room; storage.settle = "commit" answers them after this).
  void after_settled(std::uint64_t seq, std::function<void()> then);
  /// The sequence number of the last write handed to storage.
  std::uint64_t last_seq() const noexcept { return committer_->last_seq(); }
  /// Every write up to this is durable (as of the last commit handled).
  std::uint64_t durable_seq() const noexcept { return durable_seq_; }
  /// Every write up to this is settled (see after_settled).
  std::uint64_t settled_seq() const noexcept { return settled_seq_; }
  /// Hands one write to the storage thread; its sequence number.
  std::uint64_t submit(storage::StorageOp op);
  StorageStats stats() const;
  /// True when the data directory is a temporary one (storage.path not set).
  bool temporary() const noexcept { return temporary_; }
  DeadLetters& dead_letters() noexcept { return dead_letters_; }
  const DeadLetters& dead_letters() const noexcept { return dead_letters_; }
  /// Group commits: time from begin to durable (µs), and operations per commit.
  const engine::Histogram& commit_duration() const noexcept { return commit_duration_; }
  const engine::Histogram& commit_batch() const noexcept { return commit_batch_; }

  // engine::Journal
  std::uint64_t stored(const engine::Queue& queue, std::uint64_t id, std::int64_t publish_wall_us,
                       std::string_view message, std::uint64_t redriven_from) override;
  void delivered(std::uint64_t id, std::uint32_t attempt) override;
  std::uint64_t attempted(std::uint64_t id, std::uint32_t attempt,
                          engine::Micros not_before) override;
  void removed(std::uint64_t id) override;
  void dropped(const engine::Queue& queue, std::span<const std::uint64_t> ids,
               bool whole_queue) override;
  void ids_used(std::uint64_t next_id) override;
  std::uint64_t dead_lettered(const engine::DeadLetter& entry) override;

 private:
  void on_commit(const storage::CommitResult& result);  // engine thread

  boost::asio::io_context& io_;
  engine::Engine& engine_;
  StorageOptions options_;
  storage::DataDir dir_;
  storage::MessageLog log_;
  std::unique_ptr<storage::GroupCommitter> committer_;
  DeadLetters dead_letters_;
  // Waiting for a commit, in seq order. Bounded by the writes in flight: each
  // connection's pending publishes (limits.max_pending_publishes) and HTTP
  // requests (http.max_connections, one request each).
  std::deque<std::pair<std::uint64_t, std::function<void()>>> after_durable_;
  std::deque<std::pair<std::uint64_t, std::function<void()>>> after_settled_;
  std::uint64_t durable_seq_ = 0;
  std::uint64_t settled_seq_ = 0;
  bool full_ = false;
  bool temporary_ = false;
  static constexpr std::int64_t kBatchBounds[] = {1,   2,   5,    10,   20,   50,    100,
                                                  200, 500, 1000, 2000, 5000, 10000, 50000};
  engine::Histogram commit_duration_{engine::kLatencyBoundsUs};
  engine::Histogram commit_batch_{kBatchBounds};
  // Handlers posted by the storage thread hold this; cleared at destruction.
  std::shared_ptr<DurableStore*> alive_;
};

}  // namespace sluice::net
