#include "intake.hpp"

#include "sluice/protocol/codec.hpp"

namespace sluice::net {

std::string open_refused(errc why, std::string_view queue) {
  if (why == errc::queue_not_found)
    return "no queue named " + std::string(queue) +
           " (queues.auto_create is off: declare it in the config file or create it)";
  return kTooManyQueues;
}

bool Intake::check(std::string_view name, std::span<const std::string_view> messages,
                   std::int64_t wall_us, IntakeResult& out) {
  // The queue's key header, also for a queue this publish would create.
  const std::string_view key_header = last_ != nullptr && last_->name() == name
                                          ? std::string_view(last_->options().key_header)
                                          : engine_.options_for(name).key_header;
  const auto not_after_ms = static_cast<std::uint64_t>(wall_us / 1000) + protocol::kMaxDelayMs;
  Schemas::Queue* schemas =
      schemas_ != nullptr && !schemas_->empty() ? schemas_->find(name) : nullptr;
  arrivals_.resize(messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    protocol::MessageParts parts;
    protocol::SystemHeaders& sys = arrivals_[i];
    protocol::Status s = protocol::parse_message(messages[i], parts);
    if (s && parts.payload.size() > limits_.max_payload_bytes)
      s = {errc::payload_too_large, "message: payload over the broker's max_payload_bytes"};
    if (s) s = protocol::check_header_limits(parts, limits_);
    if (s) s = protocol::read_system_headers(parts, sys, key_header);
    if (s && sys.not_before_ms != 0 && sys.not_before_ms > not_after_ms)
      s = {errc::invalid_argument, "publish: sluice-not-before-ms is more than 30 days ahead"};
    if (s && schemas != nullptr) {
      if (Error refused = Schemas::check(*schemas, parts, out.schema)) {
        out.code = refused.code;
        out.detail = std::move(refused.detail);
        out.in_message = true;
        out.message = i;
        return false;
      }
    }
    if (!s) {
      out.code = s.code;
      out.detail = s.detail;
      out.in_message = true;
      out.message = i;
      return false;
    }
  }
  return true;
}

void Intake::offer(std::string_view name, std::span<const std::string_view> messages,
                   engine::Micros now, std::int64_t wall_us, IntakeResult& out) {
  out.code = errc::ok;
  out.queue = nullptr;
  out.detail.clear();
  out.in_message = false;
  out.message = 0;
  out.retry_after = 0;
  out.must_wait = false;
  out.ids.clear();
  out.duplicates.clear();
  out.schema.keyword.clear();
  // A queue was deleted since last_ was looked up: it may be gone, so forget it
  // before anything (check() too) reads it.
  if (removals_ != engine_.removals()) {
    removals_ = engine_.removals();
    last_ = nullptr;
  }
  if (!check(name, messages, wall_us, out)) return;
  if (last_ == nullptr || last_->name() != name) {
    errc why = errc::ok;
    last_ = engine_.open(name, &why);
    if (last_ == nullptr) {
      out.code = why;
      out.detail = open_refused(why, name);
      return;
    }
  }
  engine::Queue& queue = *last_;
  out.queue = &queue;
  const engine::Admission admission = engine_.admit(queue, messages.size(), now);
  if (admission.code != errc::ok) {
    out.code = admission.code;
    out.detail = admission.detail;
    out.retry_after = admission.retry_after;
    out.must_wait =
        admission.code == errc::queue_full && queue.options().overflow == engine::Overflow::block;
    return;
  }
  out.ids.reserve(messages.size());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const engine::Published published =
        engine_.publish(queue, messages[i], arrivals_[i], now, wall_us);
    if (published.duplicate) out.duplicates.push_back(static_cast<std::uint32_t>(out.ids.size()));
    out.ids.push_back(published.id);
  }
}

}  // namespace sluice::net
