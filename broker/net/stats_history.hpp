// StatsHistory: the last 15 minutes of each queue, one sample a second (depth,
// and what was published, delivered and acked in that second), for the
// console's sparklines and rates (GET /v1/stats/history). Bounded: at most
// `max_queues` queues have a history (16 bytes × 900 samples each, about
// 14 KiB; 1,000 queues: 14 MiB); a queue past the bound gets one when a
// deleted queue frees a place. Engine thread only.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine.hpp"

namespace sluice::net {

class StatsHistory {
 public:
  static constexpr std::size_t kSamples = 900;  // one a second: 15 minutes

  explicit StatsHistory(std::size_t max_queues = 1000) : max_queues_(max_queues) {}

  /// Takes one sample of every queue (called once a second).
  void sample(const engine::Engine& engine);

  struct Series {
    std::vector<std::uint32_t> depth;      // messages held at each sample
    std::vector<std::uint32_t> published;  // in the second before it
    std::vector<std::uint32_t> delivered;
    std::vector<std::uint32_t> acked;
  };
  /// The last `seconds` samples of `queue`, oldest first; false when it has none.
  bool series(std::string_view queue, std::size_t seconds, Series& out) const;

  std::size_t queues() const noexcept { return rings_.size(); }

 private:
  struct Sample {
    std::uint32_t depth = 0, published = 0, delivered = 0;
    std::uint32_t acked = 0;
  };
  struct Ring {
    const engine::Queue* queue = nullptr;  // whose history: a queue made again starts afresh
    std::uint64_t published = 0, delivered = 0, acked = 0;  // totals at the last sample
    std::array<Sample, kSamples> samples{};
    std::size_t next = 0;   // where the next sample goes
    std::size_t count = 0;  // samples held
  };
  std::size_t max_queues_;
  std::unordered_map<std::string, std::unique_ptr<Ring>> rings_;
};

}  // namespace sluice::net
