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

#include "log.hpp"
#include "message_log.hpp"
#include "server.hpp"
#include "session.hpp"

namespace sluice::net {

namespace {

/// Room kept for erases and small updates above the point where new records
/// stop (see GroupCommitter): an eighth of the store, from 256 KiB to 64 MiB.
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

/// Engine time as wall time (µs since the epoch): what storage keeps, since
/// the monotonic clock restarts with the machine.
std::int64_t wall_of(engine::Micros t) {
  return Server::wall_us() + (t - Server::now());
}

/// Pops the entries of `queue` (in sequence order) up to write `seq`, handing
/// each one's value to `f`.
template <typename T, typename F>
void take_through(std::deque<std::pair<std::uint64_t, T>>& queue, std::uint64_t seq, F&& f) {
  while (!queue.empty() && queue.front().first <= seq) {
    auto value = std::move(queue.front().second);
    queue.pop_front();
    f(value);
  }
}

std::uint64_t soft_limit(std::uint64_t max_size) {
  const std::uint64_t reserve =
      std::clamp<std::uint64_t>(max_size / 8, std::uint64_t{256} << 10, std::uint64_t{64} << 20);
  return max_size > reserve ? max_size - reserve : max_size / 2;
}

}  // namespace

DurableStore::DurableStore(boost::asio::io_context& io, engine::Engine& engine)
    : io_(io),
      engine_(engine),
      redrive_timer_(io),
      sweep_timer_(io),
      alive_(std::make_shared<DurableStore*>(this)) {}

DurableStore::~DurableStore() {
  *alive_ = nullptr;  // commits reported from here on find no one
  redrive_timer_.cancel();
  sweep_timer_.cancel();
  if (committer_) engine_.set_journal(nullptr);
  committer_.reset();  // commits what was handed over, joins the storage thread
  dir_.close();
  if (temporary_) {
    std::error_code ignored;
    std::filesystem::remove_all(options_.path, ignored);
  }
}

std::optional<std::string> DurableStore::open(const StorageOptions& options) {
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
      return "cannot create a temporary data directory in " + pattern + ": " + std::strerror(errno);
    options_.path = pattern;
    options_.sync = false;
    temporary_ = true;
  }
  env.map_size = options_.max_size;
  env.sync = options_.sync;
  if (auto problem = dir_.open(options_.path, env)) return problem;
  if (auto e = log_.open(dir_.env())) return e->to_string();
  if (auto e = dead_letters_.open(dir_.env())) return e->to_string();
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
  arm_sweep();
  return std::nullopt;
}

std::optional<std::string> DurableStore::recover(engine::Micros now, std::int64_t wall_now,
                                                 storage::RecoveryStats& recovered) {
  std::uint64_t next_id = 1;
  // Counted first: finishing the recovery may dead-letter more.
  if (auto e = dead_letters_.count(dir_.env(), [&](std::string_view queue, std::uint64_t n) {
        dlq_[std::string(queue)].count = n;
      }))
    return e->to_string();
  const auto restore = [&](const storage::StoredMessage& m) {
    engine::Queue& queue = engine_.queue(m.queue);
    // A retry time is kept as wall time: the monotonic clock restarts with the machine.
    const engine::Micros not_before =
        m.not_before_wall_us > wall_now ? now + (m.not_before_wall_us - wall_now) : 0;
    engine_.restore(queue, m.id, m.message, m.publish_wall_us, m.attempts, not_before, now,
                    wall_now, m.interrupted);
  };
  if (auto e = log_.recover(dir_.env(), restore, next_id, recovered)) return e->to_string();
  // Ids first: a delivery the restart interrupted may take a dead-letter entry id.
  engine_.set_next_id(next_id);
  engine_.finish_recovery(now);
  return std::nullopt;
}

void DurableStore::when_durable(std::uint64_t seq, std::weak_ptr<Session> session) {
  waiting_.emplace_back(seq, std::move(session));
}

void DurableStore::when_settled(std::uint64_t seq, std::weak_ptr<Session> session) {
  settle_waiting_.emplace_back(seq, std::move(session));
}

