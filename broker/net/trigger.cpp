#include "trigger.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>
#include <cmath>
#include <cctype>
#include <charconv>

#include "broker.hpp"
#include "clock.hpp"
#include "intake.hpp"
#include "http_json.hpp"
#include "http_util.hpp"
#include "log.hpp"
#include "sluice/protocol/codec.hpp"
#include "sluice/security/hmac.hpp"

namespace sluice::net {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

std::string_view to_string(InvocationOutcome outcome) noexcept {
  static constexpr std::string_view kNames[kInvocationOutcomes] = {
      "ok", "failed", "throttled", "timeout", "connect_error", "dead_lettered"};
  return kNames[static_cast<std::size_t>(outcome)];
}

namespace {

/// A message header a function may see as an HTTP header in raw mode: an HTTP
/// token name that neither HTTP nor the trigger owns, with a value free of
/// control characters (a CR or LF would let a producer forge headers, or a
/// second request on the kept-alive connection).
bool passes_as_http_header(std::string_view name, std::string_view value,
                           const std::vector<std::pair<std::string, std::string>>& configured) {
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos))
      return false;
  }
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static constexpr std::string_view kOwned[] = {"host",
                                                "content-length",
                                                "connection",
                                                "transfer-encoding",
                                                "keep-alive",
                                                "upgrade",
                                                "te",
                                                "trailer",
                                                "webhook-id",
                                                "webhook-timestamp",
                                                "webhook-signature",
                                                "sluice-message-id",
                                                "sluice-attempt"};
  if (std::find(std::begin(kOwned), std::end(kOwned), lower) != std::end(kOwned)) return false;
  for (const auto& [configured_name, v] : configured) {
    if (configured_name.size() == lower.size() &&
        std::equal(lower.begin(), lower.end(), configured_name.begin(),
                   [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); }))
      return false;  // the trigger's own headers win
  }
  return true;
}

/// "v1,<base64 HMAC-SHA256 of id.timestamp.body>" (Standard Webhooks).
std::string sign(const std::string& secret, std::string_view id, std::string_view timestamp,
                 std::string_view body) {
  std::string signed_text;
  signed_text.reserve(id.size() + timestamp.size() + body.size() + 2);
  signed_text.append(id).append(".").append(timestamp).append(".").append(body);
  return "v1," + base64_encode(security::hmac_sha256(secret, signed_text));
}

/// The seconds of a Retry-After header: delta-seconds, at least 1 and at most an hour
/// (none, or a date, counts as 1 s: a function that throttles is not asked again at once).
std::chrono::seconds retry_after_of(const OutboundResponse& r) {
  const std::string* value = r.header("retry-after");
  if (value == nullptr) return std::chrono::seconds(1);
  unsigned seconds = 0;
  const auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), seconds);
  if (ec != std::errc() || end != value->data() + value->size()) return std::chrono::seconds(1);
  return std::chrono::seconds(std::clamp(seconds, 1u, 3600u));
}

}  // namespace

/// One request in flight and the messages it carries.
struct Trigger::Invocation {
  std::vector<Held> messages;
  bool probe = false;  // sent while the breaker was half-open
};

Trigger::Trigger(Broker& broker, TriggerOptions options, std::uint32_t subscription_id)
    : broker_(broker),
      options_(std::move(options)),
      display_url_((options_.url.tls ? "https://" : "http://") + options_.url.origin() +
                   options_.url.target),
      subscription_id_(subscription_id),
      batch_timer_(broker.io()),
      throttle_timer_(broker.io()),
      limit_(options_.settings.adaptive ? options_.settings.min_concurrency
                                        : options_.settings.max_concurrency),
      adaptive_limit_(limit_),
      window_(options_.settings.breaker_window, false),
      open_for_(options_.settings.breaker_open_for),
      breaker_timer_(broker.io()),
      alive_(std::make_shared<Trigger*>(this)) {}

static_assert(kInvocationOutcomes == protocol::kTriggerOutcomes &&
              static_cast<int>(BreakerState::half_open) == 2);

