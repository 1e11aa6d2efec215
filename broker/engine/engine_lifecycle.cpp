// An operator's queue lifecycle: purging a queue's ready messages, and
// deleting a queue with everything it holds. Both are rare and may walk every
// slot; the hot paths never look here.
#include <algorithm>
#include <functional>

#include "engine.hpp"

namespace sluice::engine {

std::uint64_t Engine::purge(Queue& queue, Micros now) {
  std::vector<std::uint32_t> ready;
  std::vector<std::uint64_t> durable_ids;
  const std::uint64_t parked = drop_parked(queue, ready, durable_ids);
  if (queue.lanes_) queue.lanes_->take_ready(ready);
  for (const std::uint32_t slot : ready) {
    if (store_[slot].durable) durable_ids.push_back(store_[slot].id);
    queue.counters_.ready--;
    drop(slot, now, /*was_out=*/false);  // an ordered key's message out stays its only one
  }
  if (journal_ != nullptr && !durable_ids.empty()) journal_->dropped(queue, durable_ids, false);
  // Room again: blocked publishers of this queue, and of any queue held back by memory.
  queue.full_ = queue.full_ && !below_low_watermark(queue);
  release_waiters(queue, now);
  release_all_waiters(now);
  return ready.size() + parked;
}

std::uint64_t Engine::drop_parked(Queue& queue, std::vector<std::uint32_t>& slots,
                                  std::vector<std::uint64_t>& durable_ids) {
  slots.insert(slots.end(), queue.front_.rbegin(), queue.front_.rend());
  queue.front_.clear();
  std::uint64_t parked = 0;
  queue.spool_.drain([&](std::uint32_t slot) { slots.push_back(slot); },
                     [&](const ReadySpool::Head& h) {
                       if (h.durable) durable_ids.push_back(h.id);
                       const std::size_t size = h.message_size();
                       queue.counters_.bytes -= size;
                       memory_used_ -= size + kMessageOverhead;
                       queue.counters_.ready--;
                       --parked_;
                       ++parked;
                     });
  return parked;
}

Error Engine::can_remove(const Queue& queue, bool force) const {
  const QueueCounters& c = queue.counters_;
  // Writes under way would land after the delete's: wait for them.
  const bool committing =
      c.staged != 0 || c.dead_lettering != 0 ||
      std::any_of(retry_records_.begin(), retry_records_.end(),
                  [&](const RetryRecord& r) { return store_[r.slot].queue == &queue; });
  if (committing)
    return {errc::queue_in_use,
            "writes of queue " + queue.name() + " are being committed; try again in a moment"};
  if (force) return {};
  if (c.messages() != 0)
    return {errc::queue_in_use, "queue " + queue.name() + " holds " + std::to_string(c.messages()) +
                                    " messages: purge it first, or delete with force"};
  if (!queue.consumers_.empty())
    return {errc::queue_in_use, "queue " + queue.name() + " has " +
                                    std::to_string(queue.consumers_.size()) +
                                    " consumers: deleting with force ends them"};
  return {};
}

std::uint64_t Engine::remove_queue(Queue& queue, Micros now) {
  std::vector<std::uint64_t> durable_ids;
  std::uint64_t dropped = 0;
  const auto gone = [&](std::uint32_t slot) {
    if (store_[slot].durable) durable_ids.push_back(store_[slot].id);
    drop(slot, now);
    ++dropped;
  };
  // The consumers end first, and what they hold goes with the queue.
  auto consumers = std::move(queue.consumers_);
  queue.consumers_.clear();
  queue.ring_.clear();
  queue.throttled_.clear();
  for (auto& consumer : consumers) {
    while (consumer->inflight_head_ != kNil) {
      const std::uint32_t slot = consumer->inflight_head_;
      end_lease(slot);
      gone(slot);
    }
    consumer->sink_->ended(*consumer);
  }
  consumers.clear();  // frees them
  std::vector<std::uint32_t> ready;
  dropped += drop_parked(queue, ready, durable_ids);
  if (queue.lanes_) queue.lanes_->take_ready(ready);
  for (const std::uint32_t slot : ready) gone(slot);
  // Delayed (waiting for a retry or a not-before time) and held (resequencer).
  for (std::uint32_t slot = 0; slot < store_.capacity(); ++slot) {
    const Slot& s = store_[slot];
    if (s.state == SlotState::free || s.queue != &queue) continue;
    if (s.heap_pos != kNil) deadlines_.remove(slot);
    gone(slot);
  }
  // Nothing may point at the queue once it is gone.
  std::erase_if(wakeups_, [&](const Wakeup& w) { return w.second == &queue; });
  std::make_heap(wakeups_.begin(), wakeups_.end(), std::greater<>{});
  std::erase(blocked_queues_, &queue);
  const auto waiters = std::move(queue.waiters_);
  if (journal_ != nullptr) journal_->dropped(queue, durable_ids, true);
  // Blocked publishers try again by name: the queue is new then, or not found.
  for (PublishWaiter* w : waiters) w->room(queue);
  ++removals_;
  const std::string name = queue.name();
  queues_.erase(name);  // destroys it
  release_all_waiters(now);
  return dropped;
}

}  // namespace sluice::engine
