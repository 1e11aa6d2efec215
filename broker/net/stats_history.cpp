#include "stats_history.hpp"

#include <algorithm>
#include <limits>

namespace sluice::net {

namespace {

std::uint32_t clamp32(std::uint64_t v) {
  return static_cast<std::uint32_t>(
      std::min<std::uint64_t>(v, std::numeric_limits<std::uint32_t>::max()));
}

}  // namespace

void StatsHistory::sample(const engine::Engine& engine) {
  // Queues deleted since the last sample give their place back.
  std::erase_if(rings_, [&](const auto& entry) { return engine.find(entry.first) == nullptr; });
  for (const engine::Queue* q : engine.queues()) {
    const auto& c = q->counters();
    auto it = rings_.find(std::string(q->name()));
    if (it == rings_.end()) {
      if (rings_.size() >= max_queues_) continue;
      it = rings_.emplace(std::string(q->name()), std::make_unique<Ring>()).first;
    }
    Ring& r = *it->second;
    // A new ring, or the queue was deleted and made again between two samples
    // (its totals start over): the history starts now.
    if (r.queue != q || c.published_total < r.published || c.delivered_total < r.delivered ||
        c.acked_total < r.acked) {
      r = Ring{};
      r.queue = q;
      r.published = c.published_total;
      r.delivered = c.delivered_total;
      r.acked = c.acked_total;
    }
    Sample& s = r.samples[r.next];
    s.depth = clamp32(c.messages());
    s.published = clamp32(c.published_total - r.published);
    s.delivered = clamp32(c.delivered_total - r.delivered);
    s.acked = clamp32(c.acked_total - r.acked);
    r.published = c.published_total;
    r.delivered = c.delivered_total;
    r.acked = c.acked_total;
    r.next = (r.next + 1) % kSamples;
    r.count = std::min(r.count + 1, kSamples);
  }
}

bool StatsHistory::series(std::string_view queue, std::size_t seconds, Series& out) const {
  const auto it = rings_.find(std::string(queue));
  if (it == rings_.end()) return false;
  const Ring& r = *it->second;
  const std::size_t n = std::min(seconds, r.count);
  out = {};
  for (auto* v : {&out.depth, &out.published, &out.delivered, &out.acked}) v->reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const Sample& s = r.samples[(r.next + kSamples - n + i) % kSamples];
    out.depth.push_back(s.depth);
    out.published.push_back(s.published);
    out.delivered.push_back(s.delivered);
    out.acked.push_back(s.acked);
  }
  return true;
}

}  // namespace sluice::net
