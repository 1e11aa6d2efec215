// The broker's two clocks, read on the engine thread. The engine itself has
// no clock: every engine call is given `now` from here.
#pragma once

#include <chrono>
#include <cstdint>

#include "engine.hpp"

namespace sluice::net {

/// Monotonic now in µs (steady_clock's epoch): the engine's time.
inline engine::Micros mono_us() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Wall clock in µs since the Unix epoch (publish time, what storage keeps).
inline std::int64_t wall_us() noexcept {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Engine time as wall time: what storage keeps, since the monotonic clock
/// restarts with the machine.
inline std::int64_t wall_of(engine::Micros t) noexcept {
  return wall_us() + (t - mono_us());
}

}  // namespace sluice::net