protocol::TriggerEntry Trigger::entry() const {
  protocol::TriggerEntry e;
  e.name = options_.settings.name;
  e.queue = options_.settings.queue;
  e.url = display_url_;
  e.paused = paused_;
  e.breaker = static_cast<std::uint8_t>(breaker_);
  e.adaptive = options_.settings.adaptive;
  e.limit = limit_;
  e.in_flight = in_flight_;
  e.messages_sent = messages_sent_;
  e.invocations.assign(outcomes_.begin(), outcomes_.end());
  return e;
}

Trigger::~Trigger() {
  stop();
  *alive_ = nullptr;
}

Error Trigger::start() {
  std::string error;
  HttpClientOptions client;
  client.max_idle = options_.settings.max_concurrency;
  client.max_response_bytes = options_.max_response_bytes;
  client.ca_file = options_.settings.ca_file;
  client.verify = options_.settings.verify;
  client_ = std::make_unique<HttpClient>(broker_.io(), options_.url, client, error);
  if (!error.empty())
    return {errc::invalid_argument, "triggers." + options_.settings.name + ": " + error};
  engine::Engine& engine = broker_.engine();
  errc why = errc::ok;
  engine::Queue* queue = engine.open(options_.settings.queue, &why);
  if (queue == nullptr)
    return {why, "triggers." + options_.settings.name + ": " +
                     open_refused(why, options_.settings.queue)};
  // Held messages wait for a free invocation at most one timeout, then ride
  // one for at most another: the lease covers both, and the window.
  const auto lease =
      2 * options_.settings.timeout + options_.settings.batch_window + std::chrono::seconds(1);
  const auto result = engine.subscribe(
      *queue, *this, subscription_id_,
      options_.settings.max_concurrency * options_.settings.batch_size,
      std::chrono::duration_cast<std::chrono::microseconds>(lease).count(), mono_us(),
      engine::RateLimit{.rate = options_.settings.rate, .burst = options_.settings.burst});
  if (result.code != errc::ok)
    return {result.code, "triggers." + options_.settings.name + ": " + std::string(result.detail)};
  consumer_ = result.consumer;
  log::info("trigger_started")
      .str("trigger", options_.settings.name)
      .str("queue", options_.settings.queue)
      .str("url", display_url_);
  return {};
}

void Trigger::stop() {
  if (stopped_) return;
  stopped_ = true;
  batch_timer_.cancel();
  throttle_timer_.cancel();
  breaker_timer_.cancel();
  client_.reset();  // in-flight requests end; their answers are not waited for
  // A test invocation still waiting is answered now: its caller must not wait forever.
  for (auto& call : std::exchange(test_calls_, {})) {
    if (call->answered) continue;
    call->answered = true;
    OutboundResponse r;
    r.outcome = TransportOutcome::broken;
    r.error = "the trigger stopped before the function answered";
    call->done(std::move(r));
  }
  if (consumer_ != nullptr) {
    // What was never sent goes back unused; what was sent is a failed
    // attempt (the function may have seen it), ready again at once.
    give_back_pending(0);
    broker_.engine().disconnect(*consumer_, mono_us());
    consumer_ = nullptr;
  }
  pending_.clear();
  in_flight_ = 0;
}

bool Trigger::deliver(engine::Consumer&, const protocol::Delivery& d) {
  pending_.push_back({d.message_id, d.lease_token, d.attempt,
                      static_cast<std::int64_t>(d.publish_time_us), std::string(d.message),
                      Clock::now()});
  post_kick();  // not from inside the engine's call
  // Enough waiting for every free invocation: no more until one finishes.
  const std::uint32_t free = room() > in_flight_ ? room() - in_flight_ : 0;
  return pending_.size() < std::max<std::size_t>(free, 1) * options_.settings.batch_size;
}

void Trigger::released(engine::Consumer&) {
  consumer_ = nullptr;
}

void Trigger::ended(engine::Consumer&) {
  consumer_ = nullptr;
  log::warn("trigger_queue_deleted")
      .str("trigger", options_.settings.name)
      .str("queue", options_.settings.queue);
}

void Trigger::post_kick() {
  if (kick_posted_) return;
  kick_posted_ = true;
  asio::post(broker_.io(), [alive = alive_] {
    if (Trigger* self = *alive) {
      self->kick_posted_ = false;
      self->kick();
    }
  });
}

