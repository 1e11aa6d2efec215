// The frame encoders and result writers.
#include "sluice/protocol/codec.hpp"

#include <algorithm>
#include <cstring>

#include "sluice/protocol/wire.hpp"

namespace sluice::protocol {

// ---------------------------------------------------------------- encoders

std::size_t begin_frame(std::string& out, FrameType type) {
  const std::size_t offset = out.size();
  put::u32(out, 0);
  put::u8(out, static_cast<std::uint8_t>(type));
  return offset;
}

void end_frame(std::string& out, std::size_t frame_offset) {
  put::patch_u32(out, frame_offset, static_cast<std::uint32_t>(out.size() - frame_offset - 4));
}

void encode_hello(std::string& out, const Hello& hello) {
  auto f = begin_frame(out, FrameType::hello);
  put::u16(out, hello.min_version);
  put::u16(out, hello.max_version);
  put::str16(out, hello.client_name.substr(0, 255));
  put::str16(out, hello.token.substr(0, 4096));
  end_frame(out, f);
}

void encode_hello_ok(std::string& out, const HelloOk& ok) {
  auto f = begin_frame(out, FrameType::hello_ok);
  put::u16(out, ok.version);
  put::u32(out, ok.max_frame_bytes);
  put::u32(out, ok.max_payload_bytes);
  put::str16(out, ok.server_name);
  end_frame(out, f);
}

void encode_message(std::string& out, std::span<const Header> headers, std::string_view payload) {
  put::u8(out, 0);  // no message properties are defined in version 1
  put::u16(out, static_cast<std::uint16_t>(headers.size()));
  for (const auto& h : headers) {
    put::str16(out, h.key);
    put::str16(out, h.value);
  }
  put::bytes32(out, payload);
}

PublishFrame begin_publish(std::string& out, std::uint64_t request_id, std::string_view queue) {
  PublishFrame f;
  f.frame_offset = begin_frame(out, FrameType::publish);
  put::u64(out, request_id);
  put::str16(out, queue);
  f.count_offset = out.size();
  put::u32(out, 0);
  return f;
}

void end_publish(std::string& out, const PublishFrame& frame, std::uint32_t count) {
  put::patch_u32(out, frame.count_offset, count);
  end_frame(out, frame.frame_offset);
}

void encode_confirm(std::string& out, std::uint64_t request_id, std::uint8_t pressure,
                    std::span<const std::uint64_t> ids, std::span<const std::uint32_t> duplicates) {
  auto f = begin_frame(out, FrameType::confirm);
  put::u64(out, request_id);
  put::u8(out, pressure);
  put::u32(out, static_cast<std::uint32_t>(ids.size()));
  for (auto id : ids) put::u64(out, id);
  put::u32(out, static_cast<std::uint32_t>(duplicates.size()));
  for (auto index : duplicates) put::u32(out, index);
  end_frame(out, f);
}

void encode_dead_letters(std::string& out, const DeadLetterRequest& request) {
  auto f = begin_frame(out, FrameType::dead_letters);
  put::u64(out, request.request_id);
  put::u8(out, static_cast<std::uint8_t>(request.op));
  put::str16(out, request.queue);
  put::u8(out, request.flags);
  put::u32(out, request.limit);
  put::u64(out, request.after);
  put::u32(out, static_cast<std::uint32_t>(request.ids.size()));
  for (auto id : request.ids) put::u64(out, id);
  put::u64(out, request.min_age_ms);
  put::u64(out, request.max_age_ms);
  put::str16(out, request.reason.substr(0, kMaxReasonBytes));
  put::u32(out, request.rate_milli);
  end_frame(out, f);
}

void encode_triggers(std::string& out, const TriggerRequest& request) {
  auto f = begin_frame(out, FrameType::triggers);
  put::u64(out, request.request_id);
  put::u8(out, static_cast<std::uint8_t>(request.op));
  put::str16(out, request.name);
  put::bytes32(out, request.body);
  end_frame(out, f);
}

void encode_triggers_result(std::string& out, const TriggerResult& result) {
  auto f = begin_frame(out, FrameType::triggers_result);
  put::u64(out, result.request_id);
  put::u32(out, static_cast<std::uint32_t>(result.entries.size()));
  for (const TriggerEntry& e : result.entries) {
    put::str16(out, e.name);
    put::str16(out, e.queue);
    put::str16(out, e.url);
    put::u8(out, e.paused ? 1 : 0);
    put::u8(out, e.breaker);
    put::u8(out, e.adaptive ? 1 : 0);
    put::u32(out, e.limit);
    put::u32(out, e.in_flight);
    put::u64(out, e.messages_sent);
    put::u8(out, static_cast<std::uint8_t>(std::min<std::size_t>(e.invocations.size(), 255)));
    for (std::size_t i = 0; i < e.invocations.size() && i < 255; ++i)
      put::u64(out, e.invocations[i]);
  }
  put::u8(out, result.invoked ? 1 : 0);
  if (result.invoked) {
    const TriggerInvocation& i = result.invocation;
    put::u8(out, i.outcome);
    put::u16(out, i.status);
    put::u64(out, i.took_us);
    put::str16(out, i.error.substr(0, kMaxReasonBytes));
    put::bytes32(out, i.body.substr(0, kMaxInvokeAnswerBytes));
  }
  end_frame(out, f);
}

void encode_queues(std::string& out, const QueuesRequest& request) {
  auto f = begin_frame(out, FrameType::queues);
  put::u64(out, request.request_id);
  put::u8(out, static_cast<std::uint8_t>(request.op));
  put::str16(out, request.queue);
  put::u8(out, request.flags);
  put::u16(out, static_cast<std::uint16_t>(request.settings.size()));
  for (const auto& [name, value] : request.settings) {
    put::str16(out, name);
    put::str16(out, value);
  }
  end_frame(out, f);
}

void encode_queues_result(std::string& out, const QueuesResult& result) {
  auto f = begin_frame(out, FrameType::queues_result);
  put::u64(out, result.request_id);
  put::u64(out, result.affected);
  put::u32(out, static_cast<std::uint32_t>(result.entries.size()));
  for (const QueueEntry& e : result.entries) {
    put::str16(out, e.name);
    put::u8(out, e.durable ? 1 : 0);
    put::u64(out, e.messages);
    put::u32(out, e.consumers);
  }
  end_frame(out, f);
}

DeadLettersResultWriter::DeadLettersResultWriter(std::string& out, std::uint64_t request_id)
    : out_(out) {
  frame_offset_ = begin_frame(out_, FrameType::dead_letters_result);
  put::u64(out_, request_id);
  totals_offset_ = out_.size();
  put::u64(out_, 0);
  put::u64(out_, 0);
  count_offset_ = out_.size();
  put::u32(out_, 0);
}

void DeadLettersResultWriter::add(const DeadLetterEntry& e) {
  put::u64(out_, e.entry_id);
  put::u64(out_, e.message_id);
  put::str16(out_, e.queue);
  put::u32(out_, e.attempts);
  put::u64(out_, e.publish_time_us);
  put::u64(out_, e.first_failure_us);
  put::u64(out_, e.last_failure_us);
  put::str16(out_, e.reason.substr(0, kMaxReasonBytes));
  put::bytes32(out_, e.message);
  ++count_;
}

std::size_t DeadLettersResultWriter::entry_bytes(const DeadLetterEntry& e) noexcept {
  return 8 + 8 + 2 + e.queue.size() + 4 + 8 + 8 + 8 + 2 +
         std::min(e.reason.size(), kMaxReasonBytes) + 4 + e.message.size();
}

void DeadLettersResultWriter::finish(std::uint64_t affected, std::uint64_t next_after) {
  std::memcpy(out_.data() + totals_offset_, &affected, 8);
  std::memcpy(out_.data() + totals_offset_ + 8, &next_after, 8);
  put::patch_u32(out_, count_offset_, count_);
  end_frame(out_, frame_offset_);
}

void encode_subscribe(std::string& out, const Subscribe& s) {
  auto f = begin_frame(out, FrameType::subscribe);
  put::u64(out, s.request_id);
  put::u32(out, s.subscription_id);
  put::str16(out, s.queue);
  put::u32(out, s.max_in_flight);
  put::u32(out, s.lease_ms);
  put::u32(out, s.rate_milli);
  put::u32(out, s.burst);
  end_frame(out, f);
}

void encode_unsubscribe(std::string& out, const Unsubscribe& u) {
  auto f = begin_frame(out, FrameType::unsubscribe);
  put::u64(out, u.request_id);
  put::u32(out, u.subscription_id);
  end_frame(out, f);
}

void encode_ack(std::string& out, std::uint64_t request_id, std::span<const AckEntry> entries) {
  auto f = begin_frame(out, FrameType::ack);
  put::u64(out, request_id);
  put::u32(out, static_cast<std::uint32_t>(entries.size()));
  for (const auto& e : entries) {
    put::u64(out, e.message_id);
    put::u64(out, e.lease_token);
  }
  end_frame(out, f);
}

void encode_nack(std::string& out, std::uint64_t request_id, std::span<const NackEntry> entries) {
  auto f = begin_frame(out, FrameType::nack);
  put::u64(out, request_id);
  put::u32(out, static_cast<std::uint32_t>(entries.size()));
  for (const auto& e : entries) {
    put::u64(out, e.message_id);
    put::u64(out, e.lease_token);
    put::u32(out, e.delay_ms);
    put::u8(out, e.flags);
    put::str16(out, e.reason.substr(0, kMaxReasonBytes));
  }
  end_frame(out, f);
}

void encode_extend(std::string& out, std::uint64_t request_id,
                   std::span<const ExtendEntry> entries) {
  auto f = begin_frame(out, FrameType::extend);
  put::u64(out, request_id);
  put::u32(out, static_cast<std::uint32_t>(entries.size()));
  for (const auto& e : entries) {
    put::u64(out, e.message_id);
    put::u64(out, e.lease_token);
    put::u32(out, e.lease_ms);
  }
  end_frame(out, f);
}

void encode_settled(std::string& out, std::uint64_t request_id,
                    std::span<const SettleFailure> failures) {
  auto f = begin_frame(out, FrameType::settled);
  put::u64(out, request_id);
  put::u32(out, static_cast<std::uint32_t>(failures.size()));
  for (const auto& e : failures) {
    put::u64(out, e.message_id);
    put::u16(out, static_cast<std::uint16_t>(e.code));
  }
  end_frame(out, f);
}

void encode_ok(std::string& out, std::uint64_t request_id) {
  auto f = begin_frame(out, FrameType::ok);
  put::u64(out, request_id);
  end_frame(out, f);
}

void encode_ping(std::string& out, std::uint64_t request_id) {
  auto f = begin_frame(out, FrameType::ping);
  put::u64(out, request_id);
  end_frame(out, f);
}

void encode_stats(std::string& out, const StatsRequest& request) {
  auto f = begin_frame(out, FrameType::stats);
  put::u64(out, request.request_id);
  put::str16(out, request.queue);
  end_frame(out, f);
}

void encode_configure(std::string& out, const Configure& request) {
  auto f = begin_frame(out, FrameType::configure);
  put::u64(out, request.request_id);
  put::str16(out, request.queue);
  put::u16(out, static_cast<std::uint16_t>(request.settings.size()));
  for (const auto& [name, value] : request.settings) {
    put::str16(out, name);
    put::str16(out, value);
  }
  end_frame(out, f);
}

void encode_error(std::string& out, std::uint64_t request_id, errc code, std::string_view message,
                  std::uint32_t retry_after_ms) {
  auto f = begin_frame(out, FrameType::error);
  put::u64(out, request_id);
  put::u16(out, static_cast<std::uint16_t>(code));
  put::str16(out, message.substr(0, 1024));
  put::u32(out, retry_after_ms);
  end_frame(out, f);
}

void DeliverFrameWriter::open(std::string& out, std::uint32_t subscription_id) {
  offset_ = begin_frame(out, FrameType::deliver);
  subscription_id_ = subscription_id;
  count_ = 0;
  put::u32(out, subscription_id);
  put::u32(out, 0);
  end_frame(out, offset_);
}

void DeliverFrameWriter::add(std::string& out, const Delivery& d) {
  put::u64(out, d.message_id);
  put::u64(out, d.lease_token);
  put::u32(out, d.attempt);
  put::u64(out, d.publish_time_us);
  out.append(d.message);
  put::patch_u32(out, offset_ + kFrameHeaderBytes + 4, ++count_);
  end_frame(out, offset_);
}

StatsResultWriter::StatsResultWriter(std::string& out, std::uint64_t request_id) : out_(out) {
  frame_offset_ = begin_frame(out_, FrameType::stats_result);
  put::u64(out_, request_id);
  count_offset_ = out_.size();
  put::u32(out_, 0);
}

void StatsResultWriter::add_queue(std::string_view name,
                                  std::span<const std::pair<StatField, std::uint64_t>> fields) {
  put::str16(out_, name);
  put::u16(out_, static_cast<std::uint16_t>(fields.size()));
  for (const auto& [field, value] : fields) {
    put::u16(out_, static_cast<std::uint16_t>(field));
    put::u64(out_, value);
  }
  ++count_;
}

void StatsResultWriter::finish() {
  put::patch_u32(out_, count_offset_, count_);
  end_frame(out_, frame_offset_);
}

}  // namespace sluice::protocol