void DurableStore::after_settled(std::uint64_t seq, std::function<void()> then) {
  after_settled_.emplace_back(seq, std::move(then));
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
  op.also.push_back(dead_letters_.erase(queue.name(), redriven_from));
  const std::uint64_t seq = committer_->submit(std::move(op));
  if (forget_entry(queue.name(), redriven_from)) erasing_order_.emplace_back(seq, redriven_from);
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

void DurableStore::ids_used(std::uint64_t next_id) {
  committer_->submit(log_.put_next_id(next_id));
}

void DurableStore::on_commit(const storage::CommitResult& result) {
  const auto now = Server::now();
  committer_->pump();  // the ring has room again
  if (result.operations != 0) {
    commit_duration_.observe(static_cast<std::int64_t>(result.duration_us));
    commit_batch_.observe(static_cast<std::int64_t>(result.operations));
  }
  const auto run = [](auto& then) { then(); };
  take_through(erasing_order_, result.durable_seq, [&](std::uint64_t id) { erasing_.erase(id); });
  take_through(after_durable_, result.durable_seq, run);
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
  const auto tell = [&](const std::weak_ptr<Session>& waiter) {
    if (auto session = waiter.lock())
      session->durable_committed(result.durable_seq, result.settled_seq);
  };
  take_through(waiting_, result.durable_seq, tell);
  take_through(settle_waiting_, result.settled_seq, tell);
  take_through(after_settled_, result.settled_seq, run);
  if (after_commit_) after_commit_();
}

}  // namespace sluice::net

namespace sluice::net {

namespace {

/// A failure time as wall time (0: none).
std::int64_t to_wall(engine::Micros t) {
  return t == engine::kNever ? 0 : wall_of(t);
}

constexpr std::uint32_t kDefaultPage = 100;
constexpr std::uint32_t kMaxPage = 1000;
constexpr std::size_t kRedriveBatch =
    1000;  // per queue per step: the engine thread stays responsive

}  // namespace

std::uint64_t DurableStore::dead_lettered(const engine::DeadLetter& e) {
  storage::DeadLetterRecord r;
  r.queue = e.queue.name();
  r.entry_id = e.entry_id;
  r.message_id = e.message_id;
  r.publish_wall_us = e.publish_wall_us;
  r.attempts = e.attempts;
  r.first_failure_wall_us = to_wall(e.first_failure);
  r.last_failure_wall_us = to_wall(e.last_failure);
  r.reason = e.reason;
  r.message = e.message;
  storage::StorageOp op = dead_letters_.put(r);
  // One write: after any crash the message is in its queue or in the
  // dead-letter queue, never both and never neither.
  if (e.durable) op.also.push_back(log_.erase(e.message_id));
  const std::uint64_t seq = committer_->submit(std::move(op));
  DlqState& state = dlq_[e.queue.name()];
  state.count++;
  trim(e.queue.name(), state);
  log::info("dead_lettered")
      .str("queue", e.queue.name())
      .unum("message_id", e.message_id)
      .unum("entry_id", e.entry_id)
      .unum("attempts", e.attempts)
      .str("reason", e.reason)
      .str("correlation_id", correlation_id_of(e.message));
  return seq;
}

bool DurableStore::forget_entry(const std::string& queue, std::uint64_t entry_id) {
  if (!erasing_.insert(entry_id).second) return false;
  DlqState& state = dlq_[queue];
  if (state.count > 0) state.count--;
  return true;
}

void DurableStore::erase_entry(const std::string& queue, std::uint64_t entry_id) {
  if (!forget_entry(queue, entry_id)) return;
  erasing_order_.emplace_back(committer_->submit(dead_letters_.erase(queue, entry_id)), entry_id);
}

void DurableStore::after_durable(std::uint64_t seq, std::function<void()> then) {
  after_durable_.emplace_back(seq, std::move(then));
}

void DurableStore::trim(const std::string& queue, DlqState& state) {
  const engine::Queue* q = engine_.find(queue);
  const std::uint64_t max = q != nullptr ? q->options().dlq_max_entries : 100'000;
  if (state.count <= max) return;
  std::uint64_t excess = state.count - max;
  std::vector<std::uint64_t> victims;
  (void)dead_letters_.scan(dir_.env(), queue, false, state.trimmed_to,
                           [&](const storage::DeadLetterRecord& r) {
                             if (erasing_.count(r.entry_id) || redrive_pending_.count(r.entry_id))
                               return true;
                             victims.push_back(r.entry_id);
                             return --excess > 0;
                           });
  for (auto id : victims) {
    erase_entry(queue, id);
    state.trimmed_to = id;
  }
  if (!victims.empty())
    log::info("dead_letters_trimmed").str("queue", queue).unum("entries", victims.size());
}

void DurableStore::sweep(std::int64_t wall_now) {
  for (auto& [queue, state] : dlq_) {
    if (state.count == 0) continue;
    const engine::Queue* q = engine_.find(queue);
    const engine::Micros retention =
        q != nullptr ? q->options().dlq_retention : engine::QueueOptions{}.dlq_retention;
    const std::int64_t cutoff = wall_now - retention;
    std::vector<std::uint64_t> victims;
    (void)dead_letters_.scan(
        dir_.env(), queue, false, state.trimmed_to, [&](const storage::DeadLetterRecord& r) {
          // Entries are in dead-letter order: the first young one ends it.
          if (r.last_failure_wall_us >= cutoff) return false;
          if (!erasing_.count(r.entry_id) && !redrive_pending_.count(r.entry_id))
            victims.push_back(r.entry_id);
          return victims.size() < 100'000;
        });
    for (auto id : victims) {
      erase_entry(queue, id);
      state.trimmed_to = id;
    }
    if (!victims.empty())
      log::info("dead_letters_expired").str("queue", queue).unum("entries", victims.size());
  }
}

void DurableStore::stop_timers() {
  stopped_ = true;
  redrive_timer_.cancel();
  sweep_timer_.cancel();
}

void DurableStore::arm_sweep() {
  if (stopped_) return;
  sweep_timer_.expires_after(std::chrono::minutes(1));
  sweep_timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    (*alive)->sweep(Server::wall_us());
    (*alive)->arm_sweep();
  });
}

