#include "dead_letters.hpp"

#include <algorithm>

#include "attempt_log.hpp"
#include "clock.hpp"
#include "durable_store.hpp"
#include "log.hpp"
#include "seq_waiters.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::net {

namespace {

constexpr std::uint32_t kDefaultPage = 100;
constexpr std::uint32_t kMaxPage = 1000;
/// Entries moved per queue per redrive step: the engine thread stays responsive.
constexpr std::size_t kRedriveBatch = 1000;
/// Entries one retention sweep of a queue erases at most.
constexpr std::size_t kMaxSweep = 100'000;

/// A failure time as wall time (0: none).
std::int64_t to_wall(engine::Micros t) {
  return t == engine::kNever ? 0 : wall_of(t);
}

DeadLetter owned(const storage::DeadLetterRecord& r) {
  return {r.entry_id,
          r.message_id,
          std::string(r.queue),
          r.attempts,
          r.publish_wall_us,
          r.first_failure_wall_us,
          r.last_failure_wall_us,
          std::string(r.reason),
          std::string(r.message)};
}

/// What an entry costs in a list page: its size in DEAD_LETTERS_RESULT.
std::size_t cost(const storage::DeadLetterRecord& r, bool with_message) {
  protocol::DeadLetterEntry e;
  e.queue = r.queue;
  e.reason = r.reason;
  if (with_message) e.message = r.message;
  return protocol::DeadLettersResultWriter::entry_bytes(e);
}

/// Whether `r` passes the request's filters (age, reason).
bool matches(const protocol::DeadLetterRequest& request, const storage::DeadLetterRecord& r,
             std::int64_t wall_now) {
  const std::int64_t age_ms = (wall_now - r.last_failure_wall_us) / 1000;
  if (request.min_age_ms != 0 && age_ms < static_cast<std::int64_t>(request.min_age_ms))
    return false;
  if (request.max_age_ms != 0 && age_ms > static_cast<std::int64_t>(request.max_age_ms))
    return false;
  return request.reason.empty() || r.reason.find(request.reason) != std::string_view::npos;
}

Error read_failed(const storage::StorageError& e) {
  return Error{errc::internal, "dead letters: " + e.to_string()};
}

}  // namespace

protocol::DeadLetterEntry DeadLetter::view() const noexcept {
  protocol::DeadLetterEntry e;
  e.entry_id = entry_id;
  e.message_id = message_id;
  e.queue = queue;
  e.attempts = attempts;
  e.publish_time_us = static_cast<std::uint64_t>(publish_wall_us);
  e.first_failure_us = static_cast<std::uint64_t>(first_failure_wall_us);
  e.last_failure_us = static_cast<std::uint64_t>(last_failure_wall_us);
  e.reason = reason;
  e.message = message;
  return e;
}

DeadLetters::DeadLetters(boost::asio::io_context& io, engine::Engine& engine, DurableStore& store)
    : engine_(engine),
      store_(store),
      redrive_timer_(io),
      sweep_timer_(io),
      alive_(std::make_shared<DeadLetters*>(this)) {}

DeadLetters::~DeadLetters() {
  *alive_ = nullptr;
  redrive_timer_.cancel();
  sweep_timer_.cancel();
}

Error DeadLetters::open(storage::Env& env) {
  env_ = &env;
  if (auto e = db_.open(env)) return read_failed(*e);
  if (auto e = db_.count(env, [&](std::string_view queue, std::uint64_t n) {
        queues_[std::string(queue)].count = n;
      }))
    return read_failed(*e);
  arm_sweep();
  return {};
}

storage::StorageOp DeadLetters::put(const engine::DeadLetter& e) const {
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
  return db_.put(r);
}

