// RetryPolicy: how long a message waits after a failed attempt (a nack without
// a delay, a lease that ran out, a consumer that left) before it is delivered
// again, and how many attempts it gets before it goes to the dead-letter queue.
//
//   base(n) = min(max_backoff, initial_backoff × multiplier^(n-1))   n = failed attempts so far
//   none:  base(n)
//   full:  uniform in [0, base(n)]
//   equal: base(n)/2 + uniform in [0, base(n)/2]
//
// Randomness comes from the caller's generator (the engine's, seeded), so tests
// can replay a schedule exactly.
#pragma once

#include <cstdint>
#include <random>

#include "message_store.hpp"

namespace sluice::engine {

enum class Jitter : std::uint8_t { none, full, equal };

struct RetryPolicy {
  /// Deliveries before a message is dead-lettered (0: never by count).
  std::uint32_t max_attempts = 10;
  Micros initial_backoff = 200'000;
  /// Growth per failed attempt, in thousandths (2000 = ×2).
  std::uint32_t multiplier_milli = 2000;
  Micros max_backoff = 60'000'000;
  Jitter jitter = Jitter::equal;

  /// The delay before the retry that follows failed attempt `failed` (1, 2, ...), before jitter.
  Micros base(std::uint32_t failed) const noexcept;
  /// The delay with jitter applied, drawn from `rng`.
  Micros backoff(std::uint32_t failed, std::mt19937_64& rng) const noexcept;
  /// True when a message that has failed `attempts` times gets no more.
  bool exhausted(std::uint32_t attempts) const noexcept {
    return max_attempts != 0 && attempts >= max_attempts;
  }
};

}  // namespace sluice::engine
