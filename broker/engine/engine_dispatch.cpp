// Engine: dispatch to consumers, and time (rate wake-ups, the deadline heap, advance).
#include "engine.hpp"

#include "sluice/protocol/codec.hpp"

#include <algorithm>

namespace sluice::engine {

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
        arrive_now(queue, index, now, sequence_of(index));  // a delayed publish
    }
    dispatch(queue, now);
  }
  if (auto next = next_deadline()) deadline_moved(*next);
}

std::uint64_t Engine::sequence_of(std::uint32_t index) const noexcept {
  const Slot& s = store_[index];
  if (!s.queue->stage_ || s.redriven) return 0;
  const protocol::SystemHeaders sys = read_arrival(*s.queue, s.message);
  return sys.has_sequence ? sys.sequence : 0;
}

std::optional<Micros> Engine::next_deadline() const noexcept {
  Micros next = kNever;
  if (!deadlines_.empty()) next = store_[deadlines_.top()].deadline;
  if (!wakeups_.empty()) next = std::min(next, wakeups_.front().first);
  if (next == kNever) return std::nullopt;
  return next;
}

void Engine::deliver(Queue& queue, std::uint32_t index, Consumer& consumer, Micros now) {
  Slot& s = store_[index];
  s.state = SlotState::in_flight;
  s.generation++;
  const bool repeat = s.repeat_attempt;  // released unused: the same attempt again
  s.repeat_attempt = false;
  if (!repeat) s.attempt++;
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
  if (s.attempt == 1 && !repeat)
    queue.delivery_latency_.observe(now + wall_offset_ - s.publish_wall_us);
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
    return queue.lanes_ ? queue.lanes_->any_eligible()
                        : !queue.front_.empty() || !queue.spool_.empty();
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
      index = take_ready(queue);
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

}  // namespace sluice::engine
