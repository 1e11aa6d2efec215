// DeadLetterStore: every queue's dead-letter queue, in one LMDB database.
// Storage format 1 (DataDir::kFormatVersion):
//
//   "dead_letters"  key: queue name, a 0 byte, u64 entry id big-endian — so a
//                   queue's entries are contiguous and in dead-letter order
//                   (entry ids come from the message id space: increasing)
//                   value: u8 record version (1), u64 message id, i64 publish
//                   wall time (µs), u32 attempts, i64 first and last failure
//                   wall times (µs), u16 reason length, reason, then the
//                   message exactly as the protocol encodes it
//
// Writes are StorageOps for the GroupCommitter (the storage thread); reads
// open their own read transaction and may run on any thread (MDB_NOTLS).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "sluice/storage/group_commit.hpp"
#include "sluice/storage/lmdb.hpp"

namespace sluice::storage {

/// One entry. Views point into LMDB's map (valid during a read callback) or
/// into the strings of an OwnedDeadLetter.
struct DeadLetterRecord {
  std::string_view queue;  // the origin queue
  std::uint64_t entry_id = 0;
  std::uint64_t message_id = 0;
  std::int64_t publish_wall_us = 0;
  std::uint32_t attempts = 0;
  std::int64_t first_failure_wall_us = 0;
  std::int64_t last_failure_wall_us = 0;
  std::string_view reason;
  std::string_view message;
};

/// A DeadLetterRecord that owns its bytes.
struct OwnedDeadLetter {
  std::string queue, reason, message;
  DeadLetterRecord record;  // views into the strings above
};

class DeadLetterStore {
 public:
  /// Opens (creating) the database. Call once, before any other use.
  Status open(Env& env);

  StorageOp put(const DeadLetterRecord& record) const;
  StorageOp erase(std::string_view queue, std::uint64_t entry_id) const;

  /// Calls `visit` for the entries of `queue` in entry id order (newest first
  /// when asked), starting after entry `after` (0: from the first). `visit`
  /// returns false to stop. An unreadable record is an error.
  Status scan(Env& env, std::string_view queue, bool newest_first, std::uint64_t after,
              const std::function<bool(const DeadLetterRecord&)>& visit) const;
  /// The entry `entry_id` of `queue`, or nullopt.
  Status get(Env& env, std::string_view queue, std::uint64_t entry_id,
             std::optional<OwnedDeadLetter>& out) const;
  /// Calls `visit(queue, entries)` once per queue that has dead letters.
  Status count(Env& env, const std::function<void(std::string_view, std::uint64_t)>& visit) const;

 private:
  Db db_;
};

}  // namespace sluice::storage
