// The one list of error codes Sluice speaks: on the wire (u16 in ERROR and
// SETTLED frames), in the client library, and as HTTP statuses (http_status).
// Values are part of the protocol: never renumber, only append.
#pragma once

#include <cstdint>
#include <string_view>
#include <system_error>

namespace sluice {

/// Every typed error the broker or client can report. Thread-safe (plain enum).
enum class errc : std::uint16_t {
  ok = 0,
  /// A frame's body does not match its type's grammar (intact framing; connection stays open).
  /// Sent with request id 0 and followed by a close when framing itself is broken: a zero
  /// length prefix, or the stream ending inside a frame.
  malformed_frame = 1,
  /// A length prefix exceeds the negotiated maximum frame size; framing is lost, connection closed.
  frame_too_large = 2,
  /// A frame type this version does not know (intact framing; connection stays open).
  unknown_frame_type = 3,
  /// HELLO asked for versions the broker does not speak; connection closed.
  unsupported_version = 4,
  /// The first frame was not HELLO, or HELLO came twice; connection closed.
  handshake_required = 5,
  /// Queue name empty, too long, with characters outside [A-Za-z0-9_.:-], or "." or "..".
  invalid_queue_name = 6,
  /// A message payload exceeds the broker's maximum payload size.
  payload_too_large = 7,
  /// A field has a value outside what is allowed (e.g. credit 0); the message says which.
  invalid_argument = 8,
  /// Ack, nack or extend named a lease that has expired, was settled, never existed, or is held
  /// by another connection.
  stale_lease = 9,
  /// The subscription id is not open on this connection.
  unknown_subscription = 10,
  /// SUBSCRIBE reused a subscription id already open on this connection.
  duplicate_subscription = 11,
  /// The request is well-formed but asks for something this broker does not offer yet.
  unsupported = 12,
  /// The queue is at capacity and its overflow policy is reject; retry later.
  queue_full = 13,
  /// No or wrong credentials.
  unauthenticated = 14,
  /// Credentials lack the permission for this queue and operation.
  forbidden = 15,
  /// The broker is stopping; reconnect elsewhere or later.
  shutting_down = 16,
  /// A broker-side failure that is not the client's fault.
  internal = 17,
  /// The connection limit (total or per source) is reached; connection closed.
  too_many_connections = 18,
  /// The client library lost its connection before the request was answered.
  connection_lost = 19,
  /// The client library gave up waiting for an answer; or, from the broker with request id 0,
  /// a frame begun was not completed within limits.frame_timeout (connection closed).
  timed_out = 20,
  /// A new queue would pass the broker's limits.max_queues; use an existing one.
  too_many_queues = 21,
  /// The thing asked for (a dead-letter entry) does not exist (any more).
  not_found = 22,
  /// Client library: the connection dropped after the request was sent and before its answer,
  /// so it may or may not have taken effect (a publish may or may not have been enqueued).
  outcome_unknown = 23,
  /// The queue does not exist, and the broker does not create queues on first use
  /// (queues.auto_create = "off"), or the operation never creates one (delete, purge).
  queue_not_found = 24,
  /// Delete refused: the queue holds messages or has consumers (force deletes anyway), is
  /// declared in the config file, is a trigger's, or has writes being committed (try again).
  queue_in_use = 25,
  /// Create refused: a queue of that name exists.
  queue_exists = 26,
};

/// Stable snake_case name of a code (e.g. "stale_lease"); "unknown" for values not listed.
std::string_view to_string(errc code) noexcept;

/// The HTTP status the HTTP API answers this code with (200 for ok; 500 for
/// values not listed). One status per code; see docs/http-api.md.
unsigned http_status(errc code) noexcept;

/// True when the broker closes the connection after sending this code.
bool closes_connection(errc code) noexcept;

/// The std::error_category for sluice::errc ("sluice").
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace sluice

template <>
struct std::is_error_code_enum<sluice::errc> : std::true_type {};
