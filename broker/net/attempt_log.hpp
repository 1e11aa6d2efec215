// Log lines about one message carry its correlation id (the
// sluice-correlation-id header), so an operator can follow a message from
// its producer through retries into the dead-letter queue by grepping one id.
#pragma once

#include <string_view>

#include "message_events.hpp"

namespace sluice::net {

/// The message's sluice-correlation-id ("" when it has none or is malformed).
std::string_view correlation_id_of(std::string_view raw_message) noexcept;

/// Logs each failed attempt ("attempt_failed", debug level: a flood of
/// failures must not flood the log unless asked) with queue, message id,
/// attempt, reason, retry delay and correlation id.
class AttemptLog final : public engine::MessageEvents {
 public:
  void attempt_failed(const engine::FailedAttempt& event) override;
};

}  // namespace sluice::net