void DeadLetters::added(const engine::DeadLetter& e) {
  const std::string& queue = e.queue.name();
  QueueState& state = queues_[queue];
  state.count++;
  trim(queue, state);
  auto line = log::info("dead_lettered");
  line.str("queue", queue)
      .unum("message_id", e.message_id)
      .unum("entry_id", e.entry_id)
      .unum("attempts", e.attempts)
      .str("reason", e.reason)
      .str("correlation_id", correlation_id_of(e.message));
  if (const auto trace = trace_id_of(e.message); !trace.empty()) line.str("trace_id", trace);
}

storage::StorageOp DeadLetters::erase_op(std::string_view queue, std::uint64_t entry_id) const {
  return db_.erase(queue, entry_id);
}

void DeadLetters::erasing(const std::string& queue, std::uint64_t entry_id, std::uint64_t seq) {
  if (forget_entry(queue, entry_id)) erasing_order_.emplace_back(seq, entry_id);
}

std::vector<std::uint64_t> DeadLetters::entries_of(const std::string& queue) const {
  std::vector<std::uint64_t> ids;
  if (auto e = db_.scan(*env_, queue, false, 0, [&](const storage::DeadLetterRecord& r) {
        ids.push_back(r.entry_id);
        return true;
      }))
    log::error("dead_letters_read_failed").str("queue", queue).str("error", e->to_string());
  return ids;
}

void DeadLetters::queue_deleted(const std::string& queue, const std::vector<std::uint64_t>& entries,
                                std::uint64_t seq) {
  for (const std::uint64_t id : entries) {
    redrive_pending_.erase(id);
    if (erasing_.insert(id).second) erasing_order_.emplace_back(seq, id);
  }
  std::erase_if(redrives_, [&](const RedriveJob& job) { return job.queue == queue; });
  queues_.erase(queue);
}

void DeadLetters::committed(std::uint64_t seq) {
  take_through(erasing_order_, seq, [&](std::uint64_t id) { erasing_.erase(id); });
}

bool DeadLetters::forget_entry(const std::string& queue, std::uint64_t entry_id) {
  if (!erasing_.insert(entry_id).second) return false;
  QueueState& state = queues_[queue];
  if (state.count > 0) state.count--;
  return true;
}

void DeadLetters::erase_entry(const std::string& queue, std::uint64_t entry_id) {
  if (!forget_entry(queue, entry_id)) return;
  erasing_order_.emplace_back(store_.submit(db_.erase(queue, entry_id)), entry_id);
}