std::uint64_t DurableStore::dead_letter_count(std::string_view queue) const {
  auto it = dlq_.find(std::string(queue));
  return it == dlq_.end() ? 0 : it->second.count;
}

std::uint64_t DurableStore::redriving(std::string_view queue) const {
  auto it = dlq_.find(std::string(queue));
  return it == dlq_.end() ? 0 : it->second.redriving;
}

bool DurableStore::matches(const protocol::DeadLetterRequest& request,
                           const storage::DeadLetterRecord& r, std::int64_t wall_now) {
  const std::int64_t age_ms = (wall_now - r.last_failure_wall_us) / 1000;
  if (request.min_age_ms != 0 && age_ms < static_cast<std::int64_t>(request.min_age_ms))
    return false;
  if (request.max_age_ms != 0 && age_ms > static_cast<std::int64_t>(request.max_age_ms))
    return false;
  return request.reason.empty() || r.reason.find(request.reason) != std::string_view::npos;
}

std::optional<DeadLetterError> DurableStore::dead_letters(
    const protocol::DeadLetterRequest& request, std::string& out, std::uint32_t max_frame_bytes) {
  // The result frame is begun before the answer is known: an error takes it back.
  const std::size_t mark = out.size();
  auto error = run_dead_letters(request, out, max_frame_bytes);
  if (error) out.resize(mark);
  return error;
}

