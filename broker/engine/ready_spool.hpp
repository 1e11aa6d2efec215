// A queue's ready messages in arrival order, packed. A message that waits for
// a consumer needs its bytes, its id, its publish time and two flags; a Slot
// (104 bytes plus a heap string) is for a message that is out, delayed or
// held. So a fresh ready message of an unkeyed queue is "parked" here as a
// record of a few bytes beside its encoding, in chunks that grow with the
// backlog, and gets a slot again only when it is dispatched. A backlog of
// 100-byte messages costs about 105 bytes each instead of about 240.
//
// Record layout (varints are LEB128):
//   varint tag      (n << 6) | flags; flags bit 0: parked (else n is a slot
//                   index and nothing follows), bit 1: compact (n payload
//                   bytes follow and the encoding is rebuilt as "no
//                   properties, no headers, bytes32 payload"), bit 2:
//                   durable, bit 3: redriven, bit 4: the id is the previous
//                   parked record's + 1 (no id varint follows), bit 5: the
//                   publish time is the previous one's (no time varint)
//   varint key_at   parked, not compact: Slot::key_at
//   varint id       zigzag delta from the previous parked record's id
//   varint time     zigzag delta from the previous parked record's publish time
//   n bytes         the encoding (or the payload, compact)
// A run of messages from one producer (consecutive ids, one time per PUBLISH
// frame) costs its 2-byte tag and nothing else.
//
// Messages that keep their slot (retries, messages released by a consumer
// that left) are records too, so arrival order holds across both kinds.
// Not thread-safe: the engine's thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "message_store.hpp"

namespace sluice::engine {

class ReadySpool {
 public:
  /// The oldest record, decoded. For a parked one, `stored` points into the
  /// spool and is valid until the next push or pop.
  struct Head {
    std::uint32_t slot = kNil;  // a slot record; else the fields below
    std::uint64_t id = 0;
    std::int64_t publish_wall_us = 0;
    std::uint16_t key_at = 0;
    bool durable = false;
    bool redriven = false;
    bool compact = false;
    std::string_view stored;
    /// The message's encoding into `out` (replacing what it held).
    void message(std::string& out) const;
    std::size_t message_size() const noexcept { return stored.size() + (compact ? 7 : 0); }
  };

  ReadySpool() = default;
  ReadySpool(const ReadySpool&) = delete;
  ReadySpool& operator=(const ReadySpool&) = delete;
  ~ReadySpool();

  bool empty() const noexcept { return count_ == 0; }
  std::size_t size() const noexcept { return count_; }
  /// Parked records (the rest are slot records).
  std::size_t parked() const noexcept { return parked_; }
  /// Bytes of chunk memory held now.
  std::size_t chunk_bytes() const noexcept { return chunk_bytes_; }

  /// A message that keeps its slot.
  void push_slot(std::uint32_t index);
  /// Copies what a fresh ready message needs out of `s` (the caller then frees the slot).
  void park(const Slot& s);
  /// Whether `s` can be parked: a first attempt with nothing attached to its slot.
  static bool parkable(const Slot& s) noexcept {
    return s.lane == nullptr && s.attempt == 0 && !s.failed && !s.repeat_attempt;
  }

  /// The oldest record; the spool must not be empty.
  Head front() const noexcept;
  void pop_front() noexcept;

  /// Empties the spool, calling `on_slot(index)` or `on_parked(const Head&)` for each record in
  /// order.
  template <typename OnSlot, typename OnParked>
  void drain(OnSlot&& on_slot, OnParked&& on_parked) {
    while (!empty()) {
      const Head h = front();
      if (h.slot != kNil)
        on_slot(h.slot);
      else
        on_parked(h);
      pop_front();
    }
  }

 private:
  struct Chunk {
    Chunk* next;
    std::uint32_t capacity;  // bytes of data after the header
    std::uint32_t begin;     // first unread byte
    std::uint32_t end;       // first unwritten byte
    char* data() noexcept { return reinterpret_cast<char*>(this + 1); }
    const char* data() const noexcept { return reinterpret_cast<const char*>(this + 1); }
  };
  /// Room for `bytes` at the tail, adding a chunk when the last one is full.
  char* reserve(std::size_t bytes);
  Head decode(std::size_t& length) const noexcept;
  /// Gives a chunk back (to the thread's pool of large chunks, or to malloc).
  void free_chunk(Chunk* chunk) noexcept;

  Chunk* head_ = nullptr;  // read from here
  Chunk* tail_ = nullptr;  // write here
  std::size_t count_ = 0;
  std::size_t parked_ = 0;
  std::size_t chunk_bytes_ = 0;
  // Delta bases: the last parked record written, and the last one read.
  std::uint64_t write_id_ = 0;
  std::int64_t write_time_ = 0;
  std::uint64_t read_id_ = 0;
  std::int64_t read_time_ = 0;
};

}  // namespace sluice::engine
