// The frame decoders: every body checked against its grammar, views into it.
#include "sluice/protocol/codec.hpp"

#include <algorithm>
#include <cstring>

#include "sluice/protocol/wire.hpp"

namespace sluice::protocol {

namespace {
constexpr Status malformed(const char* detail) noexcept {
  return {errc::malformed_frame, detail};
}

/// The common tail check: every field read, nothing left over.
Status finish(const Reader& r, const char* what) noexcept {
  if (!r.ok()) return malformed(what);
  if (!r.done()) return malformed("trailing bytes after the last field");
  return {};
}

/// Reads a u32 entry count and checks that `count` entries of at least
/// `min_entry_bytes` can fit in what is left, so a hostile count never makes
/// us reserve memory the frame could not hold.
bool read_count(Reader& r, std::size_t min_entry_bytes, std::uint32_t& count) noexcept {
  count = r.u32();
  if (!r.ok()) return false;
  if (min_entry_bytes > 0 && count > r.remaining() / min_entry_bytes) {
    r.fail();
    return false;
  }
  return true;
}
}  // namespace

// ---------------------------------------------------------------- decoders

bool valid_queue_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxQueueNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return name != "." && name != "..";
}

Status decode_hello(std::string_view body, Hello& out) noexcept {
  Reader r(body);
  out.min_version = r.u16();
  out.max_version = r.u16();
  out.client_name = r.str16();
  out.token = r.str16();
  if (auto s = finish(r, "hello: truncated"); !s) return s;
  if (out.min_version > out.max_version)
    return {errc::invalid_argument, "hello: min_version > max_version"};
  return {};
}

Status decode_hello_ok(std::string_view body, HelloOk& out) noexcept {
  Reader r(body);
  out.version = r.u16();
  out.max_frame_bytes = r.u32();
  out.max_payload_bytes = r.u32();
  out.server_name = r.str16();
  return finish(r, "hello_ok: truncated");
}

Status parse_message(std::string_view raw, MessageParts& out) noexcept {
  Reader r(raw);
  const std::uint8_t property_count = r.u8();
  if (r.ok() && property_count != 0)
    return malformed("message: unknown property (none are defined in version 1)");
  out.header_count = r.u16();
  if (r.ok() && out.header_count > kMaxHeaders)
    return {errc::invalid_argument, "message: more than 64 headers"};
  const char* headers_begin = r.position();
  for (std::uint16_t i = 0; i < out.header_count && r.ok(); ++i) {
    auto key = r.str16();
    auto value = r.str16();
    if (!r.ok()) break;
    if (key.empty() || key.size() > kMaxHeaderKeyBytes)
      return {errc::invalid_argument, "message: header key must be 1..255 bytes"};
    if (value.size() > kMaxHeaderValueBytes)
      return {errc::invalid_argument, "message: header value over 16384 bytes"};
  }
  out.headers =
      std::string_view(headers_begin, static_cast<std::size_t>(r.position() - headers_begin));
  out.payload = r.bytes32();
  return finish(r, "message: truncated");
}

Status check_header_limits(const MessageParts& parts, const Limits& limits) noexcept {
  if (parts.header_count > limits.max_headers)
    return {errc::invalid_argument, "message: more headers than the broker's max_headers"};
  // Each header is encoded as two 2-byte lengths plus its key and value.
  const std::size_t bytes = parts.headers.size() - 4u * parts.header_count;
  if (bytes > limits.max_header_bytes)
    return {errc::invalid_argument, "message: headers over the broker's max_header_bytes"};
  return {};
}

