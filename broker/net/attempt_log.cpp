#include "attempt_log.hpp"

#include "log.hpp"
#include "queue.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::net {

std::string_view correlation_id_of(std::string_view raw_message) noexcept {
  protocol::MessageParts parts;
  protocol::SystemHeaders sys;
  if (!protocol::parse_message(raw_message, parts) || !protocol::read_system_headers(parts, sys))
    return {};
  return sys.correlation_id;
}

bool valid_traceparent(std::string_view v) noexcept {
  const auto hex = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  };
  const auto zeros = [](std::string_view s) {
    return s.find_first_not_of('0') == std::string_view::npos;
  };
  // A later version may append fields after the four: "00" must be exactly 55 bytes.
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  if (v.size() > 55 && (v.substr(0, 2) == "00" || v[55] != '-')) return false;
  const auto version = v.substr(0, 2), trace = v.substr(3, 32), parent = v.substr(36, 16),
             flags = v.substr(53, 2);
  return hex(version) && version != "ff" && hex(trace) && !zeros(trace) && hex(parent) &&
         !zeros(parent) && hex(flags);
}

std::string_view trace_id_of(std::string_view raw_message) noexcept {
  protocol::MessageParts parts;
  if (!protocol::parse_message(raw_message, parts)) return {};
  std::string_view found;
  protocol::for_each_header(parts, [&](const protocol::Header& h) {
    if (found.empty() && h.key == "traceparent" && valid_traceparent(h.value))
      found = h.value.substr(3, 32);
  });
  return found;
}

void AttemptLog::attempt_failed(const engine::FailedAttempt& e) {
  if (!log::enabled(log::Level::debug)) return;
  auto line = log::debug("attempt_failed");
  line.str("queue", e.queue.name())
      .unum("message_id", e.message_id)
      .unum("attempt", e.attempt)
      .str("reason", e.reason)
      .str("correlation_id", correlation_id_of(e.message));
  if (const auto trace = trace_id_of(e.message); !trace.empty()) line.str("trace_id", trace);
  if (e.retry_in >= 0)
    line.num("retry_in_ms", e.retry_in / 1000);
  else
    line.str("next", "dead_letter");
}

}  // namespace sluice::net
