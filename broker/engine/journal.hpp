// Journal: what the engine tells storage about the messages of durable
// queues, so a restart brings them back with their attempt counts and retry
// times, and where every queue's dead letters go. Implemented over LMDB by the net layer
// (DurableStore); the engine only calls it, on its own thread, from inside its operations.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "message_store.hpp"

namespace sluice::engine {

class Queue;

/// A message leaving its queue for the queue's dead-letter queue.
struct DeadLetter {
  const Queue& queue;
  std::uint64_t entry_id;  // the DLQ's own id, from the message id space
  std::uint64_t message_id;
  std::int64_t publish_wall_us;
  std::uint32_t attempts;
  Micros first_failure;  // engine time
  Micros last_failure;
  std::string_view reason;
  std::string_view message;
  bool durable;  // the message is stored: the same write must remove it
};

class Journal {
 public:
  /// A durable publish: store the message. Returns the sequence number of the
  /// write; Engine::committed(seq) says later that it is on disk, and only
  /// then is the message delivered and its publish confirmed.
  /// `redriven_from`: the dead-letter entry of `queue` it comes back from (0:
  /// none), removed by the same write, so a crash leaves it in one place.
  virtual std::uint64_t stored(const Queue& queue, std::uint64_t id, std::int64_t publish_wall_us,
                               std::string_view message, std::uint64_t redriven_from) = 0;
  /// Delivered for the `attempt`-th time and not settled yet: a restart
  /// before its settlement is stored counts this delivery as a failed attempt.
  virtual void delivered(std::uint64_t id, std::uint32_t attempt) = 0;
  /// Failed `attempt` times (or, with 0, delayed at publish) and waiting
  /// until `not_before` (engine time; 0 = ready at once). Returns the write's
  /// sequence number: a retry is not delivered before it is on disk.
  virtual std::uint64_t attempted(std::uint64_t id, std::uint32_t attempt, Micros not_before) = 0;
  /// Settled for good: forget it.
  virtual void removed(std::uint64_t id) = 0;
  /// Writes a dead-letter entry and, if stored, removes the message in the
  /// same write (after a crash it is in exactly one of the two). Returns
  /// the write's sequence number; Engine::committed(seq) lets the message go.
  virtual std::uint64_t dead_lettered(const DeadLetter& entry) = 0;
  /// An operator dropped messages of `queue`: erase `ids` in one write; with
  /// `whole_queue` the queue was deleted, and its dead-letter entries go in
  /// the same write (after a crash the queue is whole or gone).
  virtual void dropped(const Queue& queue, std::span<const std::uint64_t> ids,
                       bool whole_queue) = 0;
  /// Ids below `next_id` are taken: never hand them out again, even after a restart.
  virtual void ids_used(std::uint64_t next_id) = 0;

 protected:
  ~Journal() = default;
};

}  // namespace sluice::engine
