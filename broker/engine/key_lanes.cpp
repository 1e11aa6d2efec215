#include "key_lanes.hpp"

#include <algorithm>

namespace sluice::engine {

void KeyLanes::configure(MilliRate rate, std::uint32_t burst, bool ordered, Micros now) {
  ordered_ = ordered;
  rate_ = rate;
  burst_ = std::max<std::uint32_t>(burst, 1);
  for (auto& [key, lane] : lanes_) {
    if (rate_ == 0 || key.empty())
      lane->bucket = TokenBucket();
    else if (lane->bucket.unlimited())
      lane->bucket = TokenBucket(rate_, burst_, now);
    else
      lane->bucket.reconfigure(rate_, burst_, now);
  }
}

KeyLane& KeyLanes::hold(std::string_view key, Micros now) {
  auto it = lanes_.find(key);
  if (it == lanes_.end()) {
    auto lane = std::make_unique<KeyLane>();
    lane->key = std::string(key);
    // Messages without the key header are not anyone's: no per-key limit.
    if (rate_ != 0 && !key.empty()) lane->bucket = TokenBucket(rate_, burst_, now);
    it = lanes_.emplace(lane->key, std::move(lane)).first;
  }
  KeyLane& lane = *it->second;
  if (lane.idle) {
    lane.idle = false;
    std::erase(idle_, &lane);
  }
  lane.held++;
  return lane;
}

Micros KeyLanes::release(KeyLane& lane, Micros now) {
  if (lane.busy) {
    lane.busy = false;
    make_eligible(lane);
  }
  return forget(lane, now);
}

Micros KeyLanes::forget(KeyLane& lane, Micros now) {
  if (--lane.held != 0 || lane.idle) return kNever;
  lane.idle = true;
  idle_.push_back(&lane);
  return lane.bucket.full_at(now);
}

void KeyLanes::take_ready(std::vector<std::uint32_t>& out) {
  for (auto& [key, lane] : lanes_) {
    lane->ready.move_to(out);  // pop() skips a lane left in the ring without messages
  }
}

void KeyLanes::refund_unspent() noexcept {
  for (KeyLane* lane : eligible_) {
    if (!lane->prepaid) continue;
    lane->bucket.refund();
    lane->prepaid = false;
  }
}

void KeyLanes::make_eligible(KeyLane& lane) {
  if (lane.eligible || lane.throttled || lane.busy || lane.ready.empty()) return;
  lane.eligible = true;
  eligible_.push_back(&lane);
}

void KeyLanes::push_back(KeyLane& lane, std::uint32_t slot) {
  lane.ready.push_back(slot);
  make_eligible(lane);
}

void KeyLanes::push_front(KeyLane& lane, std::uint32_t slot) {
  lane.ready.push_front(slot);
  lane.busy = false;
  make_eligible(lane);
}

std::uint32_t KeyLanes::pop(Micros now, Micros& wake_at, KeyLane*& from) {
  while (!eligible_.empty()) {
    KeyLane& lane = *eligible_.front();
    eligible_.pop_front();
    lane.eligible = false;
    // Blocked after it joined the ring (an ordered key's message out, or read
    // back at a restart): it rejoins when that message is back or settled.
    if (lane.ready.empty() || lane.busy) continue;
    if (lane.prepaid) {
      lane.prepaid = false;
    } else if (!lane.bucket.try_take(now)) {
      lane.throttled = true;
      lane.due = lane.bucket.next_available(now);
      wake_at = std::min(wake_at, lane.due);
      throttled_.push_back(&lane);
      continue;
    }
    const std::uint32_t slot = lane.ready.front();
    lane.ready.pop_front();
    if (ordered_ && !lane.key.empty()) lane.busy = true;  // until it is back or settled
    make_eligible(lane);  // to the back of the ring: one message per key per turn
    from = &lane;
    return slot;
  }
  return kNil;
}

void KeyLanes::wake(Micros now, Micros& wake_at) {
  std::erase_if(throttled_, [&](KeyLane* lane) {
    if (lane->due > now) {
      wake_at = std::min(wake_at, lane->due);
      return false;
    }
    lane->prepaid = lane->bucket.try_take(lane->due);
    lane->due = kNever;
    lane->throttled = false;
    make_eligible(*lane);
    return true;
  });
  std::erase_if(idle_, [&](KeyLane* lane) {
    if (lane->throttled || lane->eligible || lane->busy || lane->held != 0 || !lane->ready.empty())
      return false;
    if (!lane->bucket.full(now)) {
      // Its bucket still remembers recent use; dropping it now would hand the
      // key a fresh burst. Drop it once it is full.
      wake_at = std::min(wake_at, lane->bucket.full_at(now));
      return false;
    }
    lanes_.erase(lane->key);  // frees it
    return true;
  });
}

}  // namespace sluice::engine
