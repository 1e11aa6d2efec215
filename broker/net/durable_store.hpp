// DurableStore: the engine's Journal over LMDB, and the bridge between the
// engine thread and the storage thread. It owns the data directory (lock and
// format check), the message log and the GroupCommitter; engine calls become
// StorageOps handed over without a lock; each commit comes back to the engine
// thread as one posted handler, which makes the staged messages ready
// (Engine::committed) and lets the sessions send their confirms.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "engine.hpp"
#include "sluice/storage/data_dir.hpp"
#include "sluice/storage/group_commit.hpp"
#include "sluice/storage/message_log.hpp"

namespace sluice::net {

class Session;

struct StorageOptions {
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
  std::optional<std::string> open(const StorageOptions& options);
  /// Reads back every stored message into the engine, in id order (queues it
  /// names are created if the config did not declare them; attempts and
  /// retry times kept). Call once, after the config's queues are declared.
  std::optional<std::string> recover(engine::Micros now, std::int64_t wall_now,
                                     storage::RecoveryStats& recovered);

  /// `session->durable_committed(seq)` once every write up to `seq` is durable
  /// (not called if the session is gone by then).
  void when_durable(std::uint64_t seq, std::weak_ptr<Session> session);
  /// The sequence number of the last write handed to storage.
  std::uint64_t last_seq() const noexcept { return committer_->last_seq(); }
  StorageStats stats() const;
  /// Runs on the engine thread after each commit was applied (the server
  /// re-arms its deadline timer: new deliveries carry lease deadlines).
  void set_after_commit(std::function<void()> f) { after_commit_ = std::move(f); }

  // engine::Journal
  std::uint64_t stored(const engine::Queue& queue, std::uint64_t id, std::int64_t publish_wall_us,
                       std::string_view message) override;
  void attempted(std::uint64_t id, std::uint32_t attempt, engine::Micros not_before) override;
  void removed(std::uint64_t id) override;
  void ids_used(std::uint64_t next_id) override;

 private:
  void on_commit(const storage::CommitResult& result);  // engine thread

  boost::asio::io_context& io_;
  engine::Engine& engine_;
  StorageOptions options_;
  storage::DataDir dir_;
  storage::MessageLog log_;
  std::unique_ptr<storage::GroupCommitter> committer_;
  std::deque<std::pair<std::uint64_t, std::weak_ptr<Session>>> waiting_;  // in seq order
  bool full_ = false;
  std::function<void()> after_commit_;
  // Handlers posted by the storage thread hold this; cleared at destruction.
  std::shared_ptr<DurableStore*> alive_;
};

}  // namespace sluice::net
