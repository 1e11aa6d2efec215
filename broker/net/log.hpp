// Structured logs: one JSON object per line on stderr, e.g.
//   {"ts":"2026-11-23T12:00:00.123Z","level":"info","event":"listening","port":7450}
// Cheap when a level is off (one comparison). Thread-safe: each line is
// built privately and written with a single write(2).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::log {

enum class Level : int { trace = 0, debug = 1, info = 2, warn = 3, error = 4 };

void set_level(Level level) noexcept;
bool enabled(Level level) noexcept;

/// Builds one log line; written when it goes out of scope (if its level is on).
class Line {
 public:
  Line(Level level, std::string_view event);
  ~Line();
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;

  Line& str(std::string_view key, std::string_view value);
  Line& num(std::string_view key, std::int64_t value);
  Line& unum(std::string_view key, std::uint64_t value);

 private:
  void key(std::string_view k);
  bool on_;
  std::string text_;
};

inline Line trace(std::string_view event) {
  return Line(Level::trace, event);
}
inline Line debug(std::string_view event) {
  return Line(Level::debug, event);
}
inline Line info(std::string_view event) {
  return Line(Level::info, event);
}
inline Line warn(std::string_view event) {
  return Line(Level::warn, event);
}
inline Line error(std::string_view event) {
  return Line(Level::error, event);
}

}  // namespace sluice::log