Status decode_publish(std::string_view body, const Limits& limits, Publish& out,
                      std::vector<std::string_view>& messages) {
  messages.clear();
  Reader r(body);
  out.request_id = r.u64();
  out.queue = r.str16();
  std::uint32_t count = 0;
  // A message is at least 7 bytes: props u8, header count u16, payload length u32.
  if (!read_count(r, 7, count))
    return malformed("publish: truncated or count larger than the frame");
  if (!valid_queue_name(out.queue))
    return {errc::invalid_queue_name,
            "publish: queue name must be 1..200 of [A-Za-z0-9_.:-], and not \".\" or \"..\""};
  if (count == 0) return {errc::invalid_argument, "publish: no messages"};
  messages.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    // Find where this message ends by walking its fields, then validate it whole.
    const char* begin = r.position();
    r.u8();
    const std::uint16_t headers = r.u16();
    if (headers > kMaxHeaders) return {errc::invalid_argument, "message: more than 64 headers"};
    for (std::uint16_t h = 0; h < headers && r.ok(); ++h) {
      r.str16();
      r.str16();
    }
    const std::uint32_t payload_bytes = r.u32();
    if (r.ok() && payload_bytes > limits.max_payload_bytes)
      return {errc::payload_too_large, "message: payload over the broker's max_payload_bytes"};
    r.bytes(payload_bytes);
    if (!r.ok()) return malformed("publish: message truncated");
    std::string_view raw(begin, static_cast<std::size_t>(r.position() - begin));
    MessageParts parts;
    if (auto s = parse_message(raw, parts); !s) return s;
    if (auto s = check_header_limits(parts, limits); !s) return s;
    messages.push_back(raw);
  }
  return finish(r, "publish: truncated");
}

std::uint64_t Confirm::message_id(std::uint32_t i) const noexcept {
  std::uint64_t v = 0;
  if (i < count) std::memcpy(&v, ids.data() + std::size_t{i} * 8, 8);
  return v;
}

std::uint32_t Confirm::duplicate_index(std::uint32_t i) const noexcept {
  std::uint32_t v = 0;
  if (i < duplicate_count) std::memcpy(&v, duplicates.data() + std::size_t{i} * 4, 4);
  return v;
}

Status decode_confirm(std::string_view body, Confirm& out) noexcept {
  Reader r(body);
  out.request_id = r.u64();
  out.pressure = r.u8();
  if (!read_count(r, 8, out.count)) return malformed("confirm: truncated");
  out.ids = r.bytes(std::size_t{out.count} * 8);
  if (!read_count(r, 4, out.duplicate_count)) return malformed("confirm: truncated");
  out.duplicates = r.bytes(std::size_t{out.duplicate_count} * 4);
  if (auto s = finish(r, "confirm: truncated"); !s) return s;
  for (std::uint32_t i = 0; i < out.duplicate_count; ++i)
    if (out.duplicate_index(i) >= out.count)
      return {errc::invalid_argument, "confirm: duplicate index past the message count"};
  return {};
}

Status decode_dead_letters(std::string_view body, DeadLetterRequest& out) {
  Reader r(body);
  out.ids.clear();
  out.request_id = r.u64();
  const std::uint8_t op = r.u8();
  out.queue = r.str16();
  out.flags = r.u8();
  out.limit = r.u32();
  out.after = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 8, count)) return malformed("dead_letters: truncated");
  if (count > kMaxDeadLetterIds)
    return {errc::invalid_argument, "dead_letters: more than 10000 ids"};
  out.ids.resize(count);
  for (auto& id : out.ids) id = r.u64();
  out.min_age_ms = r.u64();
  out.max_age_ms = r.u64();
  out.reason = r.str16();
  out.rate_milli = r.u32();
  if (auto s = finish(r, "dead_letters: truncated"); !s) return s;
  if (op < 1 || op > 5) return {errc::invalid_argument, "dead_letters: unknown operation"};
  out.op = static_cast<DeadLetterOp>(op);
  if (!valid_queue_name(out.queue))
    return {errc::invalid_queue_name,
            "dead_letters: queue name must be 1..200 of [A-Za-z0-9_.:-], and not \".\" or \"..\""};
  if (out.reason.size() > kMaxReasonBytes)
    return {errc::invalid_argument, "dead_letters: reason filter over 1024 bytes"};
  if (out.op == DeadLetterOp::show && out.ids.size() != 1)
    return {errc::invalid_argument, "dead_letters: show takes exactly one id"};
  if (out.rate_milli != 0 && out.rate_milli < kMinRateMilli)
    return {errc::invalid_argument, "dead_letters: redrive rate must be 0 (no limit) or >= 0.1/s"};
  if (out.max_age_ms != 0 && out.max_age_ms < out.min_age_ms)
    return {errc::invalid_argument, "dead_letters: max_age is below min_age"};
  return {};
}

