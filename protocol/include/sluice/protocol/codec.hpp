// The frame codec: an incremental frame splitter plus one decoder and one
// encoder per frame type. Pure: bytes in, values or a typed error out. Decoders
// never read outside their input and allocate only into caller-owned vectors
// (reused across calls, so the steady state allocates nothing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/protocol/frames.hpp"

namespace sluice::protocol {

/// Splits a byte stream into frames. Feed it bytes (in any pieces, down to one
/// at a time) and pull complete frames with `next`. Checks the length prefix
/// against the maximum before buffering a frame, so memory stays below
/// max_frame_bytes + one read. Not thread-safe.
class FrameDecoder {
 public:
  enum class Result { frame, need_more, error };

  explicit FrameDecoder(std::uint32_t max_frame_bytes = kDefaultMaxFrameBytes);

  /// Writable space of at least `min_bytes` at the end of the buffer. Invalidates
  /// the views of frames returned earlier.
  std::span<char> prepare(std::size_t min_bytes);
  /// Marks `n` bytes written into the span from `prepare` as received.
  void commit(std::size_t n) noexcept { end_ += n; }
  /// Copies `bytes` in (prepare + commit).
  void feed(std::string_view bytes);

  /// The next complete frame, `need_more`, or `error` with `error_code` set to
  /// frame_too_large (length over the limit) or malformed_frame (length 0).
  /// After an error the stream has no trustworthy framing: stop reading.
  Result next(Frame& frame, errc& error_code) noexcept;

  /// Bytes received but not yet returned as frames.
  std::size_t buffered() const noexcept { return end_ - begin_; }
  std::uint32_t max_frame_bytes() const noexcept { return max_frame_bytes_; }

 private:
  std::vector<char> buf_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::uint32_t max_frame_bytes_;
};

// ---- encoders: each appends one complete frame to `out` ----

/// Starts a frame of `type`; returns the offset to give `end_frame`.
std::size_t begin_frame(std::string& out, FrameType type);
/// Patches the length prefix of the frame started at `frame_offset`.
void end_frame(std::string& out, std::size_t frame_offset);

void encode_hello(std::string& out, const Hello& hello);
void encode_hello_ok(std::string& out, const HelloOk& ok);
/// Appends one message's encoding (not a frame); used inside PUBLISH frames.
/// Headers beyond the protocol limits are the caller's error (check them
/// first: parse_message and check_header_limits read what this writes).
void encode_message(std::string& out, std::span<const Header> headers, std::string_view payload);
/// Starts a PUBLISH frame; append `count` messages with encode_message, then
/// patch the count at the returned offset and call end_frame.
struct PublishFrame {
  std::size_t frame_offset;
  std::size_t count_offset;
};
PublishFrame begin_publish(std::string& out, std::uint64_t request_id, std::string_view queue);
void end_publish(std::string& out, const PublishFrame& frame, std::uint32_t count);
/// `duplicates`: indexes (into `ids`) of messages confirmed but not enqueued again.
void encode_confirm(std::string& out, std::uint64_t request_id, std::uint8_t pressure,
                    std::span<const std::uint64_t> ids,
                    std::span<const std::uint32_t> duplicates = {});
void encode_dead_letters(std::string& out, const DeadLetterRequest& request);
void encode_triggers(std::string& out, const TriggerRequest& request);
void encode_triggers_result(std::string& out, const TriggerResult& result);
void encode_queues(std::string& out, const QueuesRequest& request);
void encode_queues_result(std::string& out, const QueuesResult& result);
void encode_subscribe(std::string& out, const Subscribe& subscribe);
void encode_unsubscribe(std::string& out, const Unsubscribe& unsubscribe);
void encode_ack(std::string& out, std::uint64_t request_id, std::span<const AckEntry> entries);
void encode_nack(std::string& out, std::uint64_t request_id, std::span<const NackEntry> entries);
void encode_extend(std::string& out, std::uint64_t request_id,
                   std::span<const ExtendEntry> entries);
void encode_settled(std::string& out, std::uint64_t request_id,
                    std::span<const SettleFailure> failures);
void encode_ok(std::string& out, std::uint64_t request_id);
void encode_ping(std::string& out, std::uint64_t request_id);
void encode_stats(std::string& out, const StatsRequest& request);
void encode_configure(std::string& out, const Configure& request);
/// `retry_after_ms`: with queue_full, when trying again is worthwhile (0: not said).
void encode_error(std::string& out, std::uint64_t request_id, errc code, std::string_view message,
                  std::uint32_t retry_after_ms = 0);

/// Builds a DELIVER frame one delivery at a time. The body is
/// `u32 subscription_id, u32 count, deliveries…`; `add` patches count and length
/// in place so a frame can keep growing while it is the last thing in `out`.
class DeliverFrameWriter {
 public:
  /// Starts a new frame for `subscription_id` at the end of `out`.
  void open(std::string& out, std::uint32_t subscription_id);
  void add(std::string& out, const Delivery& delivery);
  std::size_t frame_bytes(const std::string& out) const noexcept { return out.size() - offset_; }
  std::uint32_t subscription_id() const noexcept { return subscription_id_; }

