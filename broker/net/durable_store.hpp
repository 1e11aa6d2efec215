// DurableStore: the engine's Journal over LMDB, and the bridge between the
// engine thread and the storage thread. It owns the data directory (lock and
// format check), the message log and the GroupCommitter; engine calls become
// StorageOps handed over without a lock; each commit comes back to the engine
// thread as one posted handler, which makes the staged messages ready
// (Engine::committed) and lets the sessions send their confirms.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "engine.hpp"
#include "sluice/protocol/frames.hpp"
#include "sluice/storage/data_dir.hpp"
#include "sluice/storage/dead_letter_store.hpp"
#include "sluice/storage/group_commit.hpp"
#include "sluice/storage/message_log.hpp"

namespace sluice::net {

class Session;

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

/// A refused dead-letter request: the code and a one-line reason.
struct DeadLetterError {
  errc code;
  std::string message;
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
  std::optional<std::string> open(const StorageOptions& options);
  /// Reads back every stored message into the engine, in id order (queues it
  /// names are created if the config did not declare them; attempts and
  /// retry times kept). Call once, after the config's queues are declared.
  std::optional<std::string> recover(engine::Micros now, std::int64_t wall_now,
                                     storage::RecoveryStats& recovered);

  /// `session->durable_committed(seq)` once every write up to `seq` is durable
  /// (not called if the session is gone by then).
  void when_durable(std::uint64_t seq, std::weak_ptr<Session> session);
  /// `session->durable_committed(...)` once every write up to `seq` is
  /// committed except new records waiting for room: for answers to acks,
  /// nacks and extends, whose writes never wait (storage.settle = "commit").
  void when_settled(std::uint64_t seq, std::weak_ptr<Session> session);
  /// Runs `then` on the engine thread once write `seq` is settled (as above).
  void after_settled(std::uint64_t seq, std::function<void()> then);
  /// The sequence number of the last write handed to storage.
  std::uint64_t last_seq() const noexcept { return committer_->last_seq(); }
  StorageStats stats() const;
  /// Runs on the engine thread after each commit was applied (the server
  /// re-arms its deadline timer: new deliveries carry lease deadlines).
  void set_after_commit(std::function<void()> f) { after_commit_ = std::move(f); }
  /// True when the data directory is a temporary one (storage.path not set).
  bool temporary() const noexcept { return temporary_; }

  /// Runs one DEAD_LETTERS request and appends its DEAD_LETTERS_RESULT frame
  /// to `out` (a list page stops short of `max_frame_bytes`); or the error.
  std::optional<DeadLetterError> dead_letters(const protocol::DeadLetterRequest& request,
                                              std::string& out, std::uint32_t max_frame_bytes);
  /// Entries in `queue`'s dead-letter queue, and those waiting to be redriven.
  std::uint64_t dead_letter_count(std::string_view queue) const;
  std::uint64_t redriving(std::string_view queue) const;
  /// Applies every queue's retention by age (dlq_retention). The server calls
  /// it once a minute; retention by count applies as entries arrive.
  void sweep(std::int64_t wall_now);
  /// Stops the retention and redrive timers (shutdown: io.run() may return).
  void stop_timers();
  /// Runs `then` on the engine thread once every write up to `seq` is durable.
  void after_durable(std::uint64_t seq, std::function<void()> then);
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
  void ids_used(std::uint64_t next_id) override;
  std::uint64_t dead_lettered(const engine::DeadLetter& entry) override;

 private:
  void on_commit(const storage::CommitResult& result);  // engine thread
  struct DlqState {
    std::uint64_t count = 0;
    std::uint64_t trimmed_to = 0;  // entries up to this id are being erased by retention
    std::uint64_t redriving = 0;
  };
  /// Erases the oldest entries of `queue` while over its dlq_max_entries.
  void trim(const std::string& queue, DlqState& state);
  /// Removes an entry: hidden and uncounted at once, the write submitted now.
  void erase_entry(const std::string& queue, std::uint64_t entry_id);
  /// Hides and uncounts an entry whose erase the caller writes (false: it was
  /// going already). The caller records the write in erasing_order_.
  bool forget_entry(const std::string& queue, std::uint64_t entry_id);
  std::optional<DeadLetterError> run_dead_letters(const protocol::DeadLetterRequest& request,
                                                  std::string& out, std::uint32_t max_frame_bytes);
  /// Whether `r` passes the request's filters (age, reason).
  static bool matches(const protocol::DeadLetterRequest& request,
                      const storage::DeadLetterRecord& r, std::int64_t wall_now);
  // Redrive: entries move back to their queue at the request's rate.
  struct RedriveJob {
    std::string queue;
    std::deque<std::uint64_t> ids;
    engine::TokenBucket bucket;
  };
  void redrive_step();
  void arm_redrive();

  void arm_sweep();

  boost::asio::io_context& io_;
  engine::Engine& engine_;
  StorageOptions options_;
  storage::DataDir dir_;
  storage::MessageLog log_;
  std::unique_ptr<storage::GroupCommitter> committer_;
  std::deque<std::pair<std::uint64_t, std::weak_ptr<Session>>> waiting_;  // in seq order
  std::deque<std::pair<std::uint64_t, std::weak_ptr<Session>>> settle_waiting_;
  std::deque<std::pair<std::uint64_t, std::function<void()>>> after_settled_;
  bool full_ = false;
  std::function<void()> after_commit_;
  bool temporary_ = false;
  storage::DeadLetterStore dead_letters_;
  // Entries erased but perhaps not committed yet (still visible to readers):
  // id set plus (write seq, id) in order, pruned as commits come back.
  std::unordered_set<std::uint64_t> erasing_;
  std::deque<std::pair<std::uint64_t, std::uint64_t>> erasing_order_;
  std::unordered_set<std::uint64_t> redrive_pending_;
  std::deque<std::pair<std::uint64_t, std::function<void()>>> after_durable_;  // in seq order
  std::unordered_map<std::string, DlqState> dlq_;                              // by queue name
  std::deque<RedriveJob> redrives_;
  boost::asio::steady_timer redrive_timer_;
  boost::asio::steady_timer sweep_timer_;
  bool redrive_armed_ = false;
  bool stopped_ = false;
  static constexpr std::int64_t kBatchBounds[] = {1,   2,   5,    10,   20,   50,    100,
                                                  200, 500, 1000, 2000, 5000, 10000, 50000};
  engine::Histogram commit_duration_{engine::kLatencyBoundsUs};
  engine::Histogram commit_batch_{kBatchBounds};
  // Handlers posted by the storage thread hold this; cleared at destruction.
  std::shared_ptr<DurableStore*> alive_;
};

}  // namespace sluice::net
