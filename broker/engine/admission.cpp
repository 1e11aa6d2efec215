// Admission, the publish side of flow control: capacity with high and low
// watermarks, the broker-wide memory limit, the ingress rate, and the
// publishers waiting for room. Part of Engine (engine.hpp).
#include <algorithm>

#include "engine.hpp"

namespace sluice::engine {

namespace {
/// When a producer refused for full storage may try again (space comes back as consumers ack).
constexpr Micros kStorageRetry = 250'000;
}  // namespace

std::uint8_t Queue::pressure() const noexcept {
  const auto high = [this](std::uint64_t max) {
    return std::max<std::uint64_t>(1, max * options_.high_watermark_pct / 100);
  };
  const std::uint64_t by_count = counters_.messages() * 100 / high(options_.max_messages);
  const std::uint64_t by_bytes = counters_.bytes * 100 / high(options_.max_bytes);
  return static_cast<std::uint8_t>(std::min<std::uint64_t>(100, std::max(by_count, by_bytes)));
}

bool Engine::below_low_watermark(const Queue& queue) const noexcept {
  const auto& o = queue.options_;
  if (o.low_watermark_pct == 0) return queue.counters_.messages() == 0;  // "until empty"
  return queue.counters_.messages() * 100 < o.max_messages * o.low_watermark_pct &&
         queue.counters_.bytes * 100 < o.max_bytes * o.low_watermark_pct;
}

Micros Engine::retry_after(const Queue& queue) const noexcept {
  // Time for the queue to fall to its low watermark at the dispatch rate if it
  // has one; otherwise a short guess. Clients add jitter and back off.
  constexpr Micros kGuess = 250'000;
  Micros estimate = kGuess;
  const auto& o = queue.options_;
  if (o.dispatch_rate.rate != 0) {
    const std::uint64_t low = o.max_messages * o.low_watermark_pct / 100;
    const std::uint64_t excess =
        queue.counters_.messages() > low ? queue.counters_.messages() - low : 1;
    estimate = static_cast<Micros>(excess * 1'000'000'000ull / o.dispatch_rate.rate);
  }
  return std::clamp<Micros>(estimate, 10'000, 60'000'000);
}

Admission Engine::admit(Queue& queue, std::uint64_t count, Micros now, bool count_refusal) {
  // A PUBLISH frame is admitted whole while the queue is below its high
  // watermark, so a queue (and the memory limit) can be passed by at most one
  // frame per publishing connection; clients batch freely, whatever the capacity.
  const auto& o = queue.options_;
  const std::uint64_t high_messages =
      std::max<std::uint64_t>(1, o.max_messages * o.high_watermark_pct / 100);
  const std::uint64_t high_bytes =
      std::max<std::uint64_t>(1, o.max_bytes * o.high_watermark_pct / 100);
  const auto full = [&](Micros retry, const char* detail, Throttle reason) {
    if (count_refusal) {
      if (o.overflow == Overflow::reject) queue.counters_.refused_total++;
      queue.counters_.throttled_total[static_cast<std::size_t>(reason)]++;
    }
    return Admission{errc::queue_full, retry, detail, reason};
  };
  if (queue.full_ && below_low_watermark(queue)) queue.full_ = false;
  if (queue.counters_.messages() >= high_messages || queue.counters_.bytes >= high_bytes)
    queue.full_ = true;
  if (queue.full_) return full(retry_after(queue), "queue is full", Throttle::capacity);

  if (memory_full_ && memory_used_ * 10 < memory_limit_ * 9) memory_full_ = false;
  if (memory_limit_ != 0 && memory_used_ >= memory_limit_) memory_full_ = true;
  if (memory_full_)
    return full(retry_after(queue), "broker memory limit reached", Throttle::memory);
  if (storage_full_ && queue.durable())
    return full(kStorageRetry, "storage is full (storage.max_size or the disk)", Throttle::storage);

  if (!queue.ingress_bucket_.try_take_batch(count, now))
    return full(queue.ingress_bucket_.next_available(now) - now, "publish rate limit of the queue",
                Throttle::rate);
  return {};
}

void Engine::wait_for_room(Queue& queue, PublishWaiter& waiter, Micros now) {
  if (std::find(queue.waiters_.begin(), queue.waiters_.end(), &waiter) == queue.waiters_.end())
    queue.waiters_.push_back(&waiter);
  if (std::find(blocked_queues_.begin(), blocked_queues_.end(), &queue) == blocked_queues_.end())
    blocked_queues_.push_back(&queue);
  queue.counters_.blocked_total++;
  // Only a rate wait ends by itself; the others end when messages leave
  // (or, for storage, when set_storage_full says so).
  if (!queue.full_ && !memory_full_ && !(storage_full_ && queue.durable()))
    schedule_wakeup(queue, queue.ingress_bucket_.next_available(now));
}

void Engine::set_storage_full(bool full, Micros now) {
  if (full == storage_full_) return;
  storage_full_ = full;
  if (!full) release_all_waiters(now);
}

void Engine::release_all_waiters(Micros now) {
  if (blocked_queues_.empty()) return;
  auto blocked = blocked_queues_;  // release_waiters edits the list
  for (Queue* q : blocked) release_waiters(*q, now);
}

void Engine::forget_waiter(PublishWaiter& waiter) noexcept {
  for (Queue* q : blocked_queues_) std::erase(q->waiters_, &waiter);
  std::erase_if(blocked_queues_, [](Queue* q) { return q->waiters_.empty(); });
}

void Engine::release_waiters(Queue& queue, Micros now) {
  if (queue.waiters_.empty()) return;
  if (queue.full_ && below_low_watermark(queue)) queue.full_ = false;
  if (memory_full_ && memory_used_ * 10 < memory_limit_ * 9) memory_full_ = false;
  if (queue.full_ || memory_full_ || (storage_full_ && queue.durable())) return;
  const Micros at = queue.ingress_bucket_.next_available(now);
  if (at > now) {
    schedule_wakeup(queue, at);
    return;
  }
  auto waiters = std::move(queue.waiters_);
  queue.waiters_.clear();
  std::erase(blocked_queues_, &queue);
  for (PublishWaiter* w : waiters) w->room(queue);
}

}  // namespace sluice::engine