void Trigger::kick() {
  if (stopped_ || consumer_ == nullptr) return;
  const auto now = Clock::now();
  if (now < throttled_until_) return;  // the throttle timer kicks again
  if (breaker_ == BreakerState::open || paused_) {
    give_back_pending(0);  // the breaker timer, or a resume, kicks again
    return;
  }
  while (!pending_.empty() && in_flight_ < room()) {
    const bool full = pending_.size() >= options_.settings.batch_size;
    const auto due = pending_.front().arrived + options_.settings.batch_window;
    if (!full && now < due) {
      batch_timer_.expires_at(due);
      batch_timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
        if (Trigger* self = *alive; self != nullptr && !ec) self->kick();
      });
      break;
    }
    // The oldest first, up to the batch size and byte bound (always at least one).
    std::size_t take = 0, bytes = 0;
    while (take < pending_.size() && take < options_.settings.batch_size) {
      bytes += pending_[take].message.size();
      if (take > 0 && bytes > options_.settings.batch_max_bytes) break;
      ++take;
    }
    std::vector<Held> batch(std::make_move_iterator(pending_.begin()),
                            std::make_move_iterator(pending_.begin() + static_cast<long>(take)));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(take));
    invoke(std::move(batch));
  }
  if (consumer_ != nullptr) broker_.engine().resume(*consumer_, mono_us());
}

OutboundRequest Trigger::request_for(const std::vector<Held>& batch) const {
  OutboundRequest r;
  r.method = options_.settings.method;
  r.timeout = options_.settings.timeout;
  for (const auto& h : options_.headers) r.headers.push_back(h);
  const Held& first = batch.front();
  std::string webhook_id = std::to_string(first.id);
  if (options_.settings.body_json) {
    std::size_t bytes = 2;
    for (const Held& m : batch) bytes += m.message.size() + 96;
    r.body.reserve(bytes);
    r.body += '[';
    for (const Held& m : batch) {
      if (r.body.size() > 1) r.body += ',';
      append_message_json(r.body, m.message, m.id, m.attempt, m.publish_us);
    }
    r.body += "]\n";
    r.headers.emplace_back("Content-Type", "application/json");
    if (batch.size() > 1) webhook_id += "-" + std::to_string(batch.size());
  } else {
    protocol::MessageParts parts;
    if (protocol::parse_message(first.message, parts)) {
      r.body = std::string(parts.payload);
      protocol::for_each_header(parts, [&](const protocol::Header& h) {
        if (passes_as_http_header(h.key, h.value, options_.headers))
          r.headers.emplace_back(std::string(h.key), h.value);
      });
    }
    r.headers.emplace_back("sluice-message-id", std::to_string(first.id));
    r.headers.emplace_back("sluice-attempt", std::to_string(first.attempt));
  }
  if (!options_.signing_secret.empty()) {
    const std::string timestamp = std::to_string(wall_us() / 1'000'000);
    r.headers.emplace_back("webhook-signature",
                           sign(options_.signing_secret, webhook_id, timestamp, r.body));
    r.headers.emplace_back("webhook-id", webhook_id);
    r.headers.emplace_back("webhook-timestamp", timestamp);
  }
  return r;
}

void Trigger::invoke(std::vector<Held> batch) {
  engine::Engine& engine = broker_.engine();
  // The lease runs from now: the invocation's timeout, and a second for the answer to settle.
  const auto lease = std::chrono::duration_cast<std::chrono::microseconds>(
                         options_.settings.timeout + std::chrono::seconds(1))
                         .count();
  const auto now = mono_us();
  for (const Held& m : batch) (void)engine.extend(*this, m.id, m.token, lease, now);
  ++in_flight_;
  messages_sent_ += batch.size();
  auto call = std::make_shared<Invocation>();
  call->messages = std::move(batch);
  if (breaker_ == BreakerState::half_open) {
    call->probe = true;
    ++probes_sent_;
  }
  OutboundRequest request = request_for(call->messages);
  client_->send(std::move(request), [alive = alive_, call](OutboundResponse&& response) {
    if (Trigger* self = *alive) self->settle(*call, std::move(response));
  });
}

