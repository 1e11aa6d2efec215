#include "engine.hpp"

#include <algorithm>

namespace sluice::engine {

Engine::Engine(QueueOptions defaults) : defaults_(defaults) {}
Engine::~Engine() = default;

Queue& Engine::declare(std::string_view name, const QueueOptions& options) {
  Queue& q = queue(name);
  q.options_ = options;
  return q;
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

std::uint64_t Engine::publish(Queue& queue, std::string_view message, Micros now,
                              std::int64_t wall_us) {
  const std::uint32_t index = store_.allocate();
  Slot& s = store_[index];
  s.message.assign(message.data(), message.size());
  s.id = next_message_id_++;
  s.publish_wall_us = wall_us;
  s.queue = &queue;
  s.attempt = 0;
  s.state = SlotState::ready;
  queue.ready_.push_back(index);
  queue.counters_.ready++;
  queue.counters_.bytes += message.size();
  queue.counters_.published_total++;
  dispatch(queue, now);
  return s.id;
}

SubscribeResult Engine::subscribe(Queue& queue, DeliverySink& sink, std::uint32_t subscription_id,
                                  std::uint32_t credit, Micros lease, Micros now) {
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
  while (consumer.inflight_head_ != kNil) {
    const std::uint32_t newest = consumer.inflight_head_;
    end_lease(newest);
    requeue_front(queue, newest);
    queue.counters_.requeued_total++;
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
    expire(index);
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
  Consumer* owner = s.owner;
  end_lease(index);
  queue.counters_.acked_total++;
  queue.counters_.bytes -= s.message.size();
  store_.release(index);
  credit_returned(*owner);
  dispatch(queue, now);
  return errc::ok;
}

errc Engine::nack(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
                  Micros delay, Micros now) {
  const std::uint32_t index = live_lease(caller, message_id, lease_token, now);
  if (index == kNil) return errc::stale_lease;
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  Consumer* owner = s.owner;
  end_lease(index);
  queue.counters_.nacked_total++;
  if (delay > 0) {
    s.state = SlotState::delayed;
    s.deadline = now + delay;
    deadlines_.push(index);
    queue.counters_.delayed++;
  } else {
    // To the back: a message that fails at once must not hog the head of the queue.
    s.state = SlotState::ready;
    queue.ready_.push_back(index);
    queue.counters_.ready++;
  }
  credit_returned(*owner);
  dispatch(queue, now);
  return errc::ok;
}

errc Engine::extend(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
                    Micros lease, Micros now) {
  if (lease <= 0) return errc::invalid_argument;
  const std::uint32_t index = live_lease(caller, message_id, lease_token, now);
  if (index == kNil) return errc::stale_lease;
  store_[index].deadline = now + lease;
  deadlines_.update(index);
  return errc::ok;
}

void Engine::advance(Micros now) {
  while (!deadlines_.empty() && store_[deadlines_.top()].deadline <= now) {
    const std::uint32_t index = deadlines_.top();
    Slot& s = store_[index];
    Queue& queue = *s.queue;
    if (s.state == SlotState::in_flight) {
      expire(index);
    } else {  // delayed: its not-before time has come
      deadlines_.remove(index);
      queue.counters_.delayed--;
      s.state = SlotState::ready;
      queue.ready_.push_back(index);
      queue.counters_.ready++;
    }
    dispatch(queue, now);
  }
}

std::optional<Micros> Engine::next_deadline() const noexcept {
  if (deadlines_.empty()) return std::nullopt;
  return store_[deadlines_.top()].deadline;
}

void Engine::expire(std::uint32_t index) {
  Slot& s = store_[index];
  Queue& queue = *s.queue;
  Consumer* owner = s.owner;
  end_lease(index);
  queue.counters_.expired_total++;
  requeue_front(queue, index);
  credit_returned(*owner);
}

void Engine::deliver(Queue& queue, std::uint32_t index, Consumer& consumer, Micros now) {
  Slot& s = store_[index];
  s.state = SlotState::in_flight;
  s.generation++;
  s.attempt++;
  s.owner = &consumer;
  s.deadline = now + consumer.lease_;
  deadlines_.push(index);
  // Link at the head of the consumer's in-flight list.
  s.prev = kNil;
  s.next = consumer.inflight_head_;
  if (consumer.inflight_head_ != kNil) store_[consumer.inflight_head_].prev = index;
  consumer.inflight_head_ = index;
  consumer.in_flight_++;
  consumer.peak_in_flight_ = std::max(consumer.peak_in_flight_, consumer.in_flight_);
  queue.counters_.in_flight++;
  queue.counters_.delivered_total++;

  protocol::Delivery d;
  d.message_id = s.id;
  d.lease_token = MessageStore::lease_token(index, s.generation);
  d.attempt = s.attempt;
  d.publish_time_us = static_cast<std::uint64_t>(s.publish_wall_us);
  d.message = s.message;
  if (!consumer.sink_->deliver(consumer, d)) consumer.paused_ = true;
}

void Engine::dispatch(Queue& queue, Micros now) {
  while (!queue.ready_.empty() && !queue.ring_.empty()) {
    Consumer* c = queue.ring_.front();
    queue.ring_.pop_front();
    c->in_ring_ = false;
    if (!c->can_take()) continue;
    const std::uint32_t index = queue.ready_.front();
    queue.ready_.pop_front();
    queue.counters_.ready--;
    deliver(queue, index, *c, now);
    offer_credit(*c);
  }
}

void Engine::end_lease(std::uint32_t index) {
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
  owner.in_flight_--;
  s.queue->counters_.in_flight--;
}

void Engine::offer_credit(Consumer& consumer) {
  if (!consumer.in_ring_ && consumer.can_take()) {
    consumer.queue_->ring_.push_back(&consumer);
    consumer.in_ring_ = true;
  }
}

void Engine::requeue_front(Queue& queue, std::uint32_t index) {
  store_[index].state = SlotState::ready;
  queue.ready_.push_front(index);
  queue.counters_.ready++;
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
  std::erase_if(queue.consumers_, [&](const auto& c) { return c.get() == &consumer; });
}

}  // namespace sluice::engine
