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

const char* Engine::reconfigure(Queue& queue, const QueueOptions& options, Micros now) {
  const QueueOptions& old = queue.options_;
  if (options.durable && journal_ == nullptr)
    return "durability = durable needs storage.path, which is read at start-up only";
  if ((options.keyed() != old.keyed() || options.ordered != old.ordered ||
       options.resequence != old.resequence || options.key_header != old.key_header) &&
      queue.counters_.messages() != 0)
    return "key_header, ordering, resequence (or turning per-key rates on or off) can change only "
           "while the queue is empty";
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
  return nullptr;
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
    queue.ready_.push_front(index);
  } else {
    queue.ready_.push_back(index);
  }
}

std::string_view Engine::key_of(const Queue& queue, std::string_view message) {
  protocol::MessageParts parts;
  std::string_view key;
  if (protocol::parse_message(message, parts)) {
    protocol::for_each_header(parts, [&](const protocol::Header& h) {
      if (key.empty() && h.key == queue.options_.key_header) key = h.value;
    });
  }
  return key;
}

void Engine::apply_rates(Queue& queue, Micros now) {
  const auto set = [now](TokenBucket& bucket, const RateLimit& limit) {
    if (limit.rate == 0)
      bucket = TokenBucket();
    else if (bucket.unlimited())
      bucket = TokenBucket(limit.rate, limit.burst, now);
    else
      bucket.reconfigure(limit.rate, limit.burst, now);
  };
  set(queue.dispatch_bucket_, queue.options_.dispatch_rate);
  set(queue.ingress_bucket_, queue.options_.ingress_rate);
}

void Engine::schedule_wakeup(Queue& queue, Micros at) {
  if (at >= queue.wakeup_at_) return;
  queue.wakeup_at_ = at;
  wakeups_.emplace_back(at, &queue);
  std::push_heap(wakeups_.begin(), wakeups_.end(), std::greater<>{});
  deadline_moved(at);
}

void Engine::on_wakeup(Queue& queue, Micros now) {
  // A token that came due at `due` is taken as of `due`, not `now`: the timer's
  // lateness must not cost a backlogged bucket its rate (a full bucket would
  // drop the tokens of the late microseconds).
  if (queue.dispatch_due_ <= now) {
    queue.dispatch_prepaid_ = queue.dispatch_bucket_.try_take(queue.dispatch_due_);
    queue.dispatch_due_ = kNever;
  }
  Micros next = kNever;
  if (queue.stage_ && queue.counters_.held != 0) {
    released_.clear();
    next = queue.stage_->expire(now, queue.options_.gap_timeout, released_);
    for (std::uint32_t slot : released_) {
      queue.counters_.held--;
      enqueue(queue, slot, now);
    }
  }
  if (queue.lanes_) queue.lanes_->wake(now, next);
  std::erase_if(queue.throttled_, [&](Consumer* c) {
    if (c->rate_due_ > now) {
      next = std::min(next, c->rate_due_);
      return false;
    }
    c->prepaid_ = c->rate_.try_take(c->rate_due_);
    c->rate_due_ = kNever;
    c->throttled_ = false;
    offer_credit(*c);
    return true;
  });
  if (next != kNever) schedule_wakeup(queue, next);
  dispatch(queue, now);
  // Tokens taken as of their due time but not spent (nothing to send, or no
  // one to send it to) go back: held over, they would allow burst + 1 later.
  if (queue.dispatch_prepaid_) {
    queue.dispatch_bucket_.refund();
    queue.dispatch_prepaid_ = false;
  }
  for (auto& c : queue.consumers_) {
    if (!c->prepaid_) continue;
    c->rate_.refund();
    c->prepaid_ = false;
  }
  if (queue.lanes_) queue.lanes_->refund_unspent();
  release_waiters(queue, now);
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

Queue* Engine::open(std::string_view name) {
  if (Queue* q = find(name)) return q;
  if (max_queues_ != 0 && queues_.size() >= max_queues_) return nullptr;
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
  protocol::MessageParts parts;
  protocol::SystemHeaders sys;
  if (redriven_from != 0 || !protocol::parse_message(message, parts) ||
      !protocol::read_system_headers(parts, sys))
    sys = {};  // a raw caller's bad headers are ignored
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
    if (queue.stage_->seen(key_of(queue, message), sys.sequence, held)) {
      queue.counters_.duplicates_total++;
      return {held != kNil ? store_[held].id : 0, true};
    }
  }
  wall_offset_ = wall_us - now;
  const std::uint32_t index = store_.allocate();
  Slot& s = store_[index];
  s.message.assign(message.data(), message.size());
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
    staged_.emplace_back(journal_->stored(queue, s.id, wall_us, s.message, redriven_from), index);
    // A delay survives a restart: the journal knows when the message may go.
    if (s.deadline > now) journal_->attempted(s.id, 0, s.deadline);
    return {s.id, false};
  }
  const std::uint64_t id = s.id;
  const bool duplicate = arrive(queue, index, now);
  dispatch(queue, now);
  return {id, duplicate};
}

