// Things waiting for a storage write sequence number, kept in sequence order.
#pragma once

#include <cstdint>
#include <deque>
#include <utility>

namespace sluice::net {

/// Pops the entries of `queue` (in sequence order) up to write `seq`, handing
/// each one's value to `f`.
template <typename T, typename F>
void take_through(std::deque<std::pair<std::uint64_t, T>>& queue, std::uint64_t seq, F&& f) {
  while (!queue.empty() && queue.front().first <= seq) {
    auto value = std::move(queue.front().second);
    queue.pop_front();
    f(value);
  }
}

}  // namespace sluice::net
