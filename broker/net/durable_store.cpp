#include "durable_store.hpp"

#include <boost/asio/post.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "clock.hpp"
#include "log.hpp"
#include "seq_waiters.hpp"

namespace sluice::net {

using storage::storage_error;

namespace {

/// Removes temporary data directories of brokers that are gone (killed
/// without a chance to clean up): their lock is free.
void remove_stale_temporaries(const std::string& parent) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(parent, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("sluiced-") || name.size() != 14 || !entry.is_directory(ec)) continue;
    const std::string lock = entry.path().string() + "/sluiced.lock";
    const int fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;  // no lock yet: a broker may be creating it right now
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) std::filesystem::remove_all(entry.path(), ec);
    ::close(fd);
  }
}

/// Room kept for erases and small updates above the point where new records
/// stop (see GroupCommitter): an eighth of the store, from 256 KiB to 64 MiB.
std::uint64_t soft_limit(std::uint64_t max_size) {
  const std::uint64_t reserve =
      std::clamp<std::uint64_t>(max_size / 8, std::uint64_t{256} << 10, std::uint64_t{64} << 20);
  return max_size > reserve ? max_size - reserve : max_size / 2;
}

}  // namespace

DurableStore::DurableStore(boost::asio::io_context& io, engine::Engine& engine)
    : io_(io),
      engine_(engine),
      dead_letters_(io, engine, *this),
      alive_(std::make_shared<DurableStore*>(this)) {}

DurableStore::~DurableStore() {
  *alive_ = nullptr;  // commits reported from here on find no one
  dead_letters_.stop_timers();
  if (committer_) engine_.set_journal(nullptr);
  committer_.reset();  // commits what was handed over, joins the storage thread
  dir_.close();
  if (temporary_) {
    std::error_code ignored;
    std::filesystem::remove_all(options_.path, ignored);
  }
}

Error DurableStore::open(const StorageOptions& options) {
  options_ = options;
  storage::Env::Options env;
  if (options_.path.empty()) {
    // No data directory configured: dead letters still need a home; this one
    // lasts as long as the process.
    const char* tmp = std::getenv("TMPDIR");
    const std::string parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    remove_stale_temporaries(parent);
    std::string pattern = parent + "/sluiced-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
      return storage_error("cannot create a temporary data directory in " + pattern + ": " +
                           std::strerror(errno));
    options_.path = pattern;
    options_.sync = false;
    temporary_ = true;
  }
  env.map_size = options_.max_size;
  env.sync = options_.sync;
  if (auto problem = dir_.open(options_.path, env)) return problem;
  if (auto e = log_.open(dir_.env())) return storage_error(*e);
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
  // Counted before recovery: finishing it may dead-letter more.
  if (auto problem = dead_letters_.open(dir_.env())) return problem;
  engine_.set_journal(this);
  return {};
}

Error DurableStore::recover(engine::Micros now, std::int64_t wall_now,
                            storage::RecoveryStats& recovered) {
  std::uint64_t next_id = 1;
  const auto restore = [&](const storage::StoredMessage& m) {
    engine::Queue& queue = engine_.queue(m.queue);
    // A retry time is kept as wall time: the monotonic clock restarts with the machine.
    const engine::Micros not_before =
        m.not_before_wall_us > wall_now ? now + (m.not_before_wall_us - wall_now) : 0;
    engine_.restore(queue, m.id, m.message, m.publish_wall_us, m.attempts, not_before, now,
                    wall_now, m.interrupted);
  };
  if (auto e = log_.recover(dir_.env(), restore, next_id, recovered)) return storage_error(*e);
  // Ids first: a delivery the restart interrupted may take a dead-letter entry id.
  engine_.set_next_id(next_id);
  engine_.finish_recovery(now);
  return {};
}

void DurableStore::after_durable(std::uint64_t seq, std::function<void()> then) {
  after_durable_.emplace_back(seq, std::move(then));
}

void DurableStore::after_settled(std::uint64_t seq, std::function<void()> then) {
  after_settled_.emplace_back(seq, std::move(then));
}

std::uint64_t DurableStore::submit(storage::StorageOp op) {
  return committer_->submit(std::move(op));
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
                                   std::int64_t publish_wall_us, std::string_view message,
                                   std::uint64_t redriven_from) {
  storage::StorageOp op = log_.put_message(id, queue.name(), publish_wall_us, message);
  if (redriven_from == 0) return committer_->submit(std::move(op));
  // Back from the queue's own dead-letter queue: the write that stores the
  // message erases the entry, so after any crash it is in exactly one place.
  op.also.push_back(dead_letters_.erase_op(queue.name(), redriven_from));
  const std::uint64_t seq = committer_->submit(std::move(op));
  dead_letters_.erasing(queue.name(), redriven_from, seq);
  return seq;
}

void DurableStore::delivered(std::uint64_t id, std::uint32_t attempt) {
  committer_->submit(log_.put_delivery(id, attempt));
}

std::uint64_t DurableStore::attempted(std::uint64_t id, std::uint32_t attempt,
                                      engine::Micros not_before) {
  return committer_->submit(
      log_.put_attempts(id, attempt, not_before != 0 ? wall_of(not_before) : 0));
}

void DurableStore::removed(std::uint64_t id) {
  committer_->submit(log_.erase(id));
}

void DurableStore::dropped(const engine::Queue& queue, std::span<const std::uint64_t> ids,
                           bool whole_queue) {
  // One write: after any crash a purge happened or not, and a deleted queue
  // is whole or gone with its dead letters (it never comes back in part).
  std::vector<storage::StorageOp> ops;
  ops.reserve(ids.size());
  for (const std::uint64_t id : ids) ops.push_back(log_.erase(id));
  std::vector<std::uint64_t> entries;
  if (whole_queue) entries = dead_letters_.entries_of(queue.name());
  for (const std::uint64_t entry : entries)
    ops.push_back(dead_letters_.erase_op(queue.name(), entry));
  std::uint64_t seq = 0;
  if (!ops.empty()) {
    storage::StorageOp first = std::move(ops.front());
    first.also.reserve(ops.size() - 1);
    for (std::size_t i = 1; i < ops.size(); ++i) first.also.push_back(std::move(ops[i]));
    seq = committer_->submit(std::move(first));
  }
  if (whole_queue) dead_letters_.queue_deleted(queue.name(), entries, seq);
}

void DurableStore::ids_used(std::uint64_t next_id) {
  committer_->submit(log_.put_next_id(next_id));
}

std::uint64_t DurableStore::dead_lettered(const engine::DeadLetter& e) {
  storage::StorageOp op = dead_letters_.put(e);
  // One write: after any crash the message is in its queue or in the
  // dead-letter queue, never both and never neither.
  if (e.durable) op.also.push_back(log_.erase(e.message_id));
  const std::uint64_t seq = committer_->submit(std::move(op));
  dead_letters_.added(e);
  return seq;
}

void DurableStore::on_commit(const storage::CommitResult& result) {
  const auto now = mono_us();
  committer_->pump();  // the ring has room again
  if (result.operations != 0) {
    commit_duration_.observe(static_cast<std::int64_t>(result.duration_us));
    commit_batch_.observe(static_cast<std::int64_t>(result.operations));
  }
  const auto run = [](auto& then) { then(); };
  durable_seq_ = result.durable_seq;
  settled_seq_ = result.settled_seq;
  dead_letters_.committed(result.durable_seq);
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
  // After the engine made the messages ready: a confirm carries the pressure as it is now.
  take_through(after_durable_, result.durable_seq, run);
  take_through(after_settled_, result.settled_seq, run);
}

}  // namespace sluice::net
