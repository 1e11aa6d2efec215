#include "sluice/storage/dead_letter_store.hpp"

#include <cerrno>
#include <cstring>

#include "le_codec.hpp"

namespace sluice::storage {

using detail::get_le;
using detail::put_le;

namespace {

constexpr std::uint8_t kRecordVersion = 1;

std::string entry_key(std::string_view queue, std::uint64_t id) {
  std::string key(queue);
  key.push_back('\0');
  for (int shift = 56; shift >= 0; shift -= 8) key.push_back(static_cast<char>(id >> shift));
  return key;
}

/// Splits a key into queue and id; false when it is not one of ours.
bool split_key(std::string_view key, std::string_view& queue, std::uint64_t& id) {
  if (key.size() < 9 || key[key.size() - 9] != '\0') return false;
  queue = key.substr(0, key.size() - 9);
  id = 0;
  for (char c : key.substr(key.size() - 8)) id = (id << 8) | static_cast<unsigned char>(c);
  return true;
}

bool parse(std::string_view key, std::string_view v, DeadLetterRecord& r) {
  std::uint8_t version = 0;
  std::uint16_t reason_size = 0;
  if (!split_key(key, r.queue, r.entry_id) || !get_le(v, version) || version != kRecordVersion ||
      !get_le(v, r.message_id) || !get_le(v, r.publish_wall_us) || !get_le(v, r.attempts) ||
      !get_le(v, r.first_failure_wall_us) || !get_le(v, r.last_failure_wall_us) ||
      !get_le(v, reason_size) || v.size() < reason_size)
    return false;
  r.reason = v.substr(0, reason_size);
  r.message = v.substr(reason_size);
  return true;
}

StorageError unreadable(std::string_view key) {
  return StorageError{EINVAL, "dead letters: the record " + std::to_string(key.size()) +
                                  "-byte key is unreadable (data directory damaged?)"};
}

}  // namespace

Status DeadLetterStore::open(Env& env) {
  Txn txn;
  if (auto e = txn.begin(env, false)) return e;
  if (auto e = txn.open_db("dead_letters", db_)) return e;
  return txn.commit();
}

StorageOp DeadLetterStore::put(const DeadLetterRecord& r) const {
  StorageOp op{StorageOp::Kind::put, true, false, db_, entry_key(r.queue, r.entry_id), {}, {}};
  op.value.reserve(1 + 8 + 8 + 4 + 8 + 8 + 2 + r.reason.size() + r.message.size());
  op.value.push_back(static_cast<char>(kRecordVersion));
  put_le(op.value, r.message_id);
  put_le(op.value, r.publish_wall_us);
  put_le(op.value, r.attempts);
  put_le(op.value, r.first_failure_wall_us);
  put_le(op.value, r.last_failure_wall_us);
  const std::string_view reason = r.reason.substr(0, 0xffff);
  put_le(op.value, static_cast<std::uint16_t>(reason.size()));
  op.value.append(reason);
  op.value.append(r.message);
  return op;
}

StorageOp DeadLetterStore::erase(std::string_view queue, std::uint64_t entry_id) const {
  return {StorageOp::Kind::erase, false, false, db_, entry_key(queue, entry_id), {}, {}};
}

Status DeadLetterStore::scan(Env& env, std::string_view queue, bool newest_first,
                             std::uint64_t after,
                             const std::function<bool(const DeadLetterRecord&)>& visit) const {
  Txn txn;
  if (auto e = txn.begin(env, true)) return e;
  Cursor cursor;
  if (auto e = cursor.open(txn, db_)) return e;
  bool at = false;
  if (!newest_first) {
    if (auto e = cursor.seek(entry_key(queue, after == 0 ? 0 : after + 1), at)) return e;
  } else {
    // The first key past the wanted ones, then one step back.
    const std::string bound = after == 0 ? std::string(queue) + '\x01' : entry_key(queue, after);
    if (auto e = cursor.seek(bound, at)) return e;
    if (auto e = at ? cursor.prev(at) : cursor.last(at)) return e;
  }
  while (at) {
    DeadLetterRecord r;
    std::string_view key_queue;
    std::uint64_t id = 0;
    if (!split_key(cursor.key(), key_queue, id) || key_queue != queue) break;  // past the queue
    if (!parse(cursor.key(), cursor.value(), r)) return unreadable(cursor.key());
    if (!visit(r)) break;
    if (auto e = newest_first ? cursor.prev(at) : cursor.next(at)) return e;
  }
  return std::nullopt;
}

Status DeadLetterStore::get(Env& env, std::string_view queue, std::uint64_t entry_id,
                            std::optional<OwnedDeadLetter>& out) const {
  out.reset();
  Txn txn;
  if (auto e = txn.begin(env, true)) return e;
  const std::string key = entry_key(queue, entry_id);
  std::optional<std::string_view> value;
  if (auto e = txn.get(db_, key, value)) return e;
  if (!value) return std::nullopt;
  DeadLetterRecord r;
  if (!parse(key, *value, r)) return unreadable(key);
  out.emplace();
  out->queue.assign(r.queue);
  out->reason.assign(r.reason);
  out->message.assign(r.message);
  out->record = r;
  out->record.queue = out->queue;
  out->record.reason = out->reason;
  out->record.message = out->message;
  return std::nullopt;
}

Status DeadLetterStore::count(
    Env& env, const std::function<void(std::string_view, std::uint64_t)>& visit) const {
  Txn txn;
  if (auto e = txn.begin(env, true)) return e;
  Cursor cursor;
  if (auto e = cursor.open(txn, db_)) return e;
  bool at = false;
  if (auto e = cursor.seek(std::nullopt, at)) return e;
  std::string current;
  std::uint64_t n = 0;
  while (at) {
    std::string_view queue;
    std::uint64_t id = 0;
    if (!split_key(cursor.key(), queue, id)) return unreadable(cursor.key());
    if (queue != current) {
      if (n != 0) visit(current, n);
      current.assign(queue);
      n = 0;
    }
    n++;
    if (auto e = cursor.next(at)) return e;
  }
  if (n != 0) visit(current, n);
  return std::nullopt;
}

}  // namespace sluice::storage
