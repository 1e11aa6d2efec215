// Engine: consumers and their leases (subscribe, ack, nack, extend, expiry, credit).
#include "engine.hpp"

#include "sluice/protocol/codec.hpp"

#include <algorithm>

namespace sluice::engine {

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

errc Engine::release(const DeliverySink& caller, std::uint64_t message_id,
                     std::uint64_t lease_token, Micros delay, Micros now) {
  const std::uint32_t index = live_lease(caller, message_id, lease_token, now);
  if (index == kNil) return errc::stale_lease;
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  Consumer& owner = end_lease(index);
  s.repeat_attempt = true;  // that delivery does not count: the next one has its number
  const std::uint64_t seq =
      s.durable ? journal_->attempted(s.id, s.attempt - 1, delay > 0 ? now + delay : 0) : 0;
  retry_after_record(queue, index, seq, delay, true, now);
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

void Engine::expire(std::uint32_t index, Micros now) {
  Queue& queue = *store_[index].queue;
  Consumer& owner = end_lease(index);
  queue.counters_.expired_total++;
  fail(index, now, 0, "lease expired", false);
  credit_returned(owner);
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

}  // namespace sluice::engine
