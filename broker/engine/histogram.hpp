// Histogram: fixed buckets counted on the engine's hot path (one short scan
// and two adds per observation, no allocation), read at scrape time by the
// metrics exposition. Bounds are in the unit of the observations (µs for the
// latency ones); the exposition converts. Not thread-safe: one owning thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace sluice::engine {

class Histogram {
 public:
  /// `bounds`: upper bounds, ascending, with static storage duration.
  explicit Histogram(std::span<const std::int64_t> bounds)
      : bounds_(bounds), counts_(bounds.size() + 1, 0) {}

  void observe(std::int64_t value) noexcept {
    if (value < 0) value = 0;  // a clock step must not count as a huge latency
    std::size_t i = 0;
    while (i < bounds_.size() && value > bounds_[i]) ++i;
    counts_[i]++;
    count_++;
    sum_ += value;
  }

  std::span<const std::int64_t> bounds() const noexcept { return bounds_; }
  /// Observations per bucket (not cumulative); the last is above every bound.
  const std::vector<std::uint64_t>& counts() const noexcept { return counts_; }
  std::uint64_t count() const noexcept { return count_; }
  std::int64_t sum() const noexcept { return sum_; }

 private:
  std::span<const std::int64_t> bounds_;
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  std::int64_t sum_ = 0;
};

/// Bounds for latencies in µs: 100 µs to 60 s.
inline constexpr std::int64_t kLatencyBoundsUs[] = {
    100,     250,     500,     1'000,     2'500,     5'000,     10'000,     25'000,     50'000,
    100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000, 30'000'000, 60'000'000};

}  // namespace sluice::engine