void DeadLetters::trim(const std::string& queue, QueueState& state) {
  const engine::Queue* q = engine_.find(queue);
  const std::uint64_t max = q != nullptr ? q->options().dlq_max_entries : 100'000;
  if (state.count <= max) return;
  std::uint64_t excess = state.count - max;
  std::vector<std::uint64_t> victims;
  (void)db_.scan(*env_, queue, false, state.trimmed_to, [&](const storage::DeadLetterRecord& r) {
    if (erasing_.count(r.entry_id) || redrive_pending_.count(r.entry_id)) return true;
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

void DeadLetters::sweep(std::int64_t wall_now) {
  for (auto& [queue, state] : queues_) {
    if (state.count == 0) continue;
    const engine::Queue* q = engine_.find(queue);
    const engine::Micros retention =
        q != nullptr ? q->options().dlq_retention : engine::QueueOptions{}.dlq_retention;
    const std::int64_t cutoff = wall_now - retention;
    std::vector<std::uint64_t> victims;
    (void)db_.scan(*env_, queue, false, state.trimmed_to, [&](const storage::DeadLetterRecord& r) {
      // Entries are in dead-letter order: the first young one ends it.
      if (r.last_failure_wall_us >= cutoff) return false;
      if (!erasing_.count(r.entry_id) && !redrive_pending_.count(r.entry_id))
        victims.push_back(r.entry_id);
      return victims.size() < kMaxSweep;
    });
    for (auto id : victims) {
      erase_entry(queue, id);
      state.trimmed_to = id;
    }
    if (!victims.empty())
      log::info("dead_letters_expired").str("queue", queue).unum("entries", victims.size());
  }
}

void DeadLetters::stop_timers() {
  stopped_ = true;
  redrive_timer_.cancel();
  sweep_timer_.cancel();
}

void DeadLetters::arm_sweep() {
  if (stopped_) return;
  sweep_timer_.expires_after(std::chrono::minutes(1));
  sweep_timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    (*alive)->sweep(wall_us());
    (*alive)->arm_sweep();
  });
}

std::uint64_t DeadLetters::count(std::string_view queue) const {
  auto it = queues_.find(queue);
  return it == queues_.end() ? 0 : it->second.count;
}

std::uint64_t DeadLetters::redriving(std::string_view queue) const {
  auto it = queues_.find(queue);
  return it == queues_.end() ? 0 : it->second.redriving;
}

std::optional<bool> DeadLetters::exists(const std::string& queue, std::uint64_t id) const {
  std::optional<storage::OwnedDeadLetter> found;
  if (auto e = db_.get(*env_, queue, id, found)) return std::nullopt;
  return found.has_value() && live(id);
}

Error DeadLetters::run(const protocol::DeadLetterRequest& request, std::size_t max_bytes,
                       DeadLetterResult& result) {
  result = {};
  using protocol::DeadLetterOp;
  const std::string queue(request.queue);
  switch (request.op) {
    case DeadLetterOp::list:
      return list(request, max_bytes, result);
    case DeadLetterOp::show: {
      std::optional<storage::OwnedDeadLetter> found;
      if (auto e = db_.get(*env_, queue, request.ids.at(0), found)) return read_failed(*e);
      if (!found || !live(request.ids[0]))
        return Error{errc::not_found,
                     "no dead letter " + std::to_string(request.ids[0]) + " in " + queue};
      if (cost(found->record, true) > max_bytes)
        return Error{errc::payload_too_large, "the entry is larger than a frame"};
      result.entries.push_back(owned(found->record));
      result.affected = 1;
      return {};
    }
    case DeadLetterOp::redrive:
      return redrive(request, result);
    case DeadLetterOp::remove:
      return remove(request, result);
    case DeadLetterOp::purge: {
      std::vector<std::uint64_t> ids;
      if (auto e = db_.scan(*env_, queue, false, 0, [&](const storage::DeadLetterRecord& r) {
            if (live(r.entry_id) && !redrive_pending_.count(r.entry_id)) ids.push_back(r.entry_id);
            return true;
          }))
        return read_failed(*e);
      for (auto id : ids) erase_entry(queue, id);
      result.affected = ids.size();
      log::info("dead_letters_purged").str("queue", queue).unum("entries", result.affected);
      return {};
    }
  }
  return Error{errc::invalid_argument, "dead letters: unknown operation"};
}

Error DeadLetters::list(const protocol::DeadLetterRequest& request, std::size_t max_bytes,
                        DeadLetterResult& result) {
  const std::string queue(request.queue);
  const std::int64_t wall_now = wall_us();
  const std::uint32_t limit = request.limit == 0 ? kDefaultPage : std::min(request.limit, kMaxPage);
  std::size_t room = max_bytes;
  std::uint32_t taken = 0;
  bool more = false;  // a matching entry did not fit on this page
  if (auto e = db_.scan(*env_, queue, request.flags & protocol::kDeadLettersNewestFirst,
                        request.after, [&](const storage::DeadLetterRecord& r) {
                          if (!live(r.entry_id) || !matches(request, r, wall_now)) return true;
                          bool with_message = true;
                          std::size_t bytes = cost(r, true);
                          more = taken == limit || (bytes > room && taken != 0);
                          if (more) return false;
                          if (bytes > room) {
                            // Alone too large for a page: listed without its message, so
                            // the listing goes on past it (show refuses it, redrive works).
                            with_message = false;
                            bytes = cost(r, false);
                            more = bytes > room;
                            if (more) return false;
                          }
                          result.entries.push_back(owned(r));
                          if (!with_message) result.entries.back().message.clear();
                          room -= bytes;
                          taken++;
                          result.next_after = r.entry_id;
                          return true;
                        }))
    return read_failed(*e);
  result.affected = count(queue);
  // A page that stopped at an entry it could not take has a cursor; the last has none.
  if (!more) result.next_after = 0;
  return {};
}

Error DeadLetters::redrive(const protocol::DeadLetterRequest& request, DeadLetterResult& result) {
  const std::string queue(request.queue);
  const std::int64_t wall_now = wall_us();
  RedriveJob job;
  job.queue = queue;
  if (request.rate_milli != 0) job.bucket = engine::TokenBucket(request.rate_milli, 1, mono_us());
  // Marked pending only once the request has succeeded as a whole.
  std::unordered_set<std::uint64_t> taken;
  const auto take = [&](std::uint64_t id) {
    if (!redrive_pending_.count(id) && taken.insert(id).second) job.ids.push_back(id);
  };
  if (!request.ids.empty()) {
    for (auto id : request.ids) {
      auto present = exists(queue, id);
      if (!present) return Error{errc::internal, "dead letters: read failed"};
      if (*present) take(id);
    }
  } else if (auto e = db_.scan(*env_, queue, false, 0, [&](const storage::DeadLetterRecord& r) {
               if (live(r.entry_id) && matches(request, r, wall_now)) take(r.entry_id);
               return true;
             })) {
    return read_failed(*e);
  }
  result.affected = job.ids.size();
  redrive_pending_.insert(job.ids.begin(), job.ids.end());
  if (!job.ids.empty()) {
    queues_[queue].redriving += job.ids.size();
    log::info("redrive_started")
        .str("queue", queue)
        .unum("entries", job.ids.size())
        .unum("rate_milli", request.rate_milli);
    redrives_.push_back(std::move(job));
    arm_redrive();
  }
  return {};
}

Error DeadLetters::remove(const protocol::DeadLetterRequest& request, DeadLetterResult& result) {
  const std::string queue(request.queue);
  if (request.ids.empty())
    return Error{errc::invalid_argument,
                 "dead_letters: remove needs entry ids (purge removes all)"};
  // All or nothing: an id that is not there (or is being redriven) is
  // not_found, and then nothing is removed.
  for (auto id : request.ids) {
    auto present = exists(queue, id);
    if (!present) return Error{errc::internal, "dead letters: read failed"};
    if (!*present || redrive_pending_.count(id))
      return Error{errc::not_found, "no dead letter " + std::to_string(id) + " in " + queue +
                                        (*present ? " (it is being redriven)" : "")};
  }
  for (auto id : request.ids) {
    if (erasing_.count(id)) continue;  // named twice
    erase_entry(queue, id);
    result.affected++;
  }
  return {};
}

void DeadLetters::arm_redrive() {
  if (redrive_armed_ || redrives_.empty() || stopped_) return;
  redrive_armed_ = true;
  redrive_timer_.expires_after(std::chrono::milliseconds(5));
  redrive_timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    (*alive)->redrive_armed_ = false;
    (*alive)->redrive_step();
  });
}

void DeadLetters::redrive_step() {
  const auto now = mono_us();
  for (auto& job : redrives_) {
    engine::Queue& queue = engine_.queue(job.queue);
    std::size_t moved = 0;
    while (!job.ids.empty() && moved < kRedriveBatch) {
      const std::uint64_t id = job.ids.front();
      std::optional<storage::OwnedDeadLetter> found;
      if (auto e = db_.get(*env_, job.queue, id, found)) {
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
        const auto published = engine_.publish(queue, found->record.message, now, wall_us(), id);
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
      QueueState& state = queues_[job.queue];
      if (state.redriving > 0) state.redriving--;
    }
  }
  std::erase_if(redrives_, [](const RedriveJob& job) { return job.ids.empty(); });
  arm_redrive();
}

}  // namespace sluice::net
