// A trigger: sluiced invokes an HTTP function with a queue's messages, as
// Lambda's SQS event-source mapping or a Pub/Sub push subscription does. To
// the engine it is one consumer: its credit is max_concurrency x batch_size,
// so leases, key order, the retry policy, the dead-letter queue, the queue's
// caps and rates all apply as to any consumer. It gathers deliveries into
// batches (batch_size, batch_window, batch_max_bytes), sends each as one
// signed request (Standard Webhooks), at most max_concurrency at once, and
// settles the messages by the response (docs/triggers.md). Engine thread only.
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/steady_timer.hpp>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine.hpp"
#include "histogram.hpp"
#include "http_outbound.hpp"
#include "sluice/config/settings.hpp"
#include "sluice/protocol/error.hpp"

namespace sluice::net {

class Broker;

/// A trigger's settings as configured, and what is derived from them once.
struct TriggerOptions {
  config::TriggerSettings settings;
  Url url;                                                   // settings.url, parsed
  std::vector<std::pair<std::string, std::string>> headers;  // settings.headers, split
  std::string signing_secret;  // the key in settings.signing_secret_file; "" = unsigned
  std::size_t max_response_bytes = 1u << 20;
};

enum class BreakerState : std::uint8_t { closed, open, half_open };
inline constexpr std::size_t kBreakerStates = 3;
std::string_view to_string(BreakerState state) noexcept;

/// How one invocation ended, as sluice_trigger_invocations_total counts it.
enum class InvocationOutcome : std::uint8_t {
  ok,             // 2xx (some messages may have been listed as failed)
  failed,         // another status: a failed attempt
  throttled,      // 429 or 503: released without using an attempt
  timeout,        // no whole answer within the timeout
  connect_error,  // the function could not be reached, or the connection broke
  dead_lettered,  // sluice-dead-letter, or a status in dead_letter_on
};
inline constexpr std::size_t kInvocationOutcomes = 6;
std::string_view to_string(InvocationOutcome outcome) noexcept;

class Trigger final : public engine::DeliverySink {
 public:
  Trigger(Broker& broker, TriggerOptions options, std::uint32_t subscription_id);
  ~Trigger();
  Trigger(const Trigger&) = delete;
  Trigger& operator=(const Trigger&) = delete;

  /// Subscribes to the queue (opened if new). The problem when it cannot.
  Error start();
  /// Stops for good: held messages not yet sent go back to the queue at once,
  /// as do those of invocations in flight (their answers are ignored).
  void stop();

  /// Paused, nothing is sent and what it held goes back to the queue unused;
  /// resumed, it goes on. (Until a restart or a reload that changes it.)
  void set_paused(bool paused);
  bool paused() const noexcept { return paused_; }
  /// Sends one request with `payload` as a message (raw: its body; json: a
  /// batch of one), signed as usual, outside the queue: nothing is settled.
  /// For trying a trigger out (sluicectl and HTTP "invoke").
  void test_invoke(std::string payload, HttpClient::Callback done);

  // engine::DeliverySink
  bool deliver(engine::Consumer& consumer, const protocol::Delivery& delivery) override;
  void released(engine::Consumer& consumer) override;
  /// Never in practice: a queue a trigger consumes cannot be deleted.
  void ended(engine::Consumer& consumer) override;

  const TriggerOptions& options() const noexcept { return options_; }
  /// The function's URL as shown to operators ("https://host:port/path").
  const std::string& display_url() const noexcept { return display_url_; }
  /// Its state as TRIGGERS_RESULT carries it (views into this trigger).
  protocol::TriggerEntry entry() const;
  /// The function's latency, averaged over about a round of invocations (µs; 0: none yet).
  double average_latency_us() const noexcept { return rtt_average_us_; }
  std::uint32_t in_flight() const noexcept { return in_flight_; }
  std::uint32_t limit() const noexcept { return limit_; }
  std::uint64_t invocations(InvocationOutcome outcome) const noexcept {
    return outcomes_[static_cast<std::size_t>(outcome)];
  }
  std::uint64_t messages_sent() const noexcept { return messages_sent_; }
  BreakerState breaker() const noexcept { return breaker_; }
  /// Invocation durations (µs), answered or not.
  const engine::Histogram& durations() const noexcept { return durations_; }
  /// Messages per invocation.
  const engine::Histogram& batch_sizes() const noexcept { return batch_sizes_; }
  /// Times the breaker went to `state`.
  std::uint64_t transitions(BreakerState state) const noexcept {
    return transitions_[static_cast<std::size_t>(state)];
  }
  /// Seconds spent open, the current stretch included.
  double open_seconds() const noexcept;

