// Resequencer: the ordering stage for producers that publish in parallel and
// tag each message with a key and a sequence number (1, 2, 3, ... per key).
// Arrivals that come early are held; the next expected number releases itself
// and every held one that follows it. If the oldest held message of a key has
// waited `gap_timeout`, the stage gives up on the missing numbers: it releases
// what it holds, in order, counts a gap, and remembers the skipped numbers so
// that a late arrival of one of them is still let through (out of order)
// rather than taken for a duplicate. A number seen before is a duplicate.
//
// Held messages stay slots of the MessageStore (state `held`), so they count
// toward the queue's capacity. The per-key bookkeeping is bounded: at most
// kMaxIdleKeys keys with nothing held are remembered (the least recently used
// go first; such a key starts again from 1). Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "message_store.hpp"
#include "string_map.hpp"

namespace sluice::engine {

class Resequencer {
 public:
  enum class Verdict { release, hold, duplicate };
  static constexpr std::size_t kMaxIdleKeys = 100'000;
  static constexpr std::size_t kMaxSkipped = 4096;  // skipped numbers remembered per key

  /// A message of `key` with `sequence` arrives as `slot`. On `release`,
  /// `released` gets the slots that may go now, in order (this one first).
  Verdict offer(std::string_view key, std::uint64_t sequence, std::uint32_t slot, Micros now,
                std::vector<std::uint32_t>& released);
  /// Whether offer() would call `sequence` of `key` a duplicate now: a number
  /// below the key's next (and not one a gap release skipped) or one held.
  /// `held_slot` gets the held message's slot (kNil when it went already).
  bool seen(std::string_view key, std::uint64_t sequence, std::uint32_t& held_slot) const;
  /// Keys whose oldest held message has waited `gap_timeout` release what they
  /// hold (appended to `released`, in order per key). Returns the earliest time
  /// another key will time out, or kNever.
  Micros expire(Micros now, Micros gap_timeout, std::vector<std::uint32_t>& released);
  std::size_t held() const noexcept { return held_; }
  std::uint64_t gaps() const noexcept { return gaps_; }
  /// The earliest time a held message times out, or kNever.
  Micros next_timeout(Micros gap_timeout) const noexcept;

 private:
  struct KeyState {
    std::uint64_t expected = 1;
    std::map<std::uint64_t, std::pair<std::uint32_t, Micros>> held;  // seq → (slot, since)
    std::set<std::uint64_t> skipped;  // numbers a gap release passed over
    Micros last_used = 0;
  };
  void release_run(KeyState& state, std::vector<std::uint32_t>& released);
  void trim_idle_keys();

  StringMap<KeyState> keys_;
  std::size_t held_ = 0;
  std::uint64_t gaps_ = 0;
};

}  // namespace sluice::engine
