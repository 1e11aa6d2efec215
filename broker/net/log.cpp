#include "log.hpp"

#include "utf8.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace sluice::log {

namespace {
std::atomic<int> g_level{static_cast<int>(Level::info)};

constexpr std::string_view kLevelNames[] = {"trace", "debug", "info", "warn", "error"};

}  // namespace

void set_level(Level level) noexcept {
  g_level.store(static_cast<int>(level));
}
bool enabled(Level level) noexcept {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

Line::Line(Level level, std::string_view event) : on_(enabled(level)) {
  if (!on_) return;
  const auto now = std::chrono::system_clock::now();
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[64];  // sized for any int values, so the compiler can prove no truncation
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  text_.reserve(160);
  text_ += "{\"ts\":\"";
  text_ += ts;
  text_ += "\",\"level\":\"";
  text_ += kLevelNames[static_cast<int>(level)];
  text_ += "\",\"event\":\"";
  net::append_json_escaped(text_, event);
  text_ += '"';
}

Line::~Line() {
  if (!on_) return;
  text_ += "}\n";
  // One write(2) per line keeps lines whole when several threads log.
  [[maybe_unused]] auto n = ::write(STDERR_FILENO, text_.data(), text_.size());
}

void Line::key(std::string_view k) {
  text_ += ",\"";
  net::append_json_escaped(text_, k);
  text_ += "\":";
}

Line& Line::str(std::string_view k, std::string_view value) {
  if (!on_) return *this;
  key(k);
  text_ += '"';
  net::append_json_escaped(text_, value);
  text_ += '"';
  return *this;
}

Line& Line::num(std::string_view k, std::int64_t value) {
  if (!on_) return *this;
  key(k);
  text_ += std::to_string(value);
  return *this;
}

Line& Line::unum(std::string_view k, std::uint64_t value) {
  if (!on_) return *this;
  key(k);
  text_ += std::to_string(value);
  return *this;
}

}  // namespace sluice::log

namespace sluice::net {

void append_json_escaped(std::string& out, std::string_view s) {
  std::size_t plain = 0;  // start of the run of bytes that go out as they are
  const auto flush = [&](std::size_t at) { out.append(s.data() + plain, at - plain); };
  for (std::size_t at = 0; at < s.size(); ++at) {
    const auto c = static_cast<unsigned char>(s[at]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') continue;
    if (c >= 0x80) {
      // Whatever a client sends, the text stays valid JSON: bytes that are not
      // UTF-8 become U+FFFD.
      const std::size_t n = utf8_sequence_length(s, at);
      if (n != 0) {
        at += n - 1;
        continue;
      }
      flush(at);
      out += "\\ufffd";
      plain = at + 1;
      continue;
    }
    flush(at);
    plain = at + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        static constexpr char kHex[] = "0123456789abcdef";
        const char escaped[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out.append(escaped, sizeof escaped);
      }
    }
  }
  flush(s.size());
}

}  // namespace sluice::net
