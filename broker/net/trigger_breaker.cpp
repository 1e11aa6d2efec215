// A trigger's circuit breaker: each invocation's outcome goes into a window of
// the last breaker_window; too many failures there, or breaker_consecutive
// unreachable calls in a row, open it (invocations stop and held messages go
// back); after open_for it lets breaker_probes probes through, which close it
// or open it again for twice as long (up to breaker_open_max).
#include "trigger.hpp"

#include <algorithm>

#include "log.hpp"

namespace sluice::net {

using Clock = std::chrono::steady_clock;

std::string_view to_string(BreakerState state) noexcept {
  static constexpr std::string_view kNames[kBreakerStates] = {"closed", "open", "half_open"};
  return kNames[static_cast<std::size_t>(state)];
}

void Trigger::record(InvocationOutcome outcome, bool probe) {
  // Throttling is the function asking for less, not failing; a poison
  // message is the message's fault. A throttled probe is sent again.
  if (outcome == InvocationOutcome::throttled) {
    if (probe && breaker_ == BreakerState::half_open && probes_sent_ > 0) --probes_sent_;
    return;
  }
  const bool failed = outcome == InvocationOutcome::failed ||
                      outcome == InvocationOutcome::timeout ||
                      outcome == InvocationOutcome::connect_error;
  const bool unreachable =
      outcome == InvocationOutcome::connect_error || outcome == InvocationOutcome::timeout;
  unreachable_in_a_row_ = unreachable ? unreachable_in_a_row_ + 1 : 0;
  if (breaker_ == BreakerState::half_open) {
    if (!probe) return;  // sent before it opened: no news of the function now
    if (failed) {
      open_for_ = std::min(open_for_ * 2, options_.settings.breaker_open_max);
      move_breaker(BreakerState::open, "a probe failed: " + std::string(to_string(outcome)));
    } else if (++probes_passed_ >= options_.settings.breaker_probes) {
      move_breaker(BreakerState::closed, "the probes succeeded");
    }
    return;
  }
  if (breaker_ != BreakerState::closed) return;
  // The last breaker_window outcomes, as a ring.
  if (window_calls_ == window_.size())
    window_failures_ -= window_[window_next_];
  else
    ++window_calls_;
  window_[window_next_] = failed;
  window_failures_ += failed;
  window_next_ = (window_next_ + 1) % window_.size();
  if (unreachable_in_a_row_ >= options_.settings.breaker_consecutive) {
    move_breaker(BreakerState::open, std::to_string(unreachable_in_a_row_) +
                                         " invocations in a row could not reach the function");
  } else if (window_calls_ >= options_.settings.breaker_min_calls &&
             // The ratio is in thousandths.
             window_failures_ * 1000ull >
                 std::uint64_t{options_.settings.breaker_failure_ratio} * window_calls_) {
    move_breaker(BreakerState::open, std::to_string(window_failures_) + " of the last " +
                                         std::to_string(window_calls_) + " invocations failed");
  }
}

void Trigger::move_breaker(BreakerState to, const std::string& why) {
  const auto now = Clock::now();
  if (breaker_ == BreakerState::open) open_total_ += now - opened_at_;
  breaker_ = to;
  ++transitions_[static_cast<std::size_t>(to)];
  probes_sent_ = probes_passed_ = 0;
  auto line =
      to == BreakerState::closed ? log::info("trigger_breaker") : log::warn("trigger_breaker");
  line.str("trigger", options_.settings.name).str("state", to_string(to)).str("reason", why);
  switch (to) {
    case BreakerState::open:
      opened_at_ = now;
      line.num("open_for_ms", static_cast<std::int64_t>(open_for_.count()));
      give_back_pending(0);
      breaker_timer_.expires_after(open_for_);
      breaker_timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
        if (Trigger* self = *alive;
            self != nullptr && !ec && self->breaker_ == BreakerState::open) {
          self->move_breaker(BreakerState::half_open, "open_for passed: probing");
          self->kick();
        }
      });
      break;
    case BreakerState::half_open:
      break;
    case BreakerState::closed:
      open_for_ = options_.settings.breaker_open_for;
      std::fill(window_.begin(), window_.end(), false);
      window_next_ = window_calls_ = window_failures_ = 0;
      unreachable_in_a_row_ = 0;
      break;
  }
}

double Trigger::open_seconds() const noexcept {
  auto total = open_total_;
  if (breaker_ == BreakerState::open) total += Clock::now() - opened_at_;
  return std::chrono::duration<double>(total).count();
}

}  // namespace sluice::net