Status decode_dead_letters_result(std::string_view body, DeadLetterResult& out) {
  Reader r(body);
  out.entries.clear();
  out.request_id = r.u64();
  out.affected = r.u64();
  out.next_after = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 52, count)) return malformed("dead_letters_result: truncated");
  out.entries.resize(count);
  for (auto& e : out.entries) {
    e.entry_id = r.u64();
    e.message_id = r.u64();
    e.queue = r.str16();
    e.attempts = r.u32();
    e.publish_time_us = r.u64();
    e.first_failure_us = r.u64();
    e.last_failure_us = r.u64();
    e.reason = r.str16();
    e.message = r.bytes32();
  }
  return finish(r, "dead_letters_result: truncated");
}

Status decode_triggers(std::string_view body, TriggerRequest& out) noexcept {
  Reader r(body);
  out.request_id = r.u64();
  const std::uint8_t op = r.u8();
  out.name = r.str16();
  out.body = r.bytes32();
  if (auto s = finish(r, "triggers: truncated"); !s) return s;
  if (op < 1 || op > 4) return {errc::invalid_argument, "triggers: unknown operation"};
  out.op = static_cast<TriggerOp>(op);
  if (out.name.size() > kMaxTriggerNameBytes)
    return {errc::invalid_argument, "triggers: name over 100 bytes"};
  if (out.op != TriggerOp::list && out.name.empty())
    return {errc::invalid_argument, "triggers: pause, resume and invoke need a trigger's name"};
  return {};
}

Status decode_triggers_result(std::string_view body, TriggerResult& out) {
  Reader r(body);
  out.entries.clear();
  out.request_id = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 26, count)) return malformed("triggers_result: truncated");
  out.entries.resize(count);
  for (auto& e : out.entries) {
    e.name = r.str16();
    e.queue = r.str16();
    e.url = r.str16();
    e.paused = r.u8() != 0;
    e.breaker = r.u8();
    e.adaptive = r.u8() != 0;
    e.limit = r.u32();
    e.in_flight = r.u32();
    e.messages_sent = r.u64();
    e.invocations.resize(r.u8());
    for (auto& n : e.invocations) n = r.u64();
  }
  out.invoked = r.u8() != 0;
  out.invocation = {};
  if (out.invoked) {
    out.invocation.outcome = r.u8();
    out.invocation.status = r.u16();
    out.invocation.took_us = r.u64();
    out.invocation.error = r.str16();
    out.invocation.body = r.bytes32();
  }
  return finish(r, "triggers_result: truncated");
}

namespace {
/// A decimal u64 of 1..19 digits, or false.
bool parse_decimal(std::string_view text, std::uint64_t& value) noexcept {
  if (text.empty() || text.size() > 19) return false;
  value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}
}  // namespace

Status read_system_headers(const MessageParts& parts, SystemHeaders& out,
                           std::string_view key_header) noexcept {
  out = {};
  Status status;
  for_each_header(parts, [&](const Header& h) {
    if (!status) return;
    if (out.key.empty() && !key_header.empty() && h.key == key_header) out.key = h.value;
    if (h.key.size() < 7 || h.key.compare(0, 7, "sluice-") != 0) return;
    if (h.key == kDedupHeader) {
      if (h.value.empty() || h.value.size() > kMaxDedupIdBytes)
        status = {errc::invalid_argument, "publish: sluice-dedup-id must be 1..255 bytes"};
      out.dedup_id = h.value;
    } else if (h.key == kSequenceHeader) {
      if (!parse_decimal(h.value, out.sequence) || out.sequence == 0)
        status = {errc::invalid_argument, "publish: sluice-seq must be a decimal number from 1"};
      out.has_sequence = true;
    } else if (h.key == kDelayHeader) {
      if (!parse_decimal(h.value, out.delay_ms) || out.delay_ms > kMaxDelayMs)
        status = {errc::invalid_argument,
                  "publish: sluice-delay-ms must be decimal milliseconds up to 30 days"};
    } else if (h.key == kNotBeforeHeader) {
      if (!parse_decimal(h.value, out.not_before_ms) || out.not_before_ms > kMaxNotBeforeMs)
        status = {errc::invalid_argument,
                  "publish: sluice-not-before-ms must be decimal Unix milliseconds before 2100"};
    } else if (h.key == kCorrelationHeader) {
      out.correlation_id = h.value;
    }
  });
  return status;
}

