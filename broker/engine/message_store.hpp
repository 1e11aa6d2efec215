// Where messages live while the broker holds them: a slab of slots reused
// through a free list, so the steady state allocates nothing (a reused slot
// keeps its payload buffer's capacity). A slot's index and generation form the
// lease token handed to consumers, which makes an ack an array lookup and a
// stale lease a generation mismatch.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sluice::engine {

/// Monotonic time in microseconds. The engine never reads a clock itself.
using Micros = std::int64_t;
/// "No time scheduled".
inline constexpr Micros kNever = INT64_MAX;

inline constexpr std::uint32_t kNil = 0xffffffffu;

class Queue;
class Consumer;
struct KeyLane;

// staged: a durable publish waiting for its commit (not deliverable yet).
// held: waiting in the resequencer for an earlier sequence number.
// dead_lettering: its dead-letter record is being written; gone once committed.
enum class SlotState : std::uint8_t {
  free,
  staged,
  ready,
  delayed,
  in_flight,
  held,
  dead_lettering
};

struct Slot {
  std::string message;  // raw message encoding, sent back verbatim on delivery
  std::uint64_t id = 0;
  std::int64_t publish_wall_us = 0;
  Micros deadline = 0;  // lease end when in flight, not-before when delayed or staged
  Queue* queue = nullptr;
  Consumer* owner = nullptr;     // consumer holding the lease
  KeyLane* lane = nullptr;       // its key's lane, on a queue with per-key rates
  std::uint32_t generation = 0;  // bumped on every delivery and on free
  std::uint32_t attempt = 0;     // deliveries so far
  std::uint32_t heap_pos = kNil;
  std::uint32_t prev = kNil;  // owner's in-flight list
  std::uint32_t next = kNil;
  SlotState state = SlotState::free;
  // Bit-fields: the slot stays 104 bytes (its size shows in throughput).
  bool durable : 1 = false;   // stored in the journal: settling it must tell the journal
  bool redriven : 1 = false;  // back from the dead-letter queue: skips the resequencer
  bool failed : 1 = false;    // has a Failure record (MessageStore::failure)
  bool extended : 1 = false;  // its lease was extended (Engine::extended_ knows when it began)
  bool repeat_attempt : 1 =
      false;  // released unused (Engine::release): the next delivery reuses `attempt`
  // Its ordering key, read once at the door: where the key header's value
  // starts in `message` (0: no key; kKeyBeyond: further in, read it again).
  std::uint16_t key_at = 0;
};
static_assert(sizeof(Slot) == 104, "a bigger slot costs throughput and memory per message");

inline constexpr std::uint16_t kKeyBeyond = 0xffff;

/// What a dead-letter entry needs to know about a message's failed attempts.
/// Kept beside the slots, not in them: most messages never fail, and the
/// slots stay small on the hot path.
struct Failure {
  Micros first = kNever;  // engine time of the first failed attempt
  Micros last = kNever;
  std::string reason;  // the last one's
};

/// Owns all slots of one engine. Not thread-safe: owned by the engine's thread.
class MessageStore {
 public:
  /// The slot's failure record, created on first use; dropped with the slot.
  Failure& failure(std::uint32_t index);
  /// A free slot (reused when possible), state still `free`.
  std::uint32_t allocate();
  /// Returns the slot to the free list; invalidates every lease token on it.
  void release(std::uint32_t index);

  Slot& operator[](std::uint32_t index) noexcept { return slots_[index]; }
  const Slot& operator[](std::uint32_t index) const noexcept { return slots_[index]; }
  std::size_t capacity() const noexcept { return slots_.size(); }
  std::size_t live() const noexcept { return slots_.size() - free_.size(); }

  static std::uint64_t lease_token(std::uint32_t index, std::uint32_t generation) noexcept {
    return (std::uint64_t{index} << 32) | generation;
  }
  /// The slot a lease token names, or kNil if it is out of range.
  std::uint32_t slot_of(std::uint64_t token) const noexcept {
    const auto index = static_cast<std::uint32_t>(token >> 32);
    return index < slots_.size() ? index : kNil;
  }
  static std::uint32_t generation_of(std::uint64_t token) noexcept {
    return static_cast<std::uint32_t>(token);
  }

 private:
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;
  std::unordered_map<std::uint32_t, Failure> failures_;
};

/// Min-heap of slot indices ordered by Slot::deadline; each slot records its
/// position, so removal and re-keying are O(log n) without tombstones (a lazy
/// heap would keep every acked lease until its deadline: millions at speed).
class DeadlineHeap {
 public:
  explicit DeadlineHeap(MessageStore& store) : store_(store) {}

  void push(std::uint32_t slot);
  void remove(std::uint32_t slot);
  /// Call after changing the slot's deadline.
  void update(std::uint32_t slot);
  bool empty() const noexcept { return heap_.empty(); }
  std::uint32_t top() const noexcept { return heap_.front(); }
  std::size_t size() const noexcept { return heap_.size(); }

 private:
  Micros key(std::size_t pos) const noexcept { return store_[heap_[pos]].deadline; }
  void place(std::size_t pos, std::uint32_t slot) noexcept;
  void sift_up(std::size_t pos) noexcept;
  void sift_down(std::size_t pos) noexcept;

  MessageStore& store_;
  std::vector<std::uint32_t> heap_;
};

}  // namespace sluice::engine
