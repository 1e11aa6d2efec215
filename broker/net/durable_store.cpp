#include "durable_store.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>

#include "log.hpp"
#include "server.hpp"
#include "session.hpp"

namespace sluice::net {

namespace {

/// Room kept for erases and small updates above the point where new records
/// stop (see GroupCommitter): an eighth of the store, from 256 KiB to 64 MiB.
std::uint64_t soft_limit(std::uint64_t max_size) {
  const std::uint64_t reserve =
      std::clamp<std::uint64_t>(max_size / 8, std::uint64_t{256} << 10, std::uint64_t{64} << 20);
  return max_size > reserve ? max_size - reserve : max_size / 2;
}

}  // namespace

DurableStore::DurableStore(boost::asio::io_context& io, engine::Engine& engine)
    : io_(io), engine_(engine), alive_(std::make_shared<DurableStore*>(this)) {}

DurableStore::~DurableStore() {
  *alive_ = nullptr;  // commits reported from here on find no one
  if (committer_) engine_.set_journal(nullptr);
  committer_.reset();  // commits what was handed over, joins the storage thread
  dir_.close();
}

std::optional<std::string> DurableStore::open(const StorageOptions& options) {
  options_ = options;
  storage::Env::Options env;
  env.map_size = options.max_size;
  env.sync = options.sync;
  if (auto problem = dir_.open(options.path, env)) return problem;
  if (auto e = log_.open(dir_.env())) return e->to_string();
  storage::GroupCommitter::Options committer;
  committer.soft_limit = soft_limit(options.max_size);
  // One batch may pass the soft limit by at most half the room kept above it.
  committer.max_batch_bytes = std::min<std::uint64_t>(
      committer.max_batch_bytes, (options.max_size - committer.soft_limit) / 2);
  committer_ = std::make_unique<storage::GroupCommitter>(
      dir_.env(),
      [alive = alive_, &io = io_](const storage::CommitResult& result) {
        // Storage thread: hand the result to the engine thread.
        boost::asio::post(io, [alive, result] {
          if (*alive) (*alive)->on_commit(result);
        });
      },
      committer);
  engine_.set_journal(this);
  return std::nullopt;
}

std::optional<std::string> DurableStore::recover(engine::Micros now, std::int64_t wall_now,
                                                 storage::RecoveryStats& recovered) {
  std::uint64_t next_id = 1;
  const auto restore = [&](const storage::StoredMessage& m) {
    engine::Queue& queue = engine_.queue(m.queue);
    // A retry time is kept as wall time: the monotonic clock restarts with the machine.
    const engine::Micros not_before =
        m.not_before_wall_us > wall_now ? now + (m.not_before_wall_us - wall_now) : 0;
    engine_.restore(queue, m.id, m.message, m.publish_wall_us, m.attempts, not_before, now);
  };
  if (auto e = log_.recover(dir_.env(), restore, next_id, recovered)) return e->to_string();
  engine_.set_next_id(next_id);
  return std::nullopt;
}

void DurableStore::when_durable(std::uint64_t seq, std::weak_ptr<Session> session) {
  waiting_.emplace_back(seq, std::move(session));
}

StorageStats DurableStore::stats() const {
  StorageStats s;
  (void)dir_.env().usage(s.usage, true);
  s.commits = committer_->stats();
  s.limit = options_.max_size;
  s.full = full_;
  return s;
}

std::uint64_t DurableStore::stored(const engine::Queue& queue, std::uint64_t id,
                                   std::int64_t publish_wall_us, std::string_view message) {
  return committer_->submit(log_.put_message(id, queue.name(), publish_wall_us, message));
}

void DurableStore::attempted(std::uint64_t id, std::uint32_t attempt, engine::Micros not_before) {
  std::int64_t wall = 0;
  if (not_before != 0) wall = Server::wall_us() + (not_before - Server::now());
  committer_->submit(log_.put_attempts(id, attempt, wall));
}

void DurableStore::removed(std::uint64_t id) {
  committer_->submit(log_.erase_message(id));
  committer_->submit(log_.erase_attempts(id));
}

void DurableStore::ids_used(std::uint64_t next_id) {
  committer_->submit(log_.put_next_id(next_id));
}

void DurableStore::on_commit(const storage::CommitResult& result) {
  const auto now = Server::now();
  committer_->pump();  // the ring has room again
  engine_.committed(result.durable_seq, now);
  if (result.full != full_) {
    full_ = result.full;
    if (full_)
      log::warn("storage_full")
          .str("detail", result.error ? result.error->to_string() : "storage.max_size reached")
          .str("effect", "publishes to durable queues meet their overflow policy");
    else
      log::info("storage_has_room");
    engine_.set_storage_full(full_, now);
  }
  while (!waiting_.empty() && waiting_.front().first <= result.durable_seq) {
    auto session = waiting_.front().second.lock();
    waiting_.pop_front();
    if (session) session->durable_committed(result.durable_seq);
  }
  if (after_commit_) after_commit_();
}

}  // namespace sluice::net
