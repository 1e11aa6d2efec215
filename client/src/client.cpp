// The public API: Connection's methods, which check their arguments and hand
// the work to Connection::Impl; the admin requests (stats, configure, dead
// letters, ping), which are one call() each; and the value types' methods.
#include "connection_impl.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace sluice::client {

std::string Error::to_string() const {
  std::string s(sluice::to_string(code));
  if (!detail.empty()) s += ": " + detail;
  return s;
}

namespace {
/// The value of the first header named `key` among `headers` (pairs), or "".
template <typename Headers>
std::string_view find_header(const Headers& headers, std::string_view key) noexcept {
  for (const auto& [k, v] : headers)
    if (k == key) return v;
  return {};
}
}  // namespace

std::string_view Delivery::header(std::string_view key) const noexcept {
  return find_header(headers, key);
}

// ------------------------------------------------------------ Connection

Connection::Connection(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Connection::~Connection() {
  if (impl_->on_io_thread()) {
    // Joining the I/O thread from itself cannot work; this is a programming error.
    std::fputs("sluice::client: a Connection was destroyed inside its own handler or callback\n",
               stderr);
    std::abort();
  }
  impl_->shutdown();
}

Result<std::unique_ptr<Connection>> Connection::connect(const Options& options) {
  auto impl = std::make_shared<Impl>(options);
  if (Error e = impl->open()) return e;
  impl->start();
  return std::unique_ptr<Connection>(new Connection(std::move(impl)));
}

void Connection::publish_async(std::string_view queue, const Message& message,
                               PublishCallback done) {
  std::vector<protocol::Header> headers;
  headers.reserve(message.headers.size());
  for (const auto& [k, v] : message.headers) headers.push_back({k, v});
  impl_->publish_async(queue, headers, message.payload, std::move(done));
}

void Connection::publish_async(std::string_view queue, std::string_view payload,
                               PublishCallback done) {
  impl_->publish_async(queue, {}, payload, std::move(done));
}

Result<std::uint64_t> Connection::publish(std::string_view queue, const Message& message) {
  auto ids = publish_batch(queue, {&message, 1});
  if (!ids) return ids.error();
  return ids.value().at(0);
}

Result<Published> Connection::publish_checked(std::string_view queue, const Message& message) {
  auto outcomes = impl_->publish_frame(queue, {&message, 1});
  if (!outcomes) return outcomes.error();
  return outcomes.value().at(0);
}

Result<std::vector<std::uint64_t>> Connection::publish_batch(std::string_view queue,
                                                             std::span<const Message> messages) {
  auto outcomes = impl_->publish_frame(queue, messages);
  if (!outcomes) return outcomes.error();
  std::vector<std::uint64_t> ids;
  ids.reserve(outcomes.value().size());
  for (const auto& p : outcomes.value()) ids.push_back(p.id);
  return ids;
}

bool Connection::wait_confirms(std::chrono::milliseconds timeout) {
  return impl_->wait_confirms(timeout);
}

Result<std::uint32_t> Connection::subscribe(std::string_view queue, SubscribeOptions options,
                                            Handler handler) {
  if (!protocol::valid_queue_name(queue))
    return Error{errc::invalid_queue_name,
                 "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (!(options.rate == 0 || (options.rate >= 0.1 && options.rate <= 1e6)))
    return Error{errc::invalid_argument, "rate must be 0 (no limit) or 0.1 to 1000000 per second"};
  return impl_->subscribe(queue, options, std::move(handler));
}

Error Connection::unsubscribe(std::uint32_t subscription_id) {
  return impl_->unsubscribe(subscription_id);
}

Result<std::vector<Fetched>> Connection::fetch(std::string_view queue, std::uint32_t max_messages,
                                               std::chrono::milliseconds wait,
                                               std::chrono::milliseconds lease) {
  if (!protocol::valid_queue_name(queue))
    return Error{errc::invalid_queue_name,
                 "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (max_messages == 0 || max_messages > 65535)
    return Error{errc::invalid_argument, "max_messages must be 1 to 65535"};
  if (wait.count() < 0 || lease.count() < 0)
    return Error{errc::invalid_argument, "wait and lease must not be negative"};
  return impl_->fetch(queue, max_messages, wait, lease);
}

std::string_view Fetched::header(std::string_view key) const noexcept {
  return find_header(message.headers, key);
}
Error Connection::ack(LeaseHandle lease) {
  return impl_->settle(FrameType::ack, lease, 0);
}
Error Connection::nack(LeaseHandle lease, std::chrono::milliseconds delay) {
  return impl_->settle(FrameType::nack, lease, static_cast<std::uint32_t>(delay.count()));
}
Error Connection::nack(LeaseHandle lease, const NackOptions& options) {
  if (options.reason.size() > protocol::kMaxReasonBytes)
    return {errc::invalid_argument, "reason over 1024 bytes"};
  return impl_->settle(FrameType::nack, lease, static_cast<std::uint32_t>(options.delay.count()),
                       options.reason, options.dead_letter ? protocol::kNackDeadLetter : 0);
}
Error Connection::extend(LeaseHandle lease, std::chrono::milliseconds lease_time) {
  return impl_->settle(FrameType::extend, lease, static_cast<std::uint32_t>(lease_time.count()));
}

Result<std::vector<QueueStats>> Connection::stats(std::string_view queue) {
  std::string q(queue);
  return impl_->call<std::vector<QueueStats>>(
      [q](std::uint64_t request_id, std::string& out) {
        protocol::encode_stats(out, {request_id, q});
      },
      [](FrameType, std::string_view body) -> Result<std::vector<QueueStats>> {
        std::uint64_t request_id;
        std::vector<protocol::QueueStatsView> views;
        if (!protocol::decode_stats_result(body, request_id, views))
          return Error{errc::malformed_frame, "bad STATS_RESULT"};
        std::vector<QueueStats> out;
        for (const auto& v : views) {
          if (v.name.empty()) continue;  // the broker-wide entry: storage_stats()
          using F = protocol::StatField;
          QueueStats q{
              std::string(v.name),       v.get(F::ready),         v.get(F::delayed),
              v.get(F::in_flight),       v.get(F::consumers),     v.get(F::published_total),
              v.get(F::delivered_total), v.get(F::acked_total),   v.get(F::nacked_total),
              v.get(F::expired_total),   v.get(F::bytes),         v.get(F::pressure),
              v.get(F::refused_total),   v.get(F::blocked_total), v.get(F::staged)};
          q.held = v.get(F::held);
          q.retried_total = v.get(F::retried_total);
          q.dead_lettered_total = v.get(F::dead_lettered_total);
          q.duplicates_total = v.get(F::duplicates_total);
          q.dedup_evicted_total = v.get(F::dedup_evicted_total);
          q.sequence_gaps_total = v.get(F::sequence_gaps_total);
          q.dead_letters = v.get(F::dead_letters);
          q.redriving = v.get(F::redriving);
          out.push_back(std::move(q));
        }
        return out;
      });
}

Result<std::optional<StorageStats>> Connection::storage_stats() {
  return impl_->call<std::optional<StorageStats>>(
      [](std::uint64_t request_id, std::string& out) {
        protocol::encode_stats(out, {request_id, {}});
      },
      [](FrameType, std::string_view body) -> Result<std::optional<StorageStats>> {
        std::uint64_t request_id;
        std::vector<protocol::QueueStatsView> views;
        if (!protocol::decode_stats_result(body, request_id, views))
          return Error{errc::malformed_frame, "bad STATS_RESULT"};
        for (const auto& v : views) {
          if (!v.name.empty()) continue;
          using F = protocol::StatField;
          return std::optional<StorageStats>(
              StorageStats{v.get(F::storage_file_bytes), v.get(F::storage_used_bytes),
                           v.get(F::storage_limit_bytes), v.get(F::storage_commits_total),
                           v.get(F::storage_operations_total), v.get(F::storage_median_batch),
                           v.get(F::storage_waiting), v.get(F::storage_full) != 0,
                           v.get(F::storage_failures_total)});
        }
        return std::optional<StorageStats>();
      });
}

Error Connection::configure(std::string_view queue,
                            const std::vector<std::pair<std::string, std::string>>& settings) {
  if (!protocol::valid_queue_name(queue))
    return {errc::invalid_queue_name,
            "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (settings.empty() || settings.size() > protocol::kMaxConfigureSettings)
    return {errc::invalid_argument, "between 1 and 64 settings at once"};
  std::string q(queue);
  auto copy = settings;
  return impl_
      ->call<bool>(
          [q, copy](std::uint64_t request_id, std::string& out) {
            protocol::Configure c;
            c.request_id = request_id;
            c.queue = q;
            for (const auto& [name, value] : copy) c.settings.emplace_back(name, value);
            protocol::encode_configure(out, c);
          },
          [](FrameType, std::string_view) { return Result<bool>(true); })
      .error();
}

Result<DeadLetterResult> Connection::dead_letters(const DeadLetterQuery& query) {
  if (!protocol::valid_queue_name(query.queue))
    return Error{errc::invalid_queue_name,
                 "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (!(query.rate == 0 || (query.rate >= 0.1 && query.rate <= 1e6)))
    return Error{errc::invalid_argument, "rate must be 0 (no limit) or 0.1 to 1000000 per second"};
  if (query.ids.size() > protocol::kMaxDeadLetterIds)
    return Error{errc::invalid_argument, "at most 10000 ids at once"};
  auto q = std::make_shared<const DeadLetterQuery>(query);
  return impl_->call<DeadLetterResult>(
      [q](std::uint64_t request_id, std::string& out) {
        protocol::DeadLetterRequest r;
        r.request_id = request_id;
        r.op = static_cast<protocol::DeadLetterOp>(q->op);
        r.queue = q->queue;
        r.flags = q->newest_first ? protocol::kDeadLettersNewestFirst : 0;
        r.limit = q->limit;
        r.after = q->after;
        r.ids = q->ids;
        r.min_age_ms = static_cast<std::uint64_t>(q->min_age.count());
        r.max_age_ms = static_cast<std::uint64_t>(q->max_age.count());
        r.reason = q->reason;
        r.rate_milli = static_cast<std::uint32_t>(std::llround(q->rate * 1000));
        protocol::encode_dead_letters(out, r);
      },
      [](FrameType type, std::string_view body) -> Result<DeadLetterResult> {
        protocol::DeadLetterResult r;
        if (type != FrameType::dead_letters_result ||
            !protocol::decode_dead_letters_result(body, r))
          return Error{errc::malformed_frame, "bad DEAD_LETTERS_RESULT"};
        DeadLetterResult out;
        out.affected = r.affected;
        out.next_after = r.next_after;
        for (const auto& e : r.entries) {
          DeadLetter d;
          d.entry_id = e.entry_id;
          d.message_id = e.message_id;
          d.queue = e.queue;
          d.attempts = e.attempts;
          d.publish_time_us = static_cast<std::int64_t>(e.publish_time_us);
          d.first_failure_us = static_cast<std::int64_t>(e.first_failure_us);
          d.last_failure_us = static_cast<std::int64_t>(e.last_failure_us);
          d.reason = e.reason;
          protocol::MessageParts parts;
          if (protocol::parse_message(e.message, parts)) {
            d.message.payload = parts.payload;
            protocol::for_each_header(parts, [&](const protocol::Header& h) {
              d.message.headers.emplace_back(h.key, h.value);
            });
          }
          out.entries.push_back(std::move(d));
        }
        return out;
      });
}

Result<QueueResult> Connection::queues(const QueueCommand& command) {
  if ((command.op != QueueCommand::Op::list || !command.queue.empty()) &&
      !protocol::valid_queue_name(command.queue))
    return Error{errc::invalid_queue_name,
                 "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (command.settings.size() > protocol::kMaxConfigureSettings)
    return Error{errc::invalid_argument, "at most 64 settings at once"};
  if (!command.settings.empty() && command.op != QueueCommand::Op::create)
    return Error{errc::invalid_argument, "settings go with create only"};
  if (command.force && command.op != QueueCommand::Op::remove)
    return Error{errc::invalid_argument, "force goes with remove only"};
  auto c = std::make_shared<const QueueCommand>(command);
  return impl_->call<QueueResult>(
      [c](std::uint64_t request_id, std::string& out) {
        protocol::QueuesRequest r;
        r.request_id = request_id;
        r.op = static_cast<protocol::QueueOp>(c->op);
        r.queue = c->queue;
        r.flags = c->force ? protocol::kQueuesForce : 0;
        for (const auto& [name, value] : c->settings) r.settings.emplace_back(name, value);
        protocol::encode_queues(out, r);
      },
      [](FrameType type, std::string_view body) -> Result<QueueResult> {
        protocol::QueuesResult r;
        if (type != FrameType::queues_result || !protocol::decode_queues_result(body, r))
          return Error{errc::malformed_frame, "bad QUEUES_RESULT"};
        QueueResult out;
        out.affected = r.affected;
        for (const auto& e : r.entries)
          out.queues.push_back({std::string(e.name), e.durable, e.messages, e.consumers});
        return out;
      });
}

Result<TriggerResult> Connection::triggers(const TriggerCommand& command) {
  if (command.name.size() > protocol::kMaxTriggerNameBytes)
    return Error{errc::invalid_argument, "a trigger's name is at most 100 bytes"};
  if (command.op != TriggerCommand::Op::list && command.name.empty())
    return Error{errc::invalid_argument, "pause, resume and invoke need a trigger's name"};
  auto c = std::make_shared<const TriggerCommand>(command);
  // A test invocation waits for the function, at most its trigger's timeout (15 min).
  const auto wait =
      command.op == TriggerCommand::Op::invoke ? std::chrono::minutes(16) : std::chrono::minutes(0);
  return impl_->call<TriggerResult>(
      [c](std::uint64_t request_id, std::string& out) {
        protocol::TriggerRequest r;
        r.request_id = request_id;
        r.op = static_cast<protocol::TriggerOp>(c->op);
        r.name = c->name;
        r.body = c->body;
        protocol::encode_triggers(out, r);
      },
      [](FrameType type, std::string_view body) -> Result<TriggerResult> {
        protocol::TriggerResult r;
        if (type != FrameType::triggers_result || !protocol::decode_triggers_result(body, r))
          return Error{errc::malformed_frame, "bad TRIGGERS_RESULT"};
        static constexpr const char* kBreaker[] = {"closed", "open", "half_open"};
        static constexpr const char* kOutcome[] = {"answered", "timeout", "connect_error",
                                                   "broken"};
        TriggerResult out;
        for (const auto& e : r.entries) {
          TriggerState t;
          t.name = e.name;
          t.queue = e.queue;
          t.url = e.url;
          t.paused = e.paused;
          t.breaker = e.breaker < 3 ? kBreaker[e.breaker] : "unknown";
          t.adaptive = e.adaptive;
          t.concurrency_limit = e.limit;
          t.in_flight = e.in_flight;
          t.messages_sent = e.messages_sent;
          t.invocations = e.invocations;
          out.triggers.push_back(std::move(t));
        }
        if (r.invoked) {
          const auto& i = r.invocation;
          out.invocation =
              TriggerInvocation{.outcome = i.outcome < 4 ? kOutcome[i.outcome] : "unknown",
                                .status = i.status,
                                .took = std::chrono::microseconds(i.took_us),
                                .error = std::string(i.error),
                                .body = std::string(i.body)};
        }
        return out;
      },
      wait);
}

Error Connection::ping() {
  return impl_
      ->call<bool>([](std::uint64_t request_id,
                      std::string& out) { protocol::encode_ping(out, request_id); },
                   [](FrameType, std::string_view) { return Result<bool>(true); })
      .error();
}

bool Connection::connected() const noexcept {
  return impl_->connected();
}
ConnectionState Connection::state() const noexcept {
  return impl_->state();
}
std::string_view to_string(ConnectionState state) noexcept {
  switch (state) {
    case ConnectionState::connected:
      return "connected";
    case ConnectionState::reconnecting:
      return "reconnecting";
    case ConnectionState::closed:
      return "closed";
  }
  return "unknown";
}
Error Connection::last_error() const {
  return impl_->last_error();
}
SubscriptionStats Connection::subscription_stats(std::uint32_t id) const {
  return impl_->subscription_stats(id);
}
std::uint64_t Connection::refused_auto_acks() const noexcept {
  return impl_->refused_auto_acks_.load();
}
std::uint64_t Connection::direct_publishes() const noexcept {
  return impl_->direct_publishes_.load(std::memory_order_relaxed);
}
std::uint8_t Connection::pressure() const noexcept {
  return impl_->pressure_.load(std::memory_order_relaxed);
}

}  // namespace sluice::client
