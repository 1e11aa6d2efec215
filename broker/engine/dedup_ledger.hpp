// DedupLedger: the dedup ids a queue has seen within its window, so a producer
// that publishes again (after a timeout, a reconnect, a crash) gets the first
// message's id back instead of a second copy. Bounded: past `max_entries` the
// oldest entries go first, and that is counted. Not thread-safe (engine thread).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

#include "message_store.hpp"
#include "string_map.hpp"

namespace sluice::engine {

class DedupLedger {
 public:
  /// The id of the message first published with `dedup_id` if that was within
  /// the window, else 0.
  std::uint64_t find(std::string_view dedup_id, Micros now);
  /// Remembers `dedup_id` → `message_id` until `expires`.
  void insert(std::string_view dedup_id, std::uint64_t message_id, Micros expires,
              std::size_t max_entries);
  /// Drops entries whose window has ended.
  void expire(Micros now);

  std::size_t size() const noexcept { return entries_.size(); }
  /// Entries dropped before their window ended because the ledger was full.
  std::uint64_t evicted() const noexcept { return evicted_; }

 private:
  struct Entry {
    std::uint64_t message_id;
    Micros expires;
  };
  StringMap<Entry> entries_;
  // Insertion order (= expiry order while the window does not change); an
  // entry whose id was inserted again later is skipped when its time comes.
  std::deque<std::pair<Micros, std::string>> order_;
  std::uint64_t evicted_ = 0;
};

}  // namespace sluice::engine