 private:
  /// A delivery waiting for, or riding in, an invocation.
  struct Held {
    std::uint64_t id;
    std::uint64_t token;
    std::uint32_t attempt;
    std::int64_t publish_us;
    std::string message;  // the encoding (the delivery's view dies with the call)
    std::chrono::steady_clock::time_point arrived{};  // a partial batch waits from the oldest's
  };
  struct Invocation;

  /// Starts invocations while there is room and something to send.
  void kick();
  void post_kick();
  void invoke(std::vector<Held> batch);
  void settle(Invocation& call, OutboundResponse&& response);
  OutboundRequest request_for(const std::vector<Held>& batch) const;
  /// Invocations that may be in flight now: the limit, or the probes when half-open.
  std::uint32_t room() const noexcept;
  /// The adaptive limit's view of one finished invocation (Vegas; docs/triggers.md).
  void adapt(InvocationOutcome outcome, std::chrono::microseconds took, std::uint32_t in_flight);
  /// The breaker's view of one finished invocation.
  void record(InvocationOutcome outcome, bool probe);
  void move_breaker(BreakerState to, const std::string& why);
  /// Pauses deliveries and gives what waits here back to the queue unused,
  /// ready again after `delay`.
  void give_back_pending(engine::Micros delay);

  Broker& broker_;
  TriggerOptions options_;
  std::string display_url_;
  std::uint32_t subscription_id_;
  std::unique_ptr<HttpClient> client_;
  engine::Consumer* consumer_ = nullptr;
  std::vector<Held> pending_;  // at most the credit: max_concurrency x batch_size
  boost::asio::steady_timer batch_timer_;
  boost::asio::steady_timer throttle_timer_;
  std::chrono::steady_clock::time_point throttled_until_{};
  std::uint32_t in_flight_ = 0;
  std::uint32_t limit_;
  double adaptive_limit_ = 0;  // the adaptive limit unrounded (limit_ is it rounded)
  double rtt_noload_us_ = 0;   // the lowest latency seen lately
  double rtt_average_us_ = 0;  // the latency, averaged over about a round of invocations
  std::uint64_t samples_ = 0;
  bool kick_posted_ = false;
  bool paused_ = false;
  bool stopped_ = false;
  std::array<std::uint64_t, kInvocationOutcomes> outcomes_{};
  std::uint64_t messages_sent_ = 0;
  engine::Histogram durations_{engine::kLatencyBoundsUs};
  engine::Histogram batch_sizes_{kBatchBounds};
  static constexpr std::int64_t kBatchBounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};

  BreakerState breaker_ = BreakerState::closed;
  std::vector<bool> window_;  // the last breaker_window outcomes (true: failed), a ring
  std::size_t window_next_ = 0;
  std::uint32_t window_calls_ = 0;
  std::uint32_t window_failures_ = 0;
  std::uint32_t unreachable_in_a_row_ = 0;
  std::chrono::milliseconds open_for_{0};  // this time round (doubles while probes fail)
  std::uint32_t probes_sent_ = 0;
  std::uint32_t probes_passed_ = 0;
  boost::asio::steady_timer breaker_timer_;
  std::array<std::uint64_t, kBreakerStates> transitions_{};
  std::chrono::steady_clock::time_point opened_at_{};
  std::chrono::steady_clock::duration open_total_{};
  std::shared_ptr<Trigger*> alive_;  // posted handlers and responses check it
  // Test invocations waiting for the function: answered ("broken") by stop() if the
  // trigger goes first, since the HTTP client drops its callbacks then.
  struct TestCall {
    HttpClient::Callback done;
    bool answered = false;
  };
  std::vector<std::shared_ptr<TestCall>> test_calls_;
};

}  // namespace sluice::net
