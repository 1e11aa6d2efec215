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

std::string_view to_string(FrameType type) noexcept {
  switch (type) {
    case FrameType::hello:
      return "hello";
    case FrameType::publish:
      return "publish";
    case FrameType::subscribe:
      return "subscribe";
    case FrameType::unsubscribe:
      return "unsubscribe";
    case FrameType::ack:
      return "ack";
    case FrameType::nack:
      return "nack";
    case FrameType::extend:
      return "extend";
    case FrameType::stats:
      return "stats";
    case FrameType::configure:
      return "configure";
    case FrameType::ping:
      return "ping";
    case FrameType::hello_ok:
      return "hello_ok";
    case FrameType::confirm:
      return "confirm";
    case FrameType::deliver:
      return "deliver";
    case FrameType::ok:
      return "ok";
    case FrameType::settled:
      return "settled";
    case FrameType::stats_result:
      return "stats_result";
    case FrameType::dead_letters:
      return "dead_letters";
    case FrameType::dead_letters_result:
      return "dead_letters_result";
    case FrameType::error:
      return "error";
  }
  return "unknown";
}

// ---------------------------------------------------------------- splitter

FrameDecoder::FrameDecoder(std::uint32_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

std::span<char> FrameDecoder::prepare(std::size_t min_bytes) {
  if (buf_.size() - end_ < min_bytes) {
    // Slide what is left to the front before growing: most of the time a read
    // ends on a frame boundary and nothing needs moving.
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buf_.size() - end_ < min_bytes) buf_.resize(std::max(buf_.size() * 2, end_ + min_bytes));
  }
  return {buf_.data() + end_, buf_.size() - end_};
}

void FrameDecoder::feed(std::string_view bytes) {
  auto space = prepare(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

FrameDecoder::Result FrameDecoder::next(Frame& frame, errc& error_code) noexcept {
  const std::size_t available = end_ - begin_;
  if (available < 4) return Result::need_more;
  std::uint32_t length;
  std::memcpy(&length, buf_.data() + begin_, 4);
  if (length == 0) {
    error_code = errc::malformed_frame;
    return Result::error;
  }
  if (length > max_frame_bytes_) {
    error_code = errc::frame_too_large;
    return Result::error;
  }
  if (available - 4 < length) return Result::need_more;
  frame.type = static_cast<std::uint8_t>(buf_[begin_ + 4]);
  frame.body = std::string_view(buf_.data() + begin_ + kFrameHeaderBytes, length - 1);
  begin_ += 4 + std::size_t{length};
  if (begin_ == end_) begin_ = end_ = 0;  // cheap reset keeps the next read at the front
  return Result::frame;
}

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

Status read_system_headers(const MessageParts& parts, SystemHeaders& out) noexcept {
  out = {};
  Status status;
  for_each_header(parts, [&](const Header& h) {
    if (!status || h.key.size() < 7 || h.key.compare(0, 7, "sluice-") != 0) return;
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
