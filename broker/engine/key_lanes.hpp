// KeyLanes: a queue's ready messages split by key (the value of one header,
// e.g. "tenant"), each key with a token bucket of its own, served round-robin
// so one key at its limit never holds back the others. FIFO within a key.
// Lanes exist only for keys that hold messages (or whose bucket is still
// refilling): an idle key costs nothing and is reclaimed. Not thread-safe
// (engine thread).
//
// Ordered lanes (ordering keys): a key with a message out is not served again
// until that message is back in its lane (at the front: a retry keeps its
// place) or settled for good. The empty key is never ordered.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "message_store.hpp"
#include "token_bucket.hpp"
#include "string_map.hpp"

namespace sluice::engine {

/// Slot indices in a ring that grows by doubling and allocates nothing while
/// empty: a key with a message or two costs a few bytes here, where a
/// std::deque would take a 512-byte block and its map (~600 bytes a key).
class SlotRing {
 public:
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  std::uint32_t front() const noexcept { return buf_[head_]; }
  void push_back(std::uint32_t slot) {
    grow_if_full();
    buf_[(head_ + size_) & (capacity_ - 1)] = slot;
    ++size_;
  }
  void push_front(std::uint32_t slot) {
    grow_if_full();
    head_ = (head_ + capacity_ - 1) & (capacity_ - 1);
    buf_[head_] = slot;
    ++size_;
  }
  void pop_front() noexcept {
    head_ = (head_ + 1) & (capacity_ - 1);
    if (--size_ == 0) emptied();
  }
  /// Appends every slot, oldest first, to `out` and empties the ring.
  void move_to(std::vector<std::uint32_t>& out) {
    for (std::size_t i = 0; i < size_; ++i) out.push_back(buf_[(head_ + i) & (capacity_ - 1)]);
    size_ = 0;
    emptied();
  }
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  /// Emptied: a large buffer (a key's backlog) goes back; a small one stays for the next message.
  void emptied() noexcept {
    head_ = 0;
    if (capacity_ > kKeep) {
      buf_.reset();
      capacity_ = 0;
    }
  }
  static constexpr std::size_t kKeep = 16;

  void grow_if_full() {
    if (size_ < capacity_) return;
    const std::size_t capacity = capacity_ == 0 ? 2 : capacity_ * 2;
    auto buf = std::make_unique<std::uint32_t[]>(capacity);
    for (std::size_t i = 0; i < size_; ++i) buf[i] = buf_[(head_ + i) & (capacity_ - 1)];
    buf_ = std::move(buf);
    capacity_ = capacity;
    head_ = 0;
  }

  std::unique_ptr<std::uint32_t[]> buf_;
  std::size_t capacity_ = 0;  // a power of two
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

struct KeyLane {
  std::string key;
  SlotRing ready;  // slot indices, oldest first
  TokenBucket bucket;
  std::uint64_t held = 0;  // messages of this key in any state
  Micros due = kNever;     // throttled: when its next token comes
  bool eligible = false;   // in the round-robin ring
  bool throttled = false;  // waiting for `due`
  bool prepaid = false;    // holds a token already taken
  bool idle = false;       // held == 0: in the idle list
  bool busy = false;       // ordered: its message in flight (or waiting to retry) blocks it
};

class KeyLanes {
 public:
  /// `rate` per key (rate 0: keys unlimited, lanes still FIFO per key). The
  /// empty key (messages without the key header) is never limited.
  /// `ordered`: at most one message per key out at a time.
  void configure(MilliRate rate, std::uint32_t burst, bool ordered, Micros now);

  /// The lane of `key`, created on first use; counts one more message held.
  KeyLane& hold(std::string_view key, Micros now);
  /// One message of `lane` is gone for good (acked or dead-lettered): an
  /// ordered lane may serve its next; an empty lane goes idle.
  /// Returns when wake() can drop it (its bucket full again), or kNever.
  Micros release(KeyLane& lane, Micros now);
  /// The same for a message that was not the one out (a purged ready one): an
  /// ordered lane whose message is out stays blocked.
  Micros forget(KeyLane& lane, Micros now);

  void push_back(KeyLane& lane, std::uint32_t slot);
  /// A message back in line (retry, expiry, consumer gone): first of its key
  /// again, and an ordered lane may serve it.
  void push_front(KeyLane& lane, std::uint32_t slot);
  /// An ordered lane's message is out (waiting to retry, read back at a
  /// restart): nothing else of the key goes until it is back or settled.
  void block(KeyLane& lane) noexcept {
    if (ordered_ && !lane.key.empty()) lane.busy = true;
  }
  /// The next ready slot by round-robin over keys that have a token, taking
  /// it; kNil when none can go now. `wake_at` is lowered to the earliest time
  /// a throttled lane gets its token.
  std::uint32_t pop(Micros now, Micros& wake_at, KeyLane*& from);
  /// Lanes whose token is due rejoin the ring (their token taken as of `due`);
  /// idle lanes with a full bucket are dropped. Lowers `wake_at` as pop does.
  void wake(Micros now, Micros& wake_at);

  /// Moves every ready slot of every lane into `out` (a purge); the lanes keep
  /// counting them as held until each is released.
  void take_ready(std::vector<std::uint32_t>& out);

  /// Gives back the tokens wake() took for lanes that then sent nothing.
  void refund_unspent() noexcept;

  /// Calls `f(slot)` with the first ready slot of every lane that has one.
  template <typename F>
  void for_each_head(F&& f) const {
    for (const auto& [key, lane] : lanes_)
      if (!lane->ready.empty()) f(lane->ready.front());
  }

  /// Calls `f(const KeyLane&)` for every lane.
  template <typename F>
  void for_each_lane(F&& f) const {
    for (const auto& [key, lane] : lanes_) f(static_cast<const KeyLane&>(*lane));
  }
  bool any_eligible() const noexcept { return !eligible_.empty(); }
  std::size_t lanes() const noexcept { return lanes_.size(); }
  bool empty() const noexcept { return lanes_.empty(); }

 private:
  void make_eligible(KeyLane& lane);

  StringMap<std::unique_ptr<KeyLane>> lanes_;
  std::deque<KeyLane*> eligible_;
  std::vector<KeyLane*> throttled_;
  std::vector<KeyLane*> idle_;
  MilliRate rate_ = 0;
  std::uint32_t burst_ = 1;
  bool ordered_ = false;
};

}  // namespace sluice::engine
