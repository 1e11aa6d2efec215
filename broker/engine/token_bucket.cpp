#include "token_bucket.hpp"

#include <algorithm>
#include <limits>

namespace sluice::engine {

namespace {
constexpr std::int64_t kUnitsPerToken = 1'000'000'000;  // µs per s × milli per unit
}

TokenBucket::TokenBucket(MilliRate rate, std::uint32_t burst, Micros now) noexcept
    : rate_(rate), burst_(std::max<std::uint32_t>(burst, 1)), last_(now) {
  units_ = static_cast<std::int64_t>(burst_) * kUnitsPerToken;
}

void TokenBucket::refill(Micros now) noexcept {
  if (now <= last_) return;
  const std::int64_t cap = static_cast<std::int64_t>(burst_) * kUnitsPerToken;
  const Micros elapsed = now - last_;
  last_ = now;
  if (units_ >= cap) return;
  // elapsed × rate can overflow after very long idle periods; then it is full anyway.
  const std::int64_t room = cap - units_;
  const auto rate = static_cast<std::int64_t>(rate_);
  if (elapsed >= room / rate + 1)
    units_ = cap;
  else
    units_ = std::min(cap, units_ + elapsed * rate);
}

bool TokenBucket::try_take(Micros now) noexcept {
  return try_take_batch(1, now);
}

bool TokenBucket::try_take_batch(std::uint64_t n, Micros now) noexcept {
  if (rate_ == 0) return true;
  refill(now);
  if (units_ < kUnitsPerToken) return false;
  const std::uint64_t max_n =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / (2 * kUnitsPerToken));
  units_ -= static_cast<std::int64_t>(std::min(n, max_n)) * kUnitsPerToken;
  return true;
}

Micros TokenBucket::next_available(Micros now) const noexcept {
  if (rate_ == 0) return now;
  // Tokens as of `now`, without mutating.
  TokenBucket copy = *this;
  copy.refill(now);
  if (copy.units_ >= kUnitsPerToken) return now;
  const std::int64_t missing = kUnitsPerToken - copy.units_;
  const auto rate = static_cast<std::int64_t>(rate_);
  return now + (missing + rate - 1) / rate;  // round up: never early
}

void TokenBucket::reconfigure(MilliRate rate, std::uint32_t burst, Micros now) noexcept {
  if (rate_ != 0) refill(now);
  const bool was_unlimited = rate_ == 0;
  rate_ = rate;
  burst_ = std::max<std::uint32_t>(burst, 1);
  last_ = now;
  const std::int64_t cap = static_cast<std::int64_t>(burst_) * kUnitsPerToken;
  if (was_unlimited || units_ > cap) units_ = cap;
}

Micros TokenBucket::full_at(Micros now) const noexcept {
  if (rate_ == 0) return now;
  TokenBucket copy = *this;
  copy.refill(now);
  const std::int64_t missing = static_cast<std::int64_t>(burst_) * kUnitsPerToken - copy.units_;
  if (missing <= 0) return now;
  const auto rate = static_cast<std::int64_t>(rate_);
  return now + (missing + rate - 1) / rate;
}

void TokenBucket::refund() noexcept {
  if (rate_ == 0) return;
  units_ = std::min(static_cast<std::int64_t>(burst_) * kUnitsPerToken, units_ + kUnitsPerToken);
}

bool TokenBucket::full(Micros now) const noexcept {
  if (rate_ == 0) return true;
  TokenBucket copy = *this;
  copy.refill(now);
  return copy.units_ >= static_cast<std::int64_t>(burst_) * kUnitsPerToken;
}

}  // namespace sluice::engine
