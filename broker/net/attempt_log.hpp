// Log lines about one message carry its correlation id (the
// sluice-correlation-id header) and, when it has a W3C traceparent header,
// its trace id, so an operator can follow a message from its producer through
// retries into the dead-letter queue by grepping one id.
#pragma once

#include <string_view>

#include "message_events.hpp"

namespace sluice::net {

/// The message's sluice-correlation-id ("" when it has none or is malformed).
std::string_view correlation_id_of(std::string_view raw_message) noexcept;
/// True for a W3C traceparent: "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"
/// (lower-case hex; ids not all zero; any version but ff).
bool valid_traceparent(std::string_view value) noexcept;
/// The trace id of the message's traceparent header ("" when it has none or a malformed one).
std::string_view trace_id_of(std::string_view raw_message) noexcept;

/// Logs each failed attempt ("attempt_failed", debug level: a flood of
/// failures must not flood the log unless asked) with queue, message id,
/// attempt, reason, retry delay and correlation id.
class AttemptLog final : public engine::MessageEvents {
 public:
  void attempt_failed(const engine::FailedAttempt& event) override;
};

}  // namespace sluice::net