std::optional<DeadLetterError> DurableStore::run_dead_letters(
    const protocol::DeadLetterRequest& request, std::string& out, std::uint32_t max_frame_bytes) {
  using protocol::DeadLetterOp;
  const std::string queue(request.queue);
  const std::int64_t wall_now = Server::wall_us();
  const auto to_entry = [](const storage::DeadLetterRecord& r) {
    protocol::DeadLetterEntry e;
    e.entry_id = r.entry_id;
    e.message_id = r.message_id;
    e.queue = r.queue;
    e.attempts = r.attempts;
    e.publish_time_us = static_cast<std::uint64_t>(r.publish_wall_us);
    e.first_failure_us = static_cast<std::uint64_t>(r.first_failure_wall_us);
    e.last_failure_us = static_cast<std::uint64_t>(r.last_failure_wall_us);
    e.reason = r.reason;
    e.message = r.message;
    return e;
  };
  const auto failed = [](const storage::StorageError& e) {
    return DeadLetterError{errc::internal, "dead letters: " + e.to_string()};
  };
  const auto live = [&](std::uint64_t id) { return erasing_.count(id) == 0; };
  const auto exists = [&](std::uint64_t id) -> std::optional<bool> {
    std::optional<storage::OwnedDeadLetter> found;
    if (auto e = dead_letters_.get(dir_.env(), queue, id, found)) return std::nullopt;
    return found.has_value() && live(id);
  };

  protocol::DeadLettersResultWriter writer(out, request.request_id);
  std::uint64_t affected = 0, next_after = 0;
  switch (request.op) {
    case DeadLetterOp::list: {
      const std::uint32_t limit =
          request.limit == 0 ? kDefaultPage : std::min(request.limit, kMaxPage);
      // Room for the frame header and totals; a page ends before the frame limit.
      std::size_t room = max_frame_bytes > 4096 ? max_frame_bytes - 4096 : 0;
      std::uint32_t taken = 0;
      bool more = false;  // a matching entry did not fit on this page
      if (auto e = dead_letters_.scan(
              dir_.env(), queue, request.flags & protocol::kDeadLettersNewestFirst, request.after,
              [&](const storage::DeadLetterRecord& r) {
                if (!live(r.entry_id) || !matches(request, r, wall_now)) return true;
                auto entry = to_entry(r);
                std::size_t bytes = protocol::DeadLettersResultWriter::entry_bytes(entry);
                more = taken == limit || (bytes > room && taken != 0);
                if (more) return false;
                if (bytes > room) {
                  // Alone too large for a frame: listed without its message, so
                  // the listing goes on past it (show refuses it, redrive works).
                  entry.message = {};
                  bytes = protocol::DeadLettersResultWriter::entry_bytes(entry);
                  more = bytes > room;
                  if (more) return false;
                }
                writer.add(entry);
                room -= bytes;
                taken++;
                next_after = r.entry_id;
                return true;
              }))
        return failed(*e);
      affected = dead_letter_count(queue);
      // A page that stopped at an entry it could not take has a cursor; the last has none.
      if (!more) next_after = 0;
      break;
    }
    case DeadLetterOp::show: {
      std::optional<storage::OwnedDeadLetter> found;
      if (auto e = dead_letters_.get(dir_.env(), queue, request.ids[0], found)) return failed(*e);
      if (!found || !live(request.ids[0]))
        return DeadLetterError{errc::not_found,
                               "no dead letter " + std::to_string(request.ids[0]) + " in " + queue};
      const auto entry = to_entry(found->record);
      if (protocol::DeadLettersResultWriter::entry_bytes(entry) + 4096 > max_frame_bytes)
        return DeadLetterError{errc::payload_too_large, "the entry is larger than a frame"};
      writer.add(entry);
      affected = 1;
      break;
    }
    case DeadLetterOp::redrive: {
      RedriveJob job;
      job.queue = queue;
      if (request.rate_milli != 0)
        job.bucket = engine::TokenBucket(request.rate_milli, 1, Server::now());
      // Marked pending only once the request has succeeded as a whole.
      std::unordered_set<std::uint64_t> taken;
      const auto take = [&](std::uint64_t id) {
        if (!redrive_pending_.count(id) && taken.insert(id).second) job.ids.push_back(id);
      };
      if (!request.ids.empty()) {
        for (auto id : request.ids) {
          auto present = exists(id);
          if (!present) return DeadLetterError{errc::internal, "dead letters: read failed"};
          if (*present) take(id);
        }
      } else if (auto e = dead_letters_.scan(
                     dir_.env(), queue, false, 0, [&](const storage::DeadLetterRecord& r) {
                       if (live(r.entry_id) && matches(request, r, wall_now)) take(r.entry_id);
                       return true;
                     })) {
        return failed(*e);
      }
      affected = job.ids.size();
      redrive_pending_.insert(job.ids.begin(), job.ids.end());
      if (!job.ids.empty()) {
        dlq_[queue].redriving += job.ids.size();
        log::info("redrive_started")
            .str("queue", queue)
            .unum("entries", job.ids.size())
            .unum("rate_milli", request.rate_milli);
        redrives_.push_back(std::move(job));
        arm_redrive();
      }
      break;
    }
    case DeadLetterOp::remove: {
      if (request.ids.empty())
        return DeadLetterError{errc::invalid_argument,
                               "dead_letters: remove needs entry ids (purge removes all)"};
      // All or nothing: an id that is not there (or is being redriven) is
      // not_found, and then nothing is removed.
      for (auto id : request.ids) {
        auto present = exists(id);
        if (!present) return DeadLetterError{errc::internal, "dead letters: read failed"};
        if (!*present || redrive_pending_.count(id))
          return DeadLetterError{errc::not_found, "no dead letter " + std::to_string(id) + " in " +
                                                      queue +
                                                      (*present ? " (it is being redriven)" : "")};
      }
      for (auto id : request.ids) {
        if (erasing_.count(id)) continue;  // named twice
        erase_entry(queue, id);
        affected++;
      }
      break;
    }
    case DeadLetterOp::purge: {
      std::vector<std::uint64_t> ids;
      if (auto e = dead_letters_.scan(dir_.env(), queue, false, 0,
                                      [&](const storage::DeadLetterRecord& r) {
                                        if (live(r.entry_id) && !redrive_pending_.count(r.entry_id))
                                          ids.push_back(r.entry_id);
                                        return true;
                                      }))
        return failed(*e);
      for (auto id : ids) erase_entry(queue, id);
      affected = ids.size();
      log::info("dead_letters_purged").str("queue", queue).unum("entries", affected);
      break;
    }
  }
  writer.finish(affected, next_after);
  return std::nullopt;
}

