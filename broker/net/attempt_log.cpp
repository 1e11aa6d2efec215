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

void AttemptLog::attempt_failed(const engine::FailedAttempt& e) {
  if (!log::enabled(log::Level::debug)) return;
  auto line = log::debug("attempt_failed");
  line.str("queue", e.queue.name())
      .unum("message_id", e.message_id)
      .unum("attempt", e.attempt)
      .str("reason", e.reason)
      .str("correlation_id", correlation_id_of(e.message));
  if (e.retry_in >= 0)
    line.num("retry_in_ms", e.retry_in / 1000);
  else
    line.str("next", "dead_letter");
}

}  // namespace sluice::net
