// Frame types, limits and the decoded (view) form of every frame of the Sluice
// wire protocol, version 1. PROTOCOL.md beside this folder is the spec; this
// header mirrors it. Pure: no I/O, no threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/protocol/errc.hpp"

namespace sluice::protocol {

inline constexpr std::uint16_t kProtocolVersion = 1;
/// u32 length + u8 type. The length counts the type byte and the body.
inline constexpr std::size_t kFrameHeaderBytes = 5;
inline constexpr std::uint32_t kDefaultMaxFrameBytes = 4u << 20;
inline constexpr std::uint32_t kDefaultMaxPayloadBytes = 1u << 20;
inline constexpr std::size_t kMaxQueueNameBytes = 200;
inline constexpr std::uint16_t kMaxHeaders = 64;
inline constexpr std::size_t kMaxHeaderKeyBytes = 255;
inline constexpr std::size_t kMaxHeaderValueBytes = 16384;
inline constexpr std::size_t kMaxReasonBytes = 1024;
/// Rates on the wire are thousandths of a message per second: 0.1/s is 100.
inline constexpr std::uint32_t kMinRateMilli = 100;

enum class FrameType : std::uint8_t {
  // client → broker
  hello = 0x01,
  publish = 0x10,
  subscribe = 0x20,
  unsubscribe = 0x21,
  ack = 0x30,
  nack = 0x31,
  extend = 0x32,
  stats = 0x40,
  configure = 0x41,
  dead_letters = 0x42,
  triggers = 0x43,
  queues = 0x44,
  ping = 0x50,
  // broker → client
  hello_ok = 0x81,
  confirm = 0x90,
  deliver = 0xA1,
  ok = 0xB1,
  settled = 0xB0,
  stats_result = 0xC0,
  dead_letters_result = 0xC1,
  triggers_result = 0xC2,
  queues_result = 0xC3,
  error = 0xF0,
};

/// Name of a frame type for logs ("publish"), or "unknown".
std::string_view to_string(FrameType type) noexcept;

/// Limits a decoder enforces beyond the frame grammar.
struct Limits {
  std::uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  std::uint32_t max_payload_bytes = kDefaultMaxPayloadBytes;
  /// Headers per message, at most kMaxHeaders (limits.max_headers).
  std::uint16_t max_headers = kMaxHeaders;
  /// The bytes of one message's header keys and values together (limits.max_header_bytes).
  std::uint32_t max_header_bytes = 64 * 1024;
};

/// Outcome of decoding one frame body: `ok` or a typed error with a static,
/// human-readable detail (never allocated, safe to keep).
struct Status {
  errc code = errc::ok;
  const char* detail = "";
  explicit operator bool() const noexcept { return code == errc::ok; }
};

/// One frame as it came off the wire; `body` points into the decoder's buffer.
struct Frame {
  std::uint8_t type = 0;
  std::string_view body;
};

// ---- decoded views. string_views point into the frame body. ----

struct Hello {
  std::uint16_t min_version = kProtocolVersion;
  std::uint16_t max_version = kProtocolVersion;
  std::string_view client_name;
  std::string_view token;  // empty: no credentials
};

struct HelloOk {
  std::uint16_t version = kProtocolVersion;
  std::uint32_t max_frame_bytes = 0;
  std::uint32_t max_payload_bytes = 0;
  std::string_view server_name;
};

/// One message header (user metadata).
struct Header {
  std::string_view key;
  std::string_view value;
};

/// A publish frame. `messages` receives each message's raw encoding (what the
/// broker stores and later sends back verbatim in DELIVER).
struct Publish {
  std::uint64_t request_id = 0;
  std::string_view queue;
};

struct Confirm {
  std::uint64_t request_id = 0;
  std::uint8_t pressure = 0;  // 0..100: how full the queue is, in percent
  std::uint32_t count = 0;
  std::string_view ids;  // count × u64; read with message_id(i)
  std::uint32_t duplicate_count = 0;
  std::string_view duplicates;  // duplicate_count × u32: indexes of messages not enqueued again
  std::uint64_t message_id(std::uint32_t i) const noexcept;
  /// The index of the `i`-th duplicate among the frame's messages.
  std::uint32_t duplicate_index(std::uint32_t i) const noexcept;
};

struct Subscribe {
  std::uint64_t request_id = 0;
  std::uint32_t subscription_id = 0;
  std::string_view queue;
  std::uint32_t max_in_flight = 0;  // the consumer's credit: most unacked deliveries it holds
  std::uint32_t lease_ms = 0;       // 0: the queue's lease timeout
  std::uint32_t rate_milli = 0;     // the consumer's own rate, 1/1000 msg/s; 0: none
  std::uint32_t burst = 1;          // with rate_milli: most deliveries at once
};

struct Unsubscribe {
  std::uint64_t request_id = 0;
  std::uint32_t subscription_id = 0;
};

/// ACK or NACK request id 0: a quiet settle, answered only by a SETTLED
/// (request id 0) listing the entries refused, never by an empty one.
inline constexpr std::uint64_t kQuietSettle = 0;

struct AckEntry {
  std::uint64_t message_id = 0;
  std::uint64_t lease_token = 0;
};

/// NACK flag: move the message to the dead-letter queue now.
inline constexpr std::uint8_t kNackDeadLetter = 0x01;

struct NackEntry {
  std::uint64_t message_id = 0;
  std::uint64_t lease_token = 0;
  std::uint32_t delay_ms = 0;  // redeliver no sooner than this
  std::uint8_t flags = 0;
  std::string_view reason;
};

struct ExtendEntry {
  std::uint64_t message_id = 0;
  std::uint64_t lease_token = 0;
  std::uint32_t lease_ms = 0;  // new lease, counted from now
};

/// One entry of a SETTLED frame: an ack, nack or extend that was refused.
struct SettleFailure {
  std::uint64_t message_id = 0;
  errc code = errc::ok;
};

/// One delivery inside a DELIVER frame.
struct Delivery {
  std::uint64_t message_id = 0;
  std::uint64_t lease_token = 0;
  std::uint32_t attempt = 0;          // 1 on first delivery
  std::uint64_t publish_time_us = 0;  // broker wall clock at publish, µs since the Unix epoch
  std::string_view message;           // raw message encoding; see parse_message
};

// Headers the broker reads (user headers otherwise pass through untouched).
/// The ordering / per-key-rate key when the queue's key_header is left at its default.
inline constexpr std::string_view kKeyHeader = "sluice-key";
/// A producer's id for a publish: a repeat within the queue's dedup_window is
/// confirmed with the first message's id and not enqueued again. 1..255 bytes.
inline constexpr std::string_view kDedupHeader = "sluice-dedup-id";
/// Resequencing: the message's sequence number within its key, decimal, from 1.
inline constexpr std::string_view kSequenceHeader = "sluice-seq";
/// Delayed delivery: not before this many milliseconds from now (decimal).
inline constexpr std::string_view kDelayHeader = "sluice-delay-ms";
/// Delayed delivery: not before this Unix time in milliseconds (decimal).
inline constexpr std::string_view kNotBeforeHeader = "sluice-not-before-ms";
/// Travels with the message into deliveries, dead letters and log lines.
inline constexpr std::string_view kCorrelationHeader = "sluice-correlation-id";
inline constexpr std::size_t kMaxDedupIdBytes = 255;
/// Longest delay a publish may ask for: 30 days.
inline constexpr std::uint64_t kMaxDelayMs = 30ull * 24 * 3600 * 1000;
/// Largest sluice-not-before-ms the decoder takes (2100-01-01); the broker
/// also refuses one more than kMaxDelayMs ahead of its clock.
inline constexpr std::uint64_t kMaxNotBeforeMs = 4'102'444'800'000;

/// A message's parts, parsed from its raw encoding.
struct MessageParts {
  std::string_view headers;  // raw; iterate with for_each_header
  std::uint16_t header_count = 0;
  std::string_view payload;
};

/// CONFIGURE: settings of one queue by name (as in the config file's [queues.NAME]).
struct Configure {
  std::uint64_t request_id = 0;
  std::string_view queue;
  std::vector<std::pair<std::string_view, std::string_view>> settings;  // name, value
};
inline constexpr std::uint16_t kMaxConfigureSettings = 64;

/// What the broker reads from a message's sluice-* headers, and its ordering
/// key (the value of the queue's key header). Views into the message.
struct SystemHeaders {
  std::string_view key;       // empty: none
  std::string_view dedup_id;  // empty: none
  std::string_view correlation_id;
  bool has_sequence = false;
  std::uint64_t sequence = 0;
  std::uint64_t delay_ms = 0;       // 0: none
  std::uint64_t not_before_ms = 0;  // Unix ms; 0: none
};

/// DEAD_LETTERS: one operation on a queue's dead-letter queue.
enum class DeadLetterOp : std::uint8_t { list = 1, show = 2, redrive = 3, remove = 4, purge = 5 };
inline constexpr std::uint8_t kDeadLettersNewestFirst = 0x01;
inline constexpr std::uint32_t kMaxDeadLetterIds = 10000;

struct DeadLetterRequest {
  std::uint64_t request_id = 0;
  DeadLetterOp op = DeadLetterOp::list;
  std::string_view queue;
  std::uint8_t flags = 0;          // kDeadLettersNewestFirst (list)
  std::uint32_t limit = 0;         // list: entries per page (0: 100)
  std::uint64_t after = 0;         // list: continue after this entry id (0: from the start)
  std::vector<std::uint64_t> ids;  // show: one; redrive/remove: these (none: by the filter)
  std::uint64_t min_age_ms = 0;    // filter: dead-lettered at least this long ago (0: any)
  std::uint64_t max_age_ms = 0;    // filter: dead-lettered at most this long ago (0: any)
  std::string_view reason;         // filter: the last reason contains this ("" : any)
  std::uint32_t rate_milli = 0;    // redrive: messages per second, 1/1000 (0: as fast as it can)
};

/// One dead-letter entry as DEAD_LETTERS_RESULT carries it.
struct DeadLetterEntry {
  std::uint64_t entry_id = 0;  // the DLQ's own id (increasing: dead-letter order)
  std::uint64_t message_id = 0;
  std::string_view queue;  // the origin queue
  std::uint32_t attempts = 0;
  std::uint64_t publish_time_us = 0;  // Unix µs
  std::uint64_t first_failure_us = 0;
  std::uint64_t last_failure_us = 0;
  std::string_view reason;
  std::string_view message;  // raw message encoding (headers and payload)
};

struct DeadLetterResult {
  std::uint64_t request_id = 0;
  std::uint64_t affected = 0;    // list: entries in the DLQ; redrive/remove/purge: entries acted on
  std::uint64_t next_after = 0;  // list: the cursor of the next page (0: no more)
  std::vector<DeadLetterEntry> entries;
};

/// TRIGGERS: look at or steer the broker's triggers ([triggers.NAME] in its config).
enum class TriggerOp : std::uint8_t { list = 1, pause = 2, resume = 3, invoke = 4 };
inline constexpr std::size_t kMaxTriggerNameBytes = 100;
/// A test invocation's answer body is cut to this many bytes in TRIGGERS_RESULT.
inline constexpr std::size_t kMaxInvokeAnswerBytes = 64 * 1024;

struct TriggerRequest {
  std::uint64_t request_id = 0;
  TriggerOp op = TriggerOp::list;
  std::string_view name;  // list: "" = every trigger the caller may administer
  std::string_view body;  // invoke: the request body sent to the function
};

/// Invocation outcomes, in the order TRIGGERS_RESULT counts them.
inline constexpr std::size_t kTriggerOutcomes = 6;  // ok, failed, throttled, timeout,
                                                    // connect_error, dead_lettered
struct TriggerEntry {
  std::string_view name;
  std::string_view queue;
  std::string_view url;
  bool paused = false;
  std::uint8_t breaker = 0;  // 0 closed, 1 open, 2 half-open
  bool adaptive = false;
  std::uint32_t limit = 0;  // the concurrency limit now
  std::uint32_t in_flight = 0;
  std::uint64_t messages_sent = 0;
  std::vector<std::uint64_t> invocations;  // by outcome (a newer broker may send more)
};

/// The answer of a test invocation (TRIGGERS op invoke).
struct TriggerInvocation {
  std::uint8_t outcome = 0;  // 0 answered, 1 timeout, 2 connect_error, 3 broken
  std::uint16_t status = 0;  // answered: the HTTP status
  std::uint64_t took_us = 0;
  std::string_view error;  // not answered: what went wrong
  std::string_view body;   // answered: the body, at most kMaxInvokeAnswerBytes
};

struct TriggerResult {
  std::uint64_t request_id = 0;
  std::vector<TriggerEntry> entries;
  bool invoked = false;  // invocation holds a test invocation's answer
  TriggerInvocation invocation;
};

/// QUEUES: an operator's queue lifecycle.
enum class QueueOp : std::uint8_t { list = 1, create = 2, remove = 3, purge = 4 };
inline constexpr std::uint8_t kQueuesForce = 0x01;  // delete: what it holds goes too

struct QueuesRequest {
  std::uint64_t request_id = 0;
  QueueOp op = QueueOp::list;
  std::string_view queue;  // list: "" = every queue the caller may see
  std::uint8_t flags = 0;  // kQueuesForce (delete)
  std::vector<std::pair<std::string_view, std::string_view>> settings;  // create: name, value
};

/// One queue as QUEUES_RESULT lists it.
struct QueueEntry {
  std::string_view name;
  bool durable = false;
  std::uint64_t messages = 0;  // in any state
  std::uint32_t consumers = 0;
};

struct QueuesResult {
  std::uint64_t request_id = 0;
  std::uint64_t affected = 0;       // create: 1; delete, purge: the messages that went
  std::vector<QueueEntry> entries;  // list: the queues; create: the new one
};

struct StatsRequest {
  std::uint64_t request_id = 0;
  std::string_view queue;  // empty: every queue
};

/// Field ids inside a STATS_RESULT entry. Clients skip ids they do not know.
enum class StatField : std::uint16_t {
  ready = 1,
  delayed = 2,
  in_flight = 3,
  consumers = 4,
  published_total = 5,
  delivered_total = 6,
  acked_total = 7,
  nacked_total = 8,
  expired_total = 9,
  bytes = 10,          // encoded bytes of the messages held
  pressure = 11,       // 0..100, as in CONFIRM
  refused_total = 12,  // publishes refused with queue_full
  blocked_total = 13,  // times a publishing connection was blocked
  staged = 14,         // durable publishes waiting for their commit
  held = 15,           // held by the resequencer, waiting for an earlier sequence number
  retried_total = 16,  // failed attempts that were retried (nack, lease expiry, consumer gone)
  dead_lettered_total = 17,
  duplicates_total = 18,     // publishes not enqueued again (dedup id or sequence number seen)
  dedup_evicted_total = 19,  // dedup entries dropped before their window ended (ledger full)
  sequence_gaps_total = 20,  // resequencer gaps released after the gap timeout
  dead_letters = 21,         // entries in the queue's dead-letter queue now
  redriving = 22,            // dead letters waiting to be redriven
  // The broker-wide entry (empty name; only when all queues are asked for):
  storage_file_bytes = 100,     // the data file's size (its high-water mark)
  storage_used_bytes = 101,     // of which in use (the rest is free for reuse)
  storage_limit_bytes = 102,    // storage.max_size
  storage_commits_total = 103,  // transactions (fsyncs with sync = fsync)
  storage_operations_total = 104,
  storage_median_batch = 105,    // operations per commit, median of the last 1024
  storage_waiting = 106,         // records waiting for room (store full)
  storage_full = 107,            // 1: durable queues push back on publishers
  storage_failures_total = 108,  // transactions that failed and were retried
};

struct QueueStatsView {
  std::string_view name;
  std::vector<std::pair<std::uint16_t, std::uint64_t>> fields;
  /// The value of `field`, or 0 if the broker did not send it.
  std::uint64_t get(StatField field) const noexcept;
};

struct ErrorFrame {
  std::uint64_t request_id = 0;  // 0: not about one request
  errc code = errc::ok;
  std::string_view message;
  std::uint32_t retry_after_ms = 0;  // with queue_full: try again no sooner (0: not said)
};

}  // namespace sluice::protocol