void DurableStore::arm_redrive() {
  if (redrive_armed_ || redrives_.empty() || stopped_) return;
  redrive_armed_ = true;
  redrive_timer_.expires_after(std::chrono::milliseconds(5));
  redrive_timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    (*alive)->redrive_armed_ = false;
    (*alive)->redrive_step();
  });
}

void DurableStore::redrive_step() {
  const auto now = Server::now();
  for (auto& job : redrives_) {
    engine::Queue& queue = engine_.queue(job.queue);
    std::size_t moved = 0;
    while (!job.ids.empty() && moved < kRedriveBatch) {
      const std::uint64_t id = job.ids.front();
      std::optional<storage::OwnedDeadLetter> found;
      if (auto e = dead_letters_.get(dir_.env(), job.queue, id, found)) {
        log::warn("redrive_read_failed").str("queue", job.queue).str("detail", e->to_string());
        break;  // try again next step
      }
      if (found && !erasing_.count(id)) {
        if (!job.bucket.unlimited() && !job.bucket.try_take(now)) break;
        // A full queue waits: redrive never pushes past the queue's limits.
        if (engine_.admit(queue, 1, now, /*count_refusal=*/false).code != errc::ok) {
          if (!job.bucket.unlimited()) job.bucket.refund();
          break;
        }
        const auto published =
            engine_.publish(queue, found->record.message, now, Server::wall_us(), id);
        log::info("redriven")
            .str("queue", job.queue)
            .unum("entry_id", id)
            .unum("message_id", published.id)
            .str("correlation_id", correlation_id_of(found->record.message));
        // Into a durable queue, the write that stored the message erased the
        // entry too (DurableStore::stored); into a memory queue it goes now.
        if (!queue.durable()) erase_entry(job.queue, id);
        moved++;
      }
      job.ids.pop_front();
      redrive_pending_.erase(id);
      DlqState& state = dlq_[job.queue];
      if (state.redriving > 0) state.redriving--;
    }
  }
  std::erase_if(redrives_, [](const RedriveJob& job) { return job.ids.empty(); });
  if (after_commit_) after_commit_();  // deliveries carry lease deadlines: re-arm the timer
  arm_redrive();
}

}  // namespace sluice::net
