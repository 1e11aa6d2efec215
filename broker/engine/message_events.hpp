// MessageEvents: what the engine tells an observer about a message's failed
// attempts, so the net layer can log them with the message's correlation id.
// Only failure paths call it; a delivery that is acked costs nothing here.
#pragma once

#include <cstdint>
#include <string_view>

#include "message_store.hpp"

namespace sluice::engine {

class Queue;

/// One failed attempt of a message.
struct FailedAttempt {
  const Queue& queue;
  std::uint64_t message_id;
  std::uint32_t attempt;     // the attempt that failed (1-based)
  std::string_view reason;   // "lease expired", "consumer disconnected", or the consumer's
  Micros retry_in;           // until the next attempt; -1: dead-lettered instead
  std::string_view message;  // raw encoding (headers carry the correlation id)
};

class MessageEvents {
 public:
  /// Called synchronously from inside engine operations (engine thread); it
  /// must not call back into the engine.
  virtual void attempt_failed(const FailedAttempt& event) = 0;

 protected:
  ~MessageEvents() = default;
};

}  // namespace sluice::engine