void Trigger::settle(Invocation& call, OutboundResponse&& response) {
  if (stopped_) return;
  --in_flight_;
  engine::Engine& engine = broker_.engine();
  const auto now = mono_us();
  InvocationOutcome outcome = InvocationOutcome::ok;
  std::string reason;
  const std::string* dead_letter = response.header("sluice-dead-letter");
  const unsigned status = response.status;
  if (response.outcome == TransportOutcome::timeout) {
    outcome = InvocationOutcome::timeout;
    reason = "no answer within " + std::to_string(options_.settings.timeout.count()) + " ms";
  } else if (response.outcome != TransportOutcome::answered) {
    outcome = InvocationOutcome::connect_error;
    reason = response.error;
  } else if (dead_letter != nullptr || std::find(options_.settings.dead_letter_on.begin(),
                                                 options_.settings.dead_letter_on.end(), status) !=
                                           options_.settings.dead_letter_on.end()) {
    outcome = InvocationOutcome::dead_lettered;
    reason = dead_letter != nullptr && !dead_letter->empty()
                 ? *dead_letter
                 : "the function answered " + std::to_string(status);
  } else if (status == 429 || status == 503) {
    outcome = InvocationOutcome::throttled;
  } else if (status < 200 || status >= 300) {
    outcome = InvocationOutcome::failed;
    reason = "the function answered " + std::to_string(status);
  }
  ++outcomes_[static_cast<std::size_t>(outcome)];
  durations_.observe(response.took.count());
  batch_sizes_.observe(static_cast<std::int64_t>(call.messages.size()));
  adapt(outcome, response.took, in_flight_ + 1);
  record(outcome, call.probe);

  switch (outcome) {
    case InvocationOutcome::ok: {
      // {"failed": ["<id>", ...]} names the messages that did not go well.
      std::vector<std::string> failed;
      if (!response.body.empty() && response.body.front() == '{') {
        const json answer = json::parse(response.body, nullptr, false);
        if (answer.is_object())
          if (auto it = answer.find("failed"); it != answer.end() && it->is_array())
            for (const auto& id : *it)
              failed.push_back(id.is_string() ? id.get<std::string>() : id.dump());
      }
      for (const Held& m : call.messages) {
        const bool listed =
            std::find(failed.begin(), failed.end(), std::to_string(m.id)) != failed.end();
        if (listed)
          (void)engine.nack(*this, m.id, m.token, 0, now, "the function listed it as failed");
        else
          (void)engine.ack(*this, m.id, m.token, now);
      }
      break;
    }
    case InvocationOutcome::throttled: {
      // The function says "slow down": no attempt used, and nothing is sent
      // to it until Retry-After has passed.
      const auto wait = retry_after_of(response);
      const auto delay = std::chrono::duration_cast<std::chrono::microseconds>(wait).count();
      give_back_pending(delay);  // nothing more comes until then
      for (auto m = call.messages.rbegin(); m != call.messages.rend(); ++m)
        (void)engine.release(*this, m->id, m->token, delay, now);
      throttled_until_ = std::max(throttled_until_, Clock::now() + wait);
      throttle_timer_.expires_at(throttled_until_);
      throttle_timer_.async_wait([alive = alive_](const boost::system::error_code& ec) {
        if (Trigger* self = *alive; self != nullptr && !ec) self->kick();
      });
      log::info("trigger_throttled")
          .str("trigger", options_.settings.name)
          .unum("status", status)
          .unum("retry_after_s", static_cast<std::uint64_t>(wait.count()));
      break;
    }
    default: {
      const bool poison = outcome == InvocationOutcome::dead_lettered;
      for (const Held& m : call.messages)
        (void)engine.nack(*this, m.id, m.token, 0, now, reason, poison);
      log::debug("trigger_invocation_failed")
          .str("trigger", options_.settings.name)
          .str("outcome", to_string(outcome))
          .str("reason", reason)
          .unum("messages", call.messages.size());
      break;
    }
  }
  kick();
}

