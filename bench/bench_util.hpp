// Small pieces sluice-bench and sluice-compare share: the clock both stamp
// payloads with, number parsing for their options, and percentiles.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace sluice::bench {

/// Steady-clock nanoseconds: publish and delivery are stamped in one process.
inline std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

/// A finite, non-negative number, the whole of `text`.
inline bool parse_number(std::string_view text, double& out) {
  std::string copy(text);
  char* end = nullptr;
  out = std::strtod(copy.c_str(), &end);
  return !copy.empty() && *end == '\0' && out >= 0 && std::isfinite(out);
}

/// The nearest-rank percentile `p` (0..1) of sorted values; 0 when empty.
inline std::uint32_t percentile(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

/// A `/proc/PID/status` field ("VmRSS": resident now, "VmHWM": its peak since
/// the process started) in KiB, or -1 when unknown.
inline long status_kib(long pid, const char* field) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  const std::string prefix = std::string(field) + ":";
  for (std::string line; std::getline(f, line);)
    if (line.rfind(prefix, 0) == 0) return std::stol(line.substr(prefix.size()));
  return -1;
}

/// Waits until `count` reaches `target`; false once 30 s pass without it moving.
inline bool wait_for_count(const std::atomic<std::uint64_t>& count, std::uint64_t target) {
  std::uint64_t last = count.load();
  auto progress = std::chrono::steady_clock::now();
  while (count.load() < target) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (const auto now = count.load(); now != last) {
      last = now;
      progress = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - progress > std::chrono::seconds(30)) {
      return false;
    }
  }
  return true;
}

}  // namespace sluice::bench
