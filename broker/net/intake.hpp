// The one door a published message comes in by, for protocol sessions and the
// HTTP API alike. It checks each message (encoding, the broker's limits, its
// sluice-* headers, a not-before time at most 30 days ahead), reads what the
// engine acts on once (those headers and the queue's ordering key, which the
// message's slot keeps), opens the queue, asks its admission and publishes.
// A batch is taken whole or not at all. The front ends differ only in how
// messages arrive and answers leave. Engine thread only.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine.hpp"
#include "schemas.hpp"
#include "sluice/protocol/errc.hpp"
#include "sluice/protocol/frames.hpp"

namespace sluice::net {

/// Why a publish or subscribe that would create a queue is refused (too_many_queues).
inline constexpr const char* kTooManyQueues =
    "the broker holds limits.max_queues queues already; this one would be new";

/// Why Engine::open refused `queue` (`why`: too_many_queues or queue_not_found),
/// in the client's words.
std::string open_refused(errc why, std::string_view queue);

/// What came of offering a batch of messages to a queue. Reused between
/// offers, so its vectors keep their capacity.
struct IntakeResult {
  errc code = errc::ok;     // ok: every message taken; otherwise none was
  std::string detail;       // why not, for the client
  bool in_message = false;  // the problem is in one message:
  std::size_t message = 0;  // its index in the batch
  engine::Micros retry_after =
      0;  // with queue_full or a rate limit: when trying again is worthwhile
  /// Refused as full by a queue whose overflow is "block": the caller waits
  /// (Engine::wait_for_room on `queue`) and offers the batch again.
  bool must_wait = false;
  engine::Queue* queue = nullptr;  // the queue, once opened
  std::vector<std::uint64_t> ids;  // taken: one id per message, in order
  std::vector<std::uint32_t>
      duplicates;  // taken: indexes into ids of duplicates (not enqueued again)
  /// Refused by the queue's schema (keyword set): the version, pointer and keyword.
  SchemaRefusal schema;

  explicit operator bool() const noexcept { return code == errc::ok; }
};

class Intake {
 public:
  /// `limits` and `schemas` (may be null: none) must outlive the intake.
  Intake(engine::Engine& engine, const protocol::Limits& limits, Schemas* schemas) noexcept
      : engine_(engine), limits_(limits), schemas_(schemas) {}

  /// Offers `messages` (message encodings) to queue `name` (a valid name;
  /// created if new). `wall_us` is the wall clock, for not-before times.
  void offer(std::string_view name, std::span<const std::string_view> messages, engine::Micros now,
             std::int64_t wall_us, IntakeResult& out);

 private:
  /// Checks every message and reads its sluice-* headers and key into arrivals_.
  bool check(std::string_view name, std::span<const std::string_view> messages,
             std::int64_t wall_us, IntakeResult& out);

  engine::Engine& engine_;
  const protocol::Limits& limits_;
  Schemas* schemas_;
  std::vector<protocol::SystemHeaders> arrivals_;  // scratch: one per message of the offer
  // Producers publish to the same queue frame after frame: skip the lookup.
  std::uint64_t removals_ = 0;  // Engine::removals() when last_ was looked up
  engine::Queue* last_ = nullptr;
};

}  // namespace sluice::net
