#include "engine.hpp"

#include "sluice/protocol/codec.hpp"

#include <algorithm>

namespace sluice::engine {

Engine::Engine(QueueOptions defaults) : defaults_(defaults) {}
Engine::~Engine() = default;

Queue& Engine::declare(std::string_view name, const QueueOptions& options) {
  Queue& q = queue(name);
  reconfigure(q, options, 0);
  return q;
}

Error Engine::reconfigure(Queue& queue, const QueueOptions& options, Micros now) {
  const QueueOptions& old = queue.options_;
  if (options.durable && journal_ == nullptr)
    return {errc::invalid_argument,
            "durability = durable needs storage.path, which is read at start-up only"};
  if ((options.keyed() != old.keyed() || options.ordered != old.ordered ||
       options.resequence != old.resequence || options.key_header != old.key_header) &&
      queue.counters_.messages() != 0)
    return {errc::invalid_argument,
            "key_header, ordering, resequence (or turning per-key rates on or off) can change "
            "only while the queue is empty"};
  queue.options_ = options;
  apply_rates(queue, now);
  if (options.keyed()) {
    if (!queue.lanes_) queue.lanes_ = std::make_unique<KeyLanes>();
    queue.lanes_->configure(options.key_rate.rate, options.key_rate.burst, options.ordered, now);
  } else {
    queue.lanes_.reset();
  }
  if (options.resequence && !queue.stage_)
    queue.stage_ = std::make_unique<Resequencer>();
  else if (!options.resequence)
    queue.stage_.reset();
  for (auto& c : queue.consumers_) {
    // A consumer keeps what it asked for, within the queue's new cap.
    const MilliRate cap = options.max_consumer_rate;
    if (cap != 0 && (c->rate_.unlimited() || c->rate_.rate() > cap))
      c->rate_.reconfigure(cap, c->rate_.unlimited() ? 1 : c->rate_.burst(), now);
  }
  // Blocked publishers of a queue that now rejects get their answer: queue_full.
  if (options.overflow == Overflow::reject && !queue.waiters_.empty()) {
    auto waiters = std::move(queue.waiters_);
    queue.waiters_.clear();
    std::erase(blocked_queues_, &queue);
    for (PublishWaiter* w : waiters) w->room(queue);
  }
  // Larger capacity or faster rates may let blocked publishers and idle consumers go.
  queue.full_ = queue.full_ && !below_low_watermark(queue);
  release_waiters(queue, now);
  dispatch(queue, now);
  return {};
}

void Engine::make_ready(Queue& queue, std::uint32_t index, bool front) {
  Slot& s = store_[index];
  s.state = SlotState::ready;
  queue.counters_.ready++;
  if (s.lane != nullptr) {
    if (front)
      queue.lanes_->push_front(*s.lane, index);
    else
      queue.lanes_->push_back(*s.lane, index);
  } else if (front) {
    queue.front_.push_back(index);
  } else if (ReadySpool::parkable(s) && !(queue.spool_.empty() && would_dispatch(queue))) {
    // It waits: a few bytes in the spool instead of a slot (see ready_spool.hpp).
    queue.spool_.park(s);
    store_.release(index);
    ++parked_;
  } else {
    queue.spool_.push_slot(index);
  }
}

bool Engine::would_dispatch(const Queue& queue) const noexcept {
  return queue.front_.empty() && !queue.ring_.empty() && queue.dispatch_bucket_.unlimited() &&
         (queue.options_.max_in_flight == 0 ||
          queue.counters_.in_flight < queue.options_.max_in_flight);
}

std::uint32_t Engine::take_ready(Queue& queue) {
  if (!queue.front_.empty()) {
    const std::uint32_t index = queue.front_.back();
    queue.front_.pop_back();
    return index;
  }
  const ReadySpool::Head h = queue.spool_.front();
  if (h.slot != kNil) {
    queue.spool_.pop_front();
    return h.slot;
  }
  const std::uint32_t index = store_.allocate();
  Slot& s = store_[index];
  h.message(s.message);
  s.id = h.id;
  s.publish_wall_us = h.publish_wall_us;
  s.queue = &queue;
  s.key_at = h.key_at;
  s.durable = h.durable;
  s.redriven = h.redriven;
  s.state = SlotState::ready;
  queue.spool_.pop_front();
  --parked_;
  return index;
}

void Engine::keep_key(Slot& s, std::string_view message, std::string_view key) noexcept {
  if (key.empty()) {
    s.key_at = 0;
    return;
  }
  const auto at = static_cast<std::size_t>(key.data() - message.data());
  s.key_at = at < kKeyBeyond ? static_cast<std::uint16_t>(at) : kKeyBeyond;
}

std::string_view Engine::key_of(const Slot& s) noexcept {
  if (s.key_at == 0) return {};
  if (s.key_at != kKeyBeyond) {
    // The value is a str16: its length comes right before it.
    return protocol::Reader(std::string_view(s.message).substr(s.key_at - 2)).str16();
  }
  return read_arrival(*s.queue, s.message).key;  // past 64 KiB of headers: rare
}

protocol::SystemHeaders Engine::read_arrival(const Queue& queue,
                                             std::string_view message) noexcept {
  protocol::MessageParts parts;
  protocol::SystemHeaders sys;
  if (!protocol::parse_message(message, parts) ||
      !protocol::read_system_headers(parts, sys, queue.options_.key_header))
    return {};  // checked at the door; a raw caller's bad headers are ignored
  return sys;
}

const QueueOptions& Engine::options_for(std::string_view name) const noexcept {
  const Queue* q = find(name);
  return q != nullptr ? q->options_ : defaults_;
}

Queue& Engine::queue(std::string_view name) {
  if (auto it = queues_.find(name); it != queues_.end()) return *it->second;
  auto q = std::make_unique<Queue>();
  q->name_ = std::string(name);
  q->options_ = defaults_;
  Queue& ref = *q;
  queues_.emplace(q->name_, std::move(q));
  return ref;
}

Queue* Engine::open(std::string_view name, errc* why) {
  if (Queue* q = find(name)) return q;
  const errc refused = !auto_create_                                       ? errc::queue_not_found
                       : max_queues_ != 0 && queues_.size() >= max_queues_ ? errc::too_many_queues
                                                                           : errc::ok;
  if (refused != errc::ok) {
    if (why != nullptr) *why = refused;
    return nullptr;
  }
  return &queue(name);
}

Queue* Engine::find(std::string_view name) const noexcept {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second.get();
}

std::vector<const Queue*> Engine::queues() const {
  std::vector<const Queue*> out;
  out.reserve(queues_.size());
  for (const auto& [name, q] : queues_) out.push_back(q.get());
  return out;
}

std::uint64_t Engine::next_id() {
  const std::uint64_t id = next_message_id_++;
  if (journal_ != nullptr && id >= ids_reserved_) {
    // Ids are recorded in blocks, so a restart never hands out one again.
    ids_reserved_ = id + (1u << 20);
    journal_->ids_used(ids_reserved_);
  }
  return id;
}

Published Engine::publish(Queue& queue, std::string_view message, Micros now, std::int64_t wall_us,
                          std::uint64_t redriven_from) {
  protocol::SystemHeaders sys = read_arrival(queue, message);
  // A redriven message's sluice-* headers acted the first time; its key still orders it.
  if (redriven_from != 0) {
    const std::string_view key = sys.key;
    sys = {};
    sys.key = key;
  }
  return publish(queue, message, sys, now, wall_us, redriven_from);
}

Published Engine::publish(Queue& queue, std::string_view message,
                          const protocol::SystemHeaders& sys, Micros now, std::int64_t wall_us,
                          std::uint64_t redriven_from) {
  const bool dedup = !sys.dedup_id.empty() && queue.options_.dedup_window > 0;
  if (dedup) {
    queue.dedup_.expire(now);
    if (const std::uint64_t first = queue.dedup_.find(sys.dedup_id, now)) {
      queue.counters_.duplicates_total++;
      return {first, true};
    }
  }
  if (sys.has_sequence && queue.stage_ && redriven_from == 0) {
    // A number the resequencer has seen is not published again: the answer
    // names the held message it repeats, or 0 once that one went on (the
    // stage keeps numbers, not ids). A repeat of a durable publish still being
    // committed is caught by the stage after the commit instead.
    std::uint32_t held = kNil;
    if (queue.stage_->seen(sys.key, sys.sequence, held)) {
      queue.counters_.duplicates_total++;
      return {held != kNil ? store_[held].id : 0, true};
    }
  }
  wall_offset_ = wall_us - now;
  const std::uint32_t index = store_.allocate();
  Slot& s = store_[index];
  s.message.assign(message.data(), message.size());
  keep_key(s, message, sys.key);
  s.id = next_id();
  s.publish_wall_us = wall_us;
  s.queue = &queue;
  s.attempt = 0;
  s.deadline = 0;
  s.redriven = redriven_from != 0;
  if (sys.delay_ms != 0) s.deadline = now + static_cast<Micros>(sys.delay_ms) * 1000;
  if (sys.not_before_ms != 0) {
    // At most kMaxDelayMs ahead (the session refuses more; a raw caller is clamped).
    constexpr auto kMax = static_cast<Micros>(protocol::kMaxDelayMs) * 1000;
    const auto wait = std::min(static_cast<Micros>(sys.not_before_ms) * 1000 - wall_us, kMax);
    if (wait > 0) s.deadline = std::max(s.deadline, now + wait);
  }
  if (dedup)
    queue.dedup_.insert(sys.dedup_id, s.id, now + queue.options_.dedup_window,
                        queue.options_.dedup_max_entries);
  queue.counters_.bytes += message.size();
  queue.counters_.published_total++;
  memory_used_ += message.size() + kMessageOverhead;
  if (queue.durable()) {
    s.durable = true;
    s.state = SlotState::staged;
    queue.counters_.staged++;
    staged_.push_back({journal_->stored(queue, s.id, wall_us, s.message, redriven_from), index,
                       sys.has_sequence ? sys.sequence : 0});
    // A delay survives a restart: the journal knows when the message may go.
    if (s.deadline > now) journal_->attempted(s.id, 0, s.deadline);
    return {s.id, false};
  }
  const std::uint64_t id = s.id;
  const bool duplicate = arrive(queue, index, now, sys.has_sequence ? sys.sequence : 0);
  dispatch(queue, now);
  return {id, duplicate};
}

bool Engine::arrive(Queue& queue, std::uint32_t index, Micros now, std::uint64_t sequence) {
  Slot& s = store_[index];
  if (s.deadline > now) {
    s.state = SlotState::delayed;
    watch_deadline(index);
    queue.counters_.delayed++;
    return false;
  }
  return arrive_now(queue, index, now, sequence);
}

bool Engine::arrive_now(Queue& queue, std::uint32_t index, Micros now, std::uint64_t sequence) {
  Slot& s = store_[index];
  if (!queue.stage_ || s.redriven || sequence == 0) {
    enqueue(queue, index, now);  // no sequence number: not the stage's business
    return false;
  }
  released_.clear();
  switch (queue.stage_->offer(key_of(s), sequence, index, now, released_)) {
    case Resequencer::Verdict::hold:
      s.state = SlotState::held;
      queue.counters_.held++;
      schedule_wakeup(queue, now + queue.options_.gap_timeout);
      return false;
    case Resequencer::Verdict::duplicate:
      queue.counters_.duplicates_total++;
      if (s.durable) journal_->removed(s.id);
      drop(index, now);
      return true;
    case Resequencer::Verdict::release:
      for (std::uint32_t slot : released_) {
        if (store_[slot].state == SlotState::held) queue.counters_.held--;
        enqueue(queue, slot, now);
      }
      return false;
  }
  return false;
}

void Engine::enqueue(Queue& queue, std::uint32_t index, Micros now) {
  Slot& s = store_[index];
  if (queue.lanes_ && s.lane == nullptr) s.lane = &queue.lanes_->hold(key_of(s), now);
  make_ready(queue, index, false);
}

void Engine::drop(std::uint32_t index, Micros now, bool was_out) {
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  queue.counters_.bytes -= s.message.size();
  memory_used_ -= s.message.size() + kMessageOverhead;
  if (s.lane != nullptr) {
    const Micros drop_at =
        was_out ? queue.lanes_->release(*s.lane, now) : queue.lanes_->forget(*s.lane, now);
    if (drop_at != kNever) schedule_wakeup(queue, drop_at);
  }
  store_.release(index);
}

void Engine::committed(std::uint64_t seq, Micros now) {
  Queue* last = nullptr;
  while (!staged_.empty() && staged_.front().seq <= seq) {
    const Staged staged = staged_.front();
    staged_.pop_front();
    Queue& queue = *store_[staged.slot].queue;
    queue.counters_.staged--;
    arrive(queue, staged.slot, now, staged.sequence);
    // Commits cover many publishes, mostly to one queue: dispatch once per run.
    if (last != nullptr && last != &queue) dispatch(*last, now);
    last = &queue;
  }
  if (last != nullptr) dispatch(*last, now);
  durable_seq_ = std::max(durable_seq_, seq);
  while (!retry_records_.empty() && retry_records_.front().seq <= seq) {
    const RetryRecord r = retry_records_.front();
    retry_records_.pop_front();
    Slot& s = store_[r.slot];
    Queue& queue = *s.queue;
    queue.counters_.delayed--;
    retry_after_record(queue, r.slot, 0, s.deadline > now ? s.deadline - now : 0, r.front, now);
    dispatch(queue, now);
  }
  bool freed = false;
  while (!dead_letters_.empty() && dead_letters_.front().first <= seq) {
    const std::uint32_t index = dead_letters_.front().second;
    dead_letters_.pop_front();
    Queue& queue = *store_[index].queue;
    queue.counters_.dead_lettering--;
    queue.counters_.dead_lettered_total++;
    drop(index, now);
    dispatch(queue, now);  // an ordered key may go on
    freed = true;
  }
  if (freed) release_all_waiters(now);
}

void Engine::restore(Queue& queue, std::uint64_t id, std::string_view message,
                     std::int64_t publish_wall_us, std::uint32_t attempts, Micros not_before,
                     Micros now, std::int64_t wall_now, bool interrupted) {
  wall_offset_ = wall_now - now;
  const std::uint32_t index = store_.allocate();
  Slot& s = store_[index];
  s.message.assign(message.data(), message.size());
  const protocol::SystemHeaders sys = read_arrival(queue, message);
  keep_key(s, message, sys.key);
  s.id = id;
  s.publish_wall_us = publish_wall_us;
  s.queue = &queue;
  s.attempt = attempts;
  s.durable = true;
  s.deadline = not_before > now ? not_before : 0;
  next_message_id_ = std::max(next_message_id_, id + 1);
  queue.counters_.bytes += message.size();
  memory_used_ += message.size() + kMessageOverhead;
  // Its dedup id stays taken for the rest of its window.
  if (queue.options_.dedup_window > 0 && !sys.dedup_id.empty()) {
    const Micros expires = now - (wall_now - publish_wall_us) + queue.options_.dedup_window;
    if (expires > now)
      queue.dedup_.insert(sys.dedup_id, id, expires, queue.options_.dedup_max_entries);
  }
  if (attempts == 0) {
    arrive(queue, index, now, sys.has_sequence ? sys.sequence : 0);
    return;
  }
  // Delivered before the restart: it has had its turn in the resequencer.
  if (queue.lanes_) s.lane = &queue.lanes_->hold(key_of(s), now);
  if (interrupted) {
    // Out when the broker stopped: its key waits for it, as for any delivery,
    // until finish_recovery() fails the attempt.
    // (Marked delayed, though in no timer heap: it has no lease to settle.)
    if (s.lane != nullptr) queue.lanes_->block(*s.lane);
    s.state = SlotState::delayed;
    interrupted_.push_back(index);
  } else if (s.deadline > now) {
    // Waiting out its backoff: it is still first of its key.
    if (s.lane != nullptr) queue.lanes_->block(*s.lane);
    s.state = SlotState::delayed;
    watch_deadline(index);
    queue.counters_.delayed++;
  } else {
    make_ready(queue, index, false);
  }
}

void Engine::finish_recovery(Micros now) {
  for (const std::uint32_t index : interrupted_) {
    store_[index].deadline = 0;
    fail(index, now, 0, "broker restarted during delivery", false);
  }
  interrupted_.clear();
}

std::int64_t Engine::oldest_ready_wall_us(const Queue& queue) const {
  std::int64_t oldest = 0;
  const auto consider = [&](std::uint32_t slot) {
    const std::int64_t t = store_[slot].publish_wall_us;
    if (oldest == 0 || t < oldest) oldest = t;
  };
  if (queue.lanes_)
    queue.lanes_->for_each_head(consider);
  else if (!queue.front_.empty())
    consider(queue.front_.back());
  else if (!queue.spool_.empty()) {
    const ReadySpool::Head h = queue.spool_.front();
    if (h.slot != kNil)
      consider(h.slot);
    else
      oldest = h.publish_wall_us;
  }
  return oldest;
}

}  // namespace sluice::engine