 private:
  std::size_t offset_ = 0;
  std::uint32_t subscription_id_ = 0;
  std::uint32_t count_ = 0;
};

/// Builds a STATS_RESULT frame.
class StatsResultWriter {
 public:
  StatsResultWriter(std::string& out, std::uint64_t request_id);
  void add_queue(std::string_view name,
                 std::span<const std::pair<StatField, std::uint64_t>> fields);
  void finish();

 private:
  std::string& out_;
  std::size_t frame_offset_;
  std::size_t count_offset_;
  std::uint32_t count_ = 0;
};

/// Builds a DEAD_LETTERS_RESULT frame.
class DeadLettersResultWriter {
 public:
  DeadLettersResultWriter(std::string& out, std::uint64_t request_id);
  void add(const DeadLetterEntry& entry);
  /// What `add(entry)` would append, in bytes (to stay under the frame limit).
  static std::size_t entry_bytes(const DeadLetterEntry& entry) noexcept;
  void finish(std::uint64_t affected, std::uint64_t next_after);

 private:
  std::string& out_;
  std::size_t frame_offset_;
  std::size_t totals_offset_;
  std::size_t count_offset_;
  std::uint32_t count_ = 0;
};

// ---- decoders: `body` is Frame::body (the bytes after the type byte) ----

Status decode_hello(std::string_view body, Hello& out) noexcept;
Status decode_hello_ok(std::string_view body, HelloOk& out) noexcept;
/// Validates every message against the grammar and `limits`, and appends each
/// message's raw encoding to `messages` (cleared first).
Status decode_publish(std::string_view body, const Limits& limits, Publish& out,
                      std::vector<std::string_view>& messages);
Status decode_confirm(std::string_view body, Confirm& out) noexcept;
Status decode_subscribe(std::string_view body, Subscribe& out) noexcept;
Status decode_unsubscribe(std::string_view body, Unsubscribe& out) noexcept;
Status decode_ack(std::string_view body, std::uint64_t& request_id, std::vector<AckEntry>& out);
Status decode_nack(std::string_view body, std::uint64_t& request_id, std::vector<NackEntry>& out);
Status decode_extend(std::string_view body, std::uint64_t& request_id,
                     std::vector<ExtendEntry>& out);
Status decode_settled(std::string_view body, std::uint64_t& request_id,
                      std::vector<SettleFailure>& out);
Status decode_ok(std::string_view body, std::uint64_t& request_id) noexcept;
Status decode_ping(std::string_view body, std::uint64_t& request_id) noexcept;
Status decode_deliver(std::string_view body, std::uint32_t& subscription_id,
                      std::vector<Delivery>& out);
Status decode_stats(std::string_view body, StatsRequest& out) noexcept;
Status decode_configure(std::string_view body, Configure& out);
Status decode_stats_result(std::string_view body, std::uint64_t& request_id,
                           std::vector<QueueStatsView>& out);
Status decode_error(std::string_view body, ErrorFrame& out) noexcept;
Status decode_dead_letters(std::string_view body, DeadLetterRequest& out);
Status decode_dead_letters_result(std::string_view body, DeadLetterResult& out);
Status decode_triggers(std::string_view body, TriggerRequest& out) noexcept;
Status decode_triggers_result(std::string_view body, TriggerResult& out);
Status decode_queues(std::string_view body, QueuesRequest& out);
Status decode_queues_result(std::string_view body, QueuesResult& out);
/// Reads the sluice-* headers of a parsed message, and its key: the first
/// non-empty value of a header named `key_header` ("" : no key). invalid_argument when one is
/// malformed.
Status read_system_headers(const MessageParts& parts, SystemHeaders& out,
                           std::string_view key_header = {}) noexcept;

/// Checks one message encoding (as stored or delivered) and splits it into parts.
Status parse_message(std::string_view raw, MessageParts& out) noexcept;
/// A parsed message against the broker's header limits: invalid_argument for
/// more than limits.max_headers headers, or keys and values together over
/// limits.max_header_bytes.
Status check_header_limits(const MessageParts& parts, const Limits& limits) noexcept;
/// Calls `fn(Header)` for each header of a message parsed by parse_message.
template <typename Fn>
void for_each_header(const MessageParts& parts, Fn&& fn);

/// The queue-name rule in words, for every error that refuses a name.
inline constexpr std::string_view kQueueNameRule =
    "1..200 of [A-Za-z0-9_.:-], and not \".\" or \"..\"";
/// True when `name` is 1..200 bytes of [A-Za-z0-9_.:-] and not "." or ".."
/// (a URL path normaliser would change those: HTTP could never reach them).
bool valid_queue_name(std::string_view name) noexcept;

}  // namespace sluice::protocol

#include "sluice/protocol/wire.hpp"

template <typename Fn>
void sluice::protocol::for_each_header(const MessageParts& parts, Fn&& fn) {
  Reader r(parts.headers);
  for (std::uint16_t i = 0; i < parts.header_count; ++i) {
    Header h;
    h.key = r.str16();
    h.value = r.str16();
    if (!r.ok()) return;
    fn(h);
  }
}
