// MessageLog: how the messages of durable queues are laid out in LMDB, and
// how a restart reads them back. Storage format 1 (DataDir::kFormatVersion):
//
//   "messages"  key: u64 message id, big-endian (so key order = publish order)
//               value: u8 record version (1), u16 queue name length, queue
//               name, i64 publish wall time (µs), then the message exactly as
//               the protocol encodes it (headers and payload)
//   "attempts"  key: as above. value: u32 deliveries so far, i64 not-before
//               wall time (µs; 0 = ready now; -1 = the last delivery is out,
//               unsettled). Absent: never delivered. (A build before -1 was
//               written reads it as "ready now", as it read every delivery.)
//   "meta"      "next_id": u64 little-endian, above every id handed out
//
// Records are written by the storage thread (GroupCommitter) from the
// StorageOps built here; an ack erases both records of a message in one op.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "sluice/storage/group_commit.hpp"
#include "sluice/storage/lmdb.hpp"

namespace sluice::storage {

/// One message read back at recovery. Views are valid during the callback only.
struct StoredMessage {
  std::uint64_t id = 0;
  std::string_view queue;
  std::int64_t publish_wall_us = 0;
  std::uint32_t attempts = 0;
  std::int64_t not_before_wall_us = 0;  // 0: ready at once
  /// Its last delivery was out, unsettled, when the broker stopped: a failed attempt.
  bool interrupted = false;
  std::string_view message;
};

struct RecoveryStats {
  std::uint64_t messages = 0;
  std::uint64_t orphan_attempts = 0;  // attempt records left by a message acked meanwhile
};

class MessageLog {
 public:
  /// Opens (creating) the databases. Call once, before any other use.
  Status open(Env& env);

  StorageOp put_message(std::uint64_t id, std::string_view queue, std::int64_t publish_wall_us,
                        std::string_view message) const;
  StorageOp put_attempts(std::uint64_t id, std::uint32_t attempts,
                         std::int64_t not_before_wall_us) const;
  /// Delivered for the `attempts`-th time and not settled yet: a restart
  /// before the settlement is stored counts it as a failed attempt.
  StorageOp put_delivery(std::uint64_t id, std::uint32_t attempts) const;
  /// Erases the message and its attempts record in one op.
  StorageOp erase(std::uint64_t id) const;
  /// Records that ids below `next_id` are used (they are never handed out again).
  StorageOp put_next_id(std::uint64_t next_id) const;

  /// Calls `visit` for every stored message in id order, and sets `next_id`
  /// above every id used. Removes attempt records without a message. An
  /// unreadable record is an error (nothing is skipped silently).
  Status recover(Env& env, const std::function<void(const StoredMessage&)>& visit,
                 std::uint64_t& next_id, RecoveryStats& stats);

 private:
  Db messages_, attempts_, meta_;
};

}  // namespace sluice::storage