Status decode_subscribe(std::string_view body, Subscribe& out) noexcept {
  Reader r(body);
  out.request_id = r.u64();
  out.subscription_id = r.u32();
  out.queue = r.str16();
  out.max_in_flight = r.u32();
  out.lease_ms = r.u32();
  out.rate_milli = r.u32();
  out.burst = r.u32();
  if (auto s = finish(r, "subscribe: truncated"); !s) return s;
  if (!valid_queue_name(out.queue))
    return {errc::invalid_queue_name,
            "subscribe: queue name must be 1..200 of [A-Za-z0-9_.:-], and not \".\" or \"..\""};
  if (out.max_in_flight == 0)
    return {errc::invalid_argument, "subscribe: max_in_flight must be at least 1"};
  if (out.rate_milli != 0 && (out.rate_milli < kMinRateMilli || out.burst == 0))
    return {errc::invalid_argument,
            "subscribe: rate must be 0 (none) or at least 0.1/s with burst >= 1"};
  return {};
}

Status decode_unsubscribe(std::string_view body, Unsubscribe& out) noexcept {
  Reader r(body);
  out.request_id = r.u64();
  out.subscription_id = r.u32();
  return finish(r, "unsubscribe: truncated");
}

Status decode_ack(std::string_view body, std::uint64_t& request_id, std::vector<AckEntry>& out) {
  out.clear();
  Reader r(body);
  request_id = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 16, count)) return malformed("ack: truncated or count larger than the frame");
  out.resize(count);
  for (auto& e : out) {
    e.message_id = r.u64();
    e.lease_token = r.u64();
  }
  return finish(r, "ack: truncated");
}

Status decode_nack(std::string_view body, std::uint64_t& request_id, std::vector<NackEntry>& out) {
  out.clear();
  Reader r(body);
  request_id = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 23, count)) return malformed("nack: truncated or count larger than the frame");
  out.resize(count);
  for (auto& e : out) {
    e.message_id = r.u64();
    e.lease_token = r.u64();
    e.delay_ms = r.u32();
    e.flags = r.u8();
    e.reason = r.str16();
    if (r.ok() && e.reason.size() > kMaxReasonBytes)
      return {errc::invalid_argument, "nack: reason over 1024 bytes"};
  }
  return finish(r, "nack: truncated");
}

Status decode_extend(std::string_view body, std::uint64_t& request_id,
                     std::vector<ExtendEntry>& out) {
  out.clear();
  Reader r(body);
  request_id = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 20, count))
    return malformed("extend: truncated or count larger than the frame");
  out.resize(count);
  for (auto& e : out) {
    e.message_id = r.u64();
    e.lease_token = r.u64();
    e.lease_ms = r.u32();
  }
  return finish(r, "extend: truncated");
}

Status decode_settled(std::string_view body, std::uint64_t& request_id,
                      std::vector<SettleFailure>& out) {
  out.clear();
  Reader r(body);
  request_id = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 10, count)) return malformed("settled: truncated");
  out.resize(count);
  for (auto& e : out) {
    e.message_id = r.u64();
    e.code = static_cast<errc>(r.u16());
  }
  return finish(r, "settled: truncated");
}

Status decode_ok(std::string_view body, std::uint64_t& request_id) noexcept {
  Reader r(body);
  request_id = r.u64();
  return finish(r, "ok: truncated");
}

Status decode_ping(std::string_view body, std::uint64_t& request_id) noexcept {
  Reader r(body);
  request_id = r.u64();
  return finish(r, "ping: truncated");
}

Status decode_deliver(std::string_view body, std::uint32_t& subscription_id,
                      std::vector<Delivery>& out) {
  out.clear();
  Reader r(body);
  subscription_id = r.u32();
  std::uint32_t count = 0;
  if (!read_count(r, 35, count)) return malformed("deliver: truncated");
  out.resize(count);
  for (auto& d : out) {
    d.message_id = r.u64();
    d.lease_token = r.u64();
    d.attempt = r.u32();
    d.publish_time_us = r.u64();
    const char* begin = r.position();
    r.u8();
    const std::uint16_t headers = r.u16();
    for (std::uint16_t h = 0; h < headers && r.ok(); ++h) {
      r.str16();
      r.str16();
    }
    r.bytes32();
    if (!r.ok()) return malformed("deliver: message truncated");
    d.message = std::string_view(begin, static_cast<std::size_t>(r.position() - begin));
  }
  return finish(r, "deliver: truncated");
}