void Trigger::adapt(InvocationOutcome outcome, std::chrono::microseconds took,
                    std::uint32_t in_flight) {
  if (!options_.settings.adaptive) return;
  const double floor = options_.settings.min_concurrency,
               ceiling = options_.settings.max_concurrency;
  if (outcome == InvocationOutcome::throttled || outcome == InvocationOutcome::timeout) {
    adaptive_limit_ = std::max(floor, adaptive_limit_ * 0.75);  // the function is overwhelmed
  } else if (outcome == InvocationOutcome::ok) {
    // Vegas: with the latency rtt (averaged over about a round of
    // invocations) and the lowest seen rtt0, about limit x (1 - rtt0 / rtt)
    // requests wait inside the function. Fewer than alpha: one more per
    // round; more than beta: one fewer.
    const double rtt = std::max<double>(1, static_cast<double>(took.count()));
    // The floor is learnt again now and then: a function may get slower for good.
    if (rtt_noload_us_ == 0 || rtt < rtt_noload_us_ || ++samples_ % 1000 == 0) rtt_noload_us_ = rtt;
    rtt_average_us_ = rtt_average_us_ == 0 ? rtt
                                           : rtt_average_us_ + (rtt - rtt_average_us_) /
                                                                   std::max(4.0, adaptive_limit_);
    const double waiting = adaptive_limit_ * (1 - rtt_noload_us_ / rtt_average_us_);
    const double alpha = std::max(1.0, 1.5 * std::log10(adaptive_limit_));
    const double beta = 2 * alpha;
    if (waiting < alpha && in_flight * 2 >= limit_)  // only when the limit is what holds it back
      adaptive_limit_ += 1 / adaptive_limit_;
    else if (waiting > beta)
      adaptive_limit_ -= 1 / adaptive_limit_;
  } else {
    return;
  }
  adaptive_limit_ = std::clamp(adaptive_limit_, floor, ceiling);
  limit_ = static_cast<std::uint32_t>(std::lround(adaptive_limit_));
}

void Trigger::set_paused(bool paused) {
  if (paused_ == paused || stopped_) return;
  paused_ = paused;
  log::info(paused ? "trigger_paused" : "trigger_resumed").str("trigger", options_.settings.name);
  if (paused)
    give_back_pending(0);
  else
    kick();
}

void Trigger::test_invoke(std::string payload, HttpClient::Callback done) {
  if (client_ == nullptr) {
    OutboundResponse r;
    r.outcome = TransportOutcome::connect_error;
    r.error = "the trigger is not running";
    done(std::move(r));
    return;
  }
  Held test{0, 0, 0, wall_us(), {}, Clock::now()};
  const protocol::Header headers[] = {{"sluice-test", "invoke"}};
  protocol::encode_message(test.message, headers, payload);
  std::erase_if(test_calls_, [](const auto& call) { return call->answered; });
  auto call = std::make_shared<TestCall>(TestCall{std::move(done), false});
  test_calls_.push_back(call);
  client_->send(request_for({test}), [call](OutboundResponse&& response) {
    if (call->answered) return;
    call->answered = true;
    call->done(std::move(response));
  });
}

std::uint32_t Trigger::room() const noexcept {
  if (paused_) return 0;
  switch (breaker_) {
    case BreakerState::closed:
      return limit_;
    case BreakerState::open:
      return 0;
    case BreakerState::half_open:
      // The probes, each sent once; the rest wait for their verdict.
      return in_flight_ + (probes_sent_ < options_.settings.breaker_probes ? 1 : 0);
  }
  return 0;
}

void Trigger::give_back_pending(engine::Micros delay) {
  engine::Engine& engine = broker_.engine();
  // Paused first: a released message would otherwise come straight back here.
  if (consumer_ != nullptr) engine.pause(*consumer_);
  const std::vector<Held> giving = std::exchange(pending_, {});
  const auto now = mono_us();
  // Each goes to the front: the newest first, so the oldest ends up first in line.
  for (auto m = giving.rbegin(); m != giving.rend(); ++m)
    (void)engine.release(*this, m->id, m->token, delay, now);
}

}  // namespace sluice::net
