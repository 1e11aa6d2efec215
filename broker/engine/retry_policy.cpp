#include "retry_policy.hpp"

#include <algorithm>

namespace sluice::engine {

Micros RetryPolicy::base(std::uint32_t failed) const noexcept {
  if (initial_backoff <= 0) return 0;
  // Grow step by step in integers and stop at the cap: no overflow, no pow().
  std::uint64_t delay = static_cast<std::uint64_t>(initial_backoff);
  const auto cap = static_cast<std::uint64_t>(std::max(max_backoff, initial_backoff));
  for (std::uint32_t i = 1; i < failed && delay < cap; ++i)
    delay = std::min<std::uint64_t>(cap, delay * multiplier_milli / 1000);
  return static_cast<Micros>(std::min(delay, cap));
}

Micros RetryPolicy::backoff(std::uint32_t failed, std::mt19937_64& rng) const noexcept {
  const Micros b = base(failed);
  if (b <= 0) return 0;
  switch (jitter) {
    case Jitter::none:
      return b;
    case Jitter::full:
      return std::uniform_int_distribution<Micros>(0, b)(rng);
    case Jitter::equal:
      return b / 2 + std::uniform_int_distribution<Micros>(0, b - b / 2)(rng);
  }
  return b;
}

}  // namespace sluice::engine
