// TokenBucket on a manual clock: long-run rate, the rate·t + burst bound over
// every window, even spacing, batches in debt, reconfiguration.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "token_bucket.hpp"

using sluice::engine::Micros;
using sluice::engine::MilliRate;
using sluice::engine::TokenBucket;

namespace {

constexpr Micros kSecond = 1'000'000;

/// Grant times of a greedy taker that polls at random moments (plus at every
/// next_available) for `duration`.
std::vector<Micros> greedy_grants(MilliRate rate, std::uint32_t burst, Micros duration,
                                  std::uint32_t seed) {
  std::mt19937 rng(seed);
  TokenBucket bucket(rate, burst, 0);
  std::vector<Micros> grants;
  Micros now = 0;
  while (now <= duration) {
    while (bucket.try_take(now)) grants.push_back(now);
    const Micros next = bucket.next_available(now);
    REQUIRE(next > now);
    // Sometimes late (a busy dispatcher), never early.
    now = (rng() % 4 == 0) ? next + static_cast<Micros>(rng() % 1000) : next;
  }
  return grants;
}

}  // namespace

TEST_CASE("token bucket: the long-run rate is within 1% of the setting, 0.1/s to 1,000,000/s") {
  struct Case {
    MilliRate rate;
    std::uint32_t burst;
    Micros duration;
  };
  for (const Case c : {Case{100, 1, 20'000 * kSecond}, Case{1'000, 5, 2'000 * kSecond},
                       Case{50'000, 10, 200 * kSecond}, Case{1'000'000, 100, 20 * kSecond},
                       Case{1'000'000'000, 1000, kSecond / 2}}) {
    CAPTURE(c.rate);
    const auto grants = greedy_grants(c.rate, c.burst, c.duration, 7);
    const double expected = static_cast<double>(c.rate) / 1000.0 * static_cast<double>(c.duration) /
                            static_cast<double>(kSecond);
    const double achieved = static_cast<double>(grants.size()) - c.burst;
    CAPTURE(expected);
    CAPTURE(achieved);
    CHECK(std::abs(achieved - expected) <= 0.01 * expected + 1);
  }
}

TEST_CASE("token bucket: no window of length t ever gets more than rate*t + burst") {
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    const MilliRate rate = 200'000;  // 200/s
    const std::uint32_t burst = 7;
    const auto grants = greedy_grants(rate, burst, 60 * kSecond, seed);
    for (Micros window : {Micros{1}, Micros{1000}, kSecond / 10, kSecond, 10 * kSecond}) {
      CAPTURE(window);
      const double bound = static_cast<double>(rate) / 1000.0 * static_cast<double>(window) /
                               static_cast<double>(kSecond) +
                           burst;
      std::size_t first = 0;
      std::size_t worst = 0;
      for (std::size_t last = 0; last < grants.size(); ++last) {
        while (grants[last] - grants[first] > window) ++first;
        worst = std::max(worst, last - first + 1);
      }
      CAPTURE(worst);
      CHECK(static_cast<double>(worst) <= bound);
    }
  }
}

TEST_CASE("token bucket: once the burst is spent, grants are evenly spaced") {
  TokenBucket bucket(10'000, 3, 0);  // 10/s
  Micros now = 0;
  int burst = 0;
  while (bucket.try_take(now)) ++burst;
  CHECK(burst == 3);
  Micros previous = 0;
  for (int i = 0; i < 50; ++i) {
    now = bucket.next_available(now);
    REQUIRE(bucket.try_take(now));
    CHECK_FALSE(bucket.try_take(now));  // one at a time, never a second's worth
    if (i > 0) CHECK(now - previous == kSecond / 10);
    previous = now;
  }
}

TEST_CASE("token bucket: a batch is admitted whole and its debt delays what follows") {
  TokenBucket bucket(100'000, 10, 0);   // 100/s
  CHECK(bucket.try_take_batch(50, 0));  // 10 in the bucket: 40 in debt
  CHECK_FALSE(bucket.try_take(0));
  // 40 owed + 1 to take = 41 tokens at 100/s: 410 ms.
  CHECK(bucket.next_available(0) == 410'000);
  CHECK_FALSE(bucket.try_take(409'999));
  CHECK(bucket.try_take(410'000));
}

TEST_CASE("token bucket: unlimited, reconfigured, idle and full") {
  TokenBucket unlimited;
  for (int i = 0; i < 1000; ++i) CHECK(unlimited.try_take(0));
  CHECK(unlimited.next_available(5) == 5);

  TokenBucket bucket(1'000, 2, 0);  // 1/s
  CHECK(bucket.full(0));
  CHECK(bucket.try_take(0));
  CHECK(bucket.try_take(0));
  CHECK_FALSE(bucket.full(kSecond));
  CHECK(bucket.full(2 * kSecond));                // an idle bucket refills to its burst and stops
  bucket.reconfigure(1'000'000, 1, 2 * kSecond);  // 1000/s, burst 1: capped to 1
  CHECK(bucket.try_take(2 * kSecond));
  CHECK_FALSE(bucket.try_take(2 * kSecond));
  CHECK(bucket.next_available(2 * kSecond) == 2 * kSecond + 1000);
  // A year of idling does not overflow.
  CHECK(bucket.full(2 * kSecond + 365LL * 24 * 3600 * kSecond));
}
