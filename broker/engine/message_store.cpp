#include "message_store.hpp"

namespace sluice::engine {

std::uint32_t MessageStore::allocate() {
  if (!free_.empty()) {
    const std::uint32_t index = free_.back();
    free_.pop_back();
    return index;
  }
  slots_.emplace_back();
  return static_cast<std::uint32_t>(slots_.size() - 1);
}

Failure& MessageStore::failure(std::uint32_t index) {
  slots_[index].failed = true;
  return failures_[index];
}

void MessageStore::release(std::uint32_t index) {
  Slot& s = slots_[index];
  s.state = SlotState::free;
  s.generation++;
  s.owner = nullptr;
  s.queue = nullptr;
  s.durable = false;
  s.redriven = false;
  s.repeat_attempt = false;
  s.lane = nullptr;
  if (s.failed) {
    failures_.erase(index);
    s.failed = false;
  }
  s.deadline = 0;
  s.attempt = 0;
  s.message.clear();  // keeps capacity for the next message
  free_.push_back(index);
}

void DeadlineHeap::place(std::size_t pos, std::uint32_t slot) noexcept {
  heap_[pos] = slot;
  store_[slot].heap_pos = static_cast<std::uint32_t>(pos);
}

void DeadlineHeap::sift_up(std::size_t pos) noexcept {
  const std::uint32_t slot = heap_[pos];
  const Micros k = store_[slot].deadline;
  while (pos > 0) {
    const std::size_t parent = (pos - 1) / 2;
    if (key(parent) <= k) break;
    place(pos, heap_[parent]);
    pos = parent;
  }
  place(pos, slot);
}

void DeadlineHeap::sift_down(std::size_t pos) noexcept {
  const std::uint32_t slot = heap_[pos];
  const Micros k = store_[slot].deadline;
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t child = 2 * pos + 1;
    if (child >= n) break;
    if (child + 1 < n && key(child + 1) < key(child)) ++child;
    if (k <= key(child)) break;
    place(pos, heap_[child]);
    pos = child;
  }
  place(pos, slot);
}

void DeadlineHeap::push(std::uint32_t slot) {
  heap_.push_back(slot);
  sift_up(heap_.size() - 1);
}

void DeadlineHeap::remove(std::uint32_t slot) {
  const std::size_t pos = store_[slot].heap_pos;
  store_[slot].heap_pos = kNil;
  const std::uint32_t last = heap_.back();
  heap_.pop_back();
  if (pos == heap_.size()) return;  // it was the last element
  place(pos, last);
  sift_up(pos);
  sift_down(store_[last].heap_pos);
}

void DeadlineHeap::update(std::uint32_t slot) {
  const std::size_t pos = store_[slot].heap_pos;
  sift_up(pos);
  sift_down(store_[slot].heap_pos);
}

}  // namespace sluice::engine