bool Engine::arrive(Queue& queue, std::uint32_t index, Micros now) {
  Slot& s = store_[index];
  if (s.deadline > now) {
    s.state = SlotState::delayed;
    watch_deadline(index);
    queue.counters_.delayed++;
    return false;
  }
  return arrive_now(queue, index, now);
}

bool Engine::arrive_now(Queue& queue, std::uint32_t index, Micros now) {
  if (!queue.stage_ || store_[index].redriven) {
    enqueue(queue, index, now);
    return false;
  }
  Slot& s = store_[index];
  protocol::MessageParts parts;
  protocol::SystemHeaders sys;
  if (!protocol::parse_message(s.message, parts) || !protocol::read_system_headers(parts, sys) ||
      !sys.has_sequence) {
    enqueue(queue, index, now);  // no sequence number: not the stage's business
    return false;
  }
  released_.clear();
  switch (queue.stage_->offer(key_of(queue, s.message), sys.sequence, index, now, released_)) {
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
  if (queue.lanes_ && s.lane == nullptr)
    s.lane = &queue.lanes_->hold(key_of(queue, s.message), now);
  make_ready(queue, index, false);
}

void Engine::drop(std::uint32_t index, Micros now) {
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  queue.counters_.bytes -= s.message.size();
  memory_used_ -= s.message.size() + kMessageOverhead;
  if (s.lane != nullptr) {
    const Micros drop_at = queue.lanes_->release(*s.lane, now);
    if (drop_at != kNever) schedule_wakeup(queue, drop_at);
  }
  store_.release(index);
}

void Engine::committed(std::uint64_t seq, Micros now) {
  Queue* last = nullptr;
  while (!staged_.empty() && staged_.front().first <= seq) {
    const std::uint32_t index = staged_.front().second;
    staged_.pop_front();
    Queue& queue = *store_[index].queue;
    queue.counters_.staged--;
    arrive(queue, index, now);
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
  protocol::MessageParts parts;
  protocol::SystemHeaders sys;
  if (queue.options_.dedup_window > 0 && protocol::parse_message(message, parts) &&
      protocol::read_system_headers(parts, sys) && !sys.dedup_id.empty()) {
    const Micros expires = now - (wall_now - publish_wall_us) + queue.options_.dedup_window;
    if (expires > now)
      queue.dedup_.insert(sys.dedup_id, id, expires, queue.options_.dedup_max_entries);
  }
  if (attempts == 0) {
    arrive(queue, index, now);
    return;
  }
  // Delivered before the restart: it has had its turn in the resequencer.
  if (queue.lanes_) s.lane = &queue.lanes_->hold(key_of(queue, s.message), now);
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

SubscribeResult Engine::subscribe(Queue& queue, DeliverySink& sink, std::uint32_t subscription_id,
                                  std::uint32_t credit, Micros lease, Micros now, RateLimit rate) {
  if (credit == 0) return {nullptr, errc::invalid_argument, "max_in_flight must be at least 1"};
  if (credit > queue.options_.max_consumer_in_flight)
    return {nullptr, errc::invalid_argument,
            "max_in_flight is over the queue's max_consumer_in_flight"};
  auto c = std::make_unique<Consumer>();
  c->queue_ = &queue;
  c->sink_ = &sink;
  c->subscription_id_ = subscription_id;
  c->credit_ = credit;
  c->lease_ = lease > 0 ? lease : queue.options_.lease;
  const MilliRate cap = queue.options_.max_consumer_rate;
  if (cap != 0 && (rate.rate == 0 || rate.rate > cap)) rate.rate = cap;
  if (rate.rate != 0) c->rate_ = TokenBucket(rate.rate, rate.burst, now);
  Consumer& ref = *c;
  queue.consumers_.push_back(std::move(c));
  offer_credit(ref);
  dispatch(queue, now);
  return {&ref, errc::ok, ""};
}

void Engine::unsubscribe(Consumer& consumer) {
  consumer.draining_ = true;
  if (consumer.in_flight_ == 0) {
    consumer.sink_->released(consumer);
    free_consumer(consumer);
  }
}

void Engine::disconnect(Consumer& consumer, Micros now) {
  Queue& queue = *consumer.queue_;
  // The in-flight list runs newest → oldest; pushing each to the front in that
  // order leaves the oldest delivery first in line again.
  // It counts as a failed attempt (a consumer that crashes on a message must
  // not get it forever) but is retried at once: the message may be fine and
  // the consumer merely restarting.
  while (consumer.inflight_head_ != kNil) {
    const std::uint32_t newest = consumer.inflight_head_;
    end_lease(newest);
    queue.counters_.requeued_total++;
    Slot& s = store_[newest];
    if (queue.options_.retry.exhausted(s.attempt)) {
      Failure& f = store_.failure(newest);
      f.last = now;
      if (f.first == kNever) f.first = now;
      f.reason.assign("consumer disconnected");
      if (events_) events_->attempt_failed({queue, s.id, s.attempt, f.reason, -1, s.message});
      dead_letter(newest, now);
    } else {
      // Back in line, not out: a restart must not count this attempt twice.
      const std::uint64_t seq = s.durable ? journal_->attempted(s.id, s.attempt, 0) : 0;
      retry_after_record(queue, newest, seq, 0, true, now);
    }
  }
  free_consumer(consumer);
  dispatch(queue, now);
}

void Engine::pause(Consumer& consumer) noexcept {
  consumer.paused_ = true;  // dispatch skips it when its turn in the ring comes
}

void Engine::resume(Consumer& consumer, Micros now) {
  if (!consumer.paused_) return;
  consumer.paused_ = false;
  offer_credit(consumer);
  dispatch(*consumer.queue_, now);
}

std::uint32_t Engine::live_lease(const DeliverySink& caller, std::uint64_t message_id,
                                 std::uint64_t lease_token, Micros now) {
  const std::uint32_t index = store_.slot_of(lease_token);
  if (index == kNil) return kNil;
  Slot& s = store_[index];
  if (s.state != SlotState::in_flight || s.generation != MessageStore::generation_of(lease_token) ||
      s.id != message_id)
    return kNil;
  // Only the connection that holds a lease may settle it: tokens are not secrets.
  if (&s.owner->sink() != &caller) return kNil;
  if (s.deadline <= now) {
    // The lease ran out; the timer just has not fired yet. Expire it now so
    // the answer does not depend on timer jitter.
    Queue& queue = *s.queue;
    expire(index, now);
    dispatch(queue, now);
    return kNil;
  }
  return index;
}

errc Engine::ack(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
                 Micros now) {
  const std::uint32_t index = live_lease(caller, message_id, lease_token, now);
  if (index == kNil) return errc::stale_lease;
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  const Micros delivered_at = s.extended ? extended_[index] : s.deadline - s.owner->lease_;
  queue.processing_time_.observe(now - delivered_at);
  Consumer& owner = end_lease(index);
  queue.counters_.acked_total++;
  if (s.durable) journal_->removed(s.id);
  drop(index, now);
  credit_returned(owner);
  dispatch(queue, now);
  // Memory is shared: an ack here may be what another queue's producers wait for.
  release_all_waiters(now);
  return errc::ok;
}

errc Engine::nack(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
                  Micros delay, Micros now, std::string_view reason, bool dead_letter) {
  const std::uint32_t index = live_lease(caller, message_id, lease_token, now);
  if (index == kNil) return errc::stale_lease;
  Queue& queue = *store_[index].queue;
  Consumer& owner = end_lease(index);
  queue.counters_.nacked_total++;
  fail(index, now, delay, reason, dead_letter);
  credit_returned(owner);
  dispatch(queue, now);
  return errc::ok;
}

void Engine::fail(std::uint32_t index, Micros now, Micros delay, std::string_view reason,
                  bool poison) {
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  Failure& f = store_.failure(index);
  f.last = now;
  if (f.first == kNever) f.first = now;
  f.reason.assign(reason.data(), reason.size());
  if (poison || queue.options_.retry.exhausted(s.attempt)) {
    if (events_) events_->attempt_failed({queue, s.id, s.attempt, reason, -1, s.message});
    dead_letter(index, now);
    return;
  }
  queue.counters_.retried_total++;
  if (delay <= 0) delay = queue.options_.retry.backoff(s.attempt, rng_);
  if (events_) events_->attempt_failed({queue, s.id, s.attempt, reason, delay, s.message});
  const std::uint64_t seq =
      s.durable ? journal_->attempted(s.id, s.attempt, delay > 0 ? now + delay : 0) : 0;
  retry_after_record(queue, index, seq, delay, queue.options_.ordered, now);
}

void Engine::retry_after_record(Queue& queue, std::uint32_t index, std::uint64_t seq, Micros delay,
                                bool front, Micros now) {
  Slot& s = store_[index];
  if (seq > durable_seq_) {
    // Waits for its record (its key, if ordered, stays blocked meanwhile).
    s.state = SlotState::delayed;
    s.deadline = delay > 0 ? now + delay : 0;
    queue.counters_.delayed++;
    retry_records_.push_back({seq, index, front});
    return;
  }
  if (delay > 0) {
    // Its key (ordered) stays blocked meanwhile: the retry keeps its place.
    s.state = SlotState::delayed;
    s.deadline = now + delay;
    watch_deadline(index);
    queue.counters_.delayed++;
  } else {
    make_ready(queue, index, front);
  }
}

void Engine::dead_letter(std::uint32_t index, Micros now) {
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  s.state = SlotState::dead_lettering;
  queue.counters_.dead_lettering++;
  if (journal_ == nullptr) {
    // An engine without storage (embedded, tests): nowhere to keep it.
    queue.counters_.dead_lettering--;
    queue.counters_.dead_lettered_total++;
    drop(index, now);
    return;
  }
  const Failure& f = store_.failure(index);
  const DeadLetter entry{queue,   next_id(), s.id,     s.publish_wall_us, s.attempt,
                         f.first, f.last,    f.reason, s.message,         s.durable};
  dead_letters_.emplace_back(journal_->dead_lettered(entry), index);
}

errc Engine::extend(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
                    Micros lease, Micros now) {
  if (lease <= 0) return errc::invalid_argument;
  const std::uint32_t index = live_lease(caller, message_id, lease_token, now);
  if (index == kNil) return errc::stale_lease;
  Slot& s = store_[index];
  if (!s.extended) {
    extended_[index] = s.deadline - s.owner->lease_;
    s.extended = true;
  }
  s.deadline = now + lease;
  deadlines_.update(index);
  deadline_moved(s.deadline);
  return errc::ok;
}

void Engine::set_deadline_listener(std::function<void(Micros)> listener) {
  on_deadline_ = std::move(listener);
  told_deadline_ = kNever;
  if (auto next = next_deadline()) deadline_moved(*next);
}

void Engine::deadline_moved(Micros at) {
  if (at >= told_deadline_) return;
  told_deadline_ = at;
  if (on_deadline_) on_deadline_(at);
}

void Engine::watch_deadline(std::uint32_t slot) {
  deadlines_.push(slot);
  deadline_moved(store_[slot].deadline);
}

void Engine::advance(Micros now) {
  // The owner's timer fired: nothing is armed until told again below.
  told_deadline_ = kNever;
  while (!wakeups_.empty() && wakeups_.front().first <= now) {
    std::pop_heap(wakeups_.begin(), wakeups_.end(), std::greater<>{});
    Queue& queue = *wakeups_.back().second;
    wakeups_.pop_back();
    if (queue.wakeup_at_ > now) continue;  // stale: a later wake-up replaced it
    queue.wakeup_at_ = kNever;
    on_wakeup(queue, now);
  }
  while (!deadlines_.empty() && store_[deadlines_.top()].deadline <= now) {
    const std::uint32_t index = deadlines_.top();
    Slot& s = store_[index];
    Queue& queue = *s.queue;
    if (s.state == SlotState::in_flight) {
      expire(index, now);
    } else {  // delayed: its not-before time has come
      deadlines_.remove(index);
      queue.counters_.delayed--;
      s.deadline = 0;
      if (s.attempt > 0)
        make_ready(queue, index, queue.options_.ordered);  // a retry: first of its key again
      else
        arrive_now(queue, index, now);  // a delayed publish
    }
    dispatch(queue, now);
  }
  if (auto next = next_deadline()) deadline_moved(*next);
}

std::optional<Micros> Engine::next_deadline() const noexcept {
  Micros next = kNever;
  if (!deadlines_.empty()) next = store_[deadlines_.top()].deadline;
  if (!wakeups_.empty()) next = std::min(next, wakeups_.front().first);
  if (next == kNever) return std::nullopt;
  return next;
}

void Engine::expire(std::uint32_t index, Micros now) {
  Queue& queue = *store_[index].queue;
  Consumer& owner = end_lease(index);
  queue.counters_.expired_total++;
  fail(index, now, 0, "lease expired", false);
  credit_returned(owner);
}

void Engine::deliver(Queue& queue, std::uint32_t index, Consumer& consumer, Micros now) {
  Slot& s = store_[index];
  s.state = SlotState::in_flight;
  s.generation++;
  s.attempt++;
  s.owner = &consumer;
  s.deadline = now + consumer.lease_;
  watch_deadline(index);
  // Link at the head of the consumer's in-flight list.
  s.prev = kNil;
  s.next = consumer.inflight_head_;
  if (consumer.inflight_head_ != kNil) store_[consumer.inflight_head_].prev = index;
  consumer.inflight_head_ = index;
  consumer.in_flight_++;
  consumer.peak_in_flight_ = std::max(consumer.peak_in_flight_, consumer.in_flight_);
  queue.counters_.in_flight++;
  queue.counters_.delivered_total++;
  if (s.attempt == 1) queue.delivery_latency_.observe(now + wall_offset_ - s.publish_wall_us);
  // A restart counts this delivery as a failed attempt unless its ack is stored first.
  if (s.durable) journal_->delivered(s.id, s.attempt);

  protocol::Delivery d;
  d.message_id = s.id;
  d.lease_token = MessageStore::lease_token(index, s.generation);
  d.attempt = s.attempt;
  d.publish_time_us = static_cast<std::uint64_t>(s.publish_wall_us);
  d.message = s.message;
  if (!consumer.sink_->deliver(consumer, d)) consumer.paused_ = true;
}

void Engine::dispatch(Queue& queue, Micros now) {
  const std::uint32_t cap = queue.options_.max_in_flight;
  const auto has_ready = [&] {
    return queue.lanes_ ? queue.lanes_->any_eligible() : !queue.ready_.empty();
  };
  while (has_ready() && !queue.ring_.empty()) {
    if (cap != 0 && queue.counters_.in_flight >= cap) return;  // an ack or expiry comes back here
    if (!queue.dispatch_bucket_.unlimited() && !queue.dispatch_prepaid_) {
      const Micros at = queue.dispatch_bucket_.next_available(now);
      if (at > now) {
        if (queue.dispatch_due_ == kNever) queue.counters_.rate_wait_us_total += at - now;
        queue.dispatch_due_ = at;
        schedule_wakeup(queue, at);
        return;
      }
    }
    Consumer* c = queue.ring_.front();
    queue.ring_.pop_front();
    c->in_ring_ = false;
    if (!c->can_take()) continue;
    if (c->prepaid_) {
      c->prepaid_ = false;
    } else if (!c->rate_.try_take(now)) {
      c->throttled_ = true;
      c->rate_due_ = c->rate_.next_available(now);
      queue.throttled_.push_back(c);
      schedule_wakeup(queue, c->rate_due_);
      continue;
    }
    std::uint32_t index;
    if (queue.lanes_) {
      Micros wake_at = kNever;
      KeyLane* from = nullptr;
      index = queue.lanes_->pop(now, wake_at, from);
      if (wake_at != kNever) schedule_wakeup(queue, wake_at);
      if (index == kNil) {
        // Every key with messages waits for its token: the consumer keeps
        // its turn, and gives back the token it just took.
        c->rate_.refund();
        queue.ring_.push_front(c);
        c->in_ring_ = true;
        return;
      }
    } else {
      index = queue.ready_.front();
      queue.ready_.pop_front();
    }
    if (queue.dispatch_prepaid_)
      queue.dispatch_prepaid_ = false;
    else
      queue.dispatch_bucket_.try_take(now);
    queue.counters_.ready--;
    deliver(queue, index, *c, now);
    offer_credit(*c);
  }
}

Consumer& Engine::end_lease(std::uint32_t index) {
  Slot& s = store_[index];
  Consumer& owner = *s.owner;
  deadlines_.remove(index);
  if (s.prev != kNil)
    store_[s.prev].next = s.next;
  else
    owner.inflight_head_ = s.next;
  if (s.next != kNil) store_[s.next].prev = s.prev;
  s.prev = s.next = kNil;
  s.owner = nullptr;
  if (s.extended) {
    extended_.erase(index);
    s.extended = false;
  }
  owner.in_flight_--;
  s.queue->counters_.in_flight--;
  return owner;
}

void Engine::offer_credit(Consumer& consumer) {
  if (!consumer.in_ring_ && consumer.can_take()) {
    consumer.queue_->ring_.push_back(&consumer);
    consumer.in_ring_ = true;
  }
}

void Engine::credit_returned(Consumer& owner) {
  if (!owner.draining_) {
    offer_credit(owner);
  } else if (owner.in_flight_ == 0) {
    owner.sink_->released(owner);
    free_consumer(owner);
  }
}

void Engine::free_consumer(Consumer& consumer) {
  Queue& queue = *consumer.queue_;
  if (consumer.in_ring_) std::erase(queue.ring_, &consumer);
  if (consumer.throttled_) std::erase(queue.throttled_, &consumer);
  std::erase_if(queue.consumers_, [&](const auto& c) { return c.get() == &consumer; });
}

std::int64_t Engine::oldest_ready_wall_us(const Queue& queue) const {
  std::int64_t oldest = 0;
  const auto consider = [&](std::uint32_t slot) {
    const std::int64_t t = store_[slot].publish_wall_us;
    if (oldest == 0 || t < oldest) oldest = t;
  };
  if (queue.lanes_)
    queue.lanes_->for_each_head(consider);
  else if (!queue.ready_.empty())
    consider(queue.ready_.front());
  return oldest;
}

}  // namespace sluice::engine