Status decode_stats(std::string_view body, StatsRequest& out) noexcept {
  Reader r(body);
  out.request_id = r.u64();
  out.queue = r.str16();
  if (auto s = finish(r, "stats: truncated"); !s) return s;
  if (!out.queue.empty() && !valid_queue_name(out.queue))
    return {errc::invalid_queue_name,
            "stats: queue name must be 1..200 of [A-Za-z0-9_.:-], and not \".\" or \"..\""};
  return {};
}

std::uint64_t QueueStatsView::get(StatField field) const noexcept {
  for (const auto& [id, value] : fields)
    if (id == static_cast<std::uint16_t>(field)) return value;
  return 0;
}

Status decode_stats_result(std::string_view body, std::uint64_t& request_id,
                           std::vector<QueueStatsView>& out) {
  out.clear();
  Reader r(body);
  request_id = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 4, count)) return malformed("stats_result: truncated");
  out.resize(count);
  for (auto& q : out) {
    q.name = r.str16();
    const std::uint16_t fields = r.u16();
    if (!r.ok() || fields > r.remaining() / 10) return malformed("stats_result: truncated");
    q.fields.resize(fields);
    for (auto& [id, value] : q.fields) {
      id = r.u16();
      value = r.u64();
    }
  }
  return finish(r, "stats_result: truncated");
}

Status decode_error(std::string_view body, ErrorFrame& out) noexcept {
  Reader r(body);
  out.request_id = r.u64();
  out.code = static_cast<errc>(r.u16());
  out.message = r.str16();
  out.retry_after_ms = r.u32();
  return finish(r, "error: truncated");
}

Status decode_queues(std::string_view body, QueuesRequest& out) {
  out.settings.clear();
  Reader r(body);
  out.request_id = r.u64();
  const std::uint8_t op = r.u8();
  out.queue = r.str16();
  out.flags = r.u8();
  const std::uint16_t count = r.u16();
  if (r.ok() && count > kMaxConfigureSettings)
    return {errc::invalid_argument, "queues: more than 64 settings"};
  for (std::uint16_t i = 0; i < count && r.ok(); ++i) {
    auto name = r.str16();
    auto value = r.str16();
    if (r.ok()) out.settings.emplace_back(name, value);
  }
  if (auto s = finish(r, "queues: truncated"); !s) return s;
  if (op < 1 || op > 4) return {errc::invalid_argument, "queues: unknown operation"};
  out.op = static_cast<QueueOp>(op);
  if ((out.op != QueueOp::list || !out.queue.empty()) && !valid_queue_name(out.queue))
    return {errc::invalid_queue_name,
            "queues: queue name must be 1..200 of [A-Za-z0-9_.:-], and not \".\" or \"..\""};
  if (out.op != QueueOp::create && count != 0)
    return {errc::invalid_argument, "queues: settings go with create only"};
  if ((out.flags & ~kQueuesForce) != 0 || (out.flags != 0 && out.op != QueueOp::remove))
    return {errc::invalid_argument, "queues: force goes with delete only"};
  return {};
}

Status decode_queues_result(std::string_view body, QueuesResult& out) {
  Reader r(body);
  out.entries.clear();
  out.request_id = r.u64();
  out.affected = r.u64();
  std::uint32_t count = 0;
  if (!read_count(r, 15, count)) return malformed("queues_result: truncated");
  out.entries.resize(count);
  for (auto& e : out.entries) {
    e.name = r.str16();
    e.durable = r.u8() != 0;
    e.messages = r.u64();
    e.consumers = r.u32();
  }
  return finish(r, "queues_result: truncated");
}

Status decode_configure(std::string_view body, Configure& out) {
  out.settings.clear();
  Reader r(body);
  out.request_id = r.u64();
  out.queue = r.str16();
  const std::uint16_t count = r.u16();
  if (r.ok() && count > kMaxConfigureSettings)
    return {errc::invalid_argument, "configure: more than 64 settings"};
  for (std::uint16_t i = 0; i < count && r.ok(); ++i) {
    auto name = r.str16();
    auto value = r.str16();
    if (r.ok()) out.settings.emplace_back(name, value);
  }
  if (auto s = finish(r, "configure: truncated"); !s) return s;
  if (!valid_queue_name(out.queue))
    return {errc::invalid_queue_name,
            "configure: queue name must be 1..200 of [A-Za-z0-9_.:-], and not \".\" or \"..\""};
  if (count == 0) return {errc::invalid_argument, "configure: no settings"};
  return {};
}

}  // namespace sluice::protocol
