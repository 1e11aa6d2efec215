// TokenBucket: a rate limit of `rate` per second with bursts of at most
// `burst`, on an injected clock (Micros), so it is exact to the microsecond in
// tests. Over any window of length t it grants at most rate·t + burst tokens,
// and spreads grants evenly: an empty bucket refills one token every 1/rate s,
// never a second's worth at once. Not thread-safe (engine thread).
#pragma once

#include <cstdint>

#include "message_store.hpp"  // Micros

namespace sluice::engine {

/// A rate in thousandths of a message per second, so 0.1/s .. 1,000,000/s
/// are exact integers (100 .. 1,000,000,000). 0 means unlimited.
using MilliRate = std::uint64_t;

class TokenBucket {
 public:
  /// Unlimited: every take succeeds.
  TokenBucket() = default;
  /// `rate` > 0 in milli-messages per second, `burst` >= 1 tokens; starts full.
  TokenBucket(MilliRate rate, std::uint32_t burst, Micros now) noexcept;

  bool unlimited() const noexcept { return rate_ == 0; }
  MilliRate rate() const noexcept { return rate_; }
  std::uint32_t burst() const noexcept { return burst_; }

  /// Takes one token if there is one at `now`.
  bool try_take(Micros now) noexcept;
  /// Takes `n` tokens if at least one is there, going into debt for the rest
  /// (a batch of n is admitted whole; the debt delays what comes next, so the
  /// long-run rate holds).
  bool try_take_batch(std::uint64_t n, Micros now) noexcept;
  /// The earliest time at or after `now` when a token is available.
  Micros next_available(Micros now) const noexcept;
  /// Changes rate and burst, keeping the tokens earned so far (capped).
  void reconfigure(MilliRate rate, std::uint32_t burst, Micros now) noexcept;
  /// True when the bucket is full at `now` (an idle key's bucket can be dropped).
  bool full(Micros now) const noexcept;
  /// When the bucket will be full again if nothing is taken (now if it is).
  Micros full_at(Micros now) const noexcept;
  /// Gives back one token taken but not used (capped at the burst).
  void refund() noexcept;

 private:
  void refill(Micros now) noexcept;

  MilliRate rate_ = 0;
  std::uint32_t burst_ = 0;
  // Tokens in units of 1e-9 token, so a refill is exact integer arithmetic:
  // elapsed µs × milli-rate = units. Signed: a batch may leave it in debt.
  std::int64_t units_ = 0;
  Micros last_ = 0;
};

}  // namespace sluice::engine
