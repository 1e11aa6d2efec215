#include "sluice/storage/message_log.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "le_codec.hpp"
#include <vector>

namespace sluice::storage {

using detail::get_le;
using detail::put_le;

namespace {

constexpr std::uint8_t kRecordVersion = 1;
constexpr std::string_view kNextIdKey = "next_id";
constexpr std::int64_t kDeliveryOut = -1;  // the not-before of a delivery not settled yet

std::string id_key(std::uint64_t id) {
  std::string key(8, '\0');
  for (int i = 7; i >= 0; --i, id >>= 8) key[static_cast<std::size_t>(i)] = static_cast<char>(id);
  return key;
}

std::uint64_t key_id(std::string_view key) {
  std::uint64_t id = 0;
  for (char c : key) id = (id << 8) | static_cast<unsigned char>(c);
  return id;
}

StorageError unreadable(std::uint64_t id, const char* what) {
  return StorageError{EINVAL, "recovery: the " + std::string(what) + " record of message " +
                                  std::to_string(id) + " is unreadable (data directory damaged?)"};
}

}  // namespace

Status MessageLog::open(Env& env) {
  Txn txn;
  if (auto e = txn.begin(env, false)) return e;
  if (auto e = txn.open_db("messages", messages_)) return e;
  if (auto e = txn.open_db("attempts", attempts_)) return e;
  if (auto e = txn.open_db("meta", meta_)) return e;
  return txn.commit();
}

StorageOp MessageLog::put_message(std::uint64_t id, std::string_view queue,
                                  std::int64_t publish_wall_us, std::string_view message) const {
  StorageOp op{StorageOp::Kind::put, true, true, messages_, id_key(id), {}, {}};
  op.value.reserve(1 + 2 + queue.size() + 8 + message.size());
  op.value.push_back(static_cast<char>(kRecordVersion));
  put_le(op.value, static_cast<std::uint16_t>(queue.size()));
  op.value.append(queue);
  put_le(op.value, publish_wall_us);
  op.value.append(message);
  return op;
}

StorageOp MessageLog::put_attempts(std::uint64_t id, std::uint32_t attempts,
                                   std::int64_t not_before_wall_us) const {
  StorageOp op{StorageOp::Kind::put, false, false, attempts_, id_key(id), {}, {}};
  put_le(op.value, attempts);
  put_le(op.value, not_before_wall_us);
  return op;
}

StorageOp MessageLog::put_delivery(std::uint64_t id, std::uint32_t attempts) const {
  return put_attempts(id, attempts, kDeliveryOut);
}

StorageOp MessageLog::erase(std::uint64_t id) const {
  return {StorageOp::Kind::erase_pair, false, false, messages_, id_key(id), {}, {}, attempts_};
}

StorageOp MessageLog::put_next_id(std::uint64_t next_id) const {
  StorageOp op{StorageOp::Kind::put, false, false, meta_, std::string(kNextIdKey), {}, {}};
  put_le(op.value, next_id);
  return op;
}

Status MessageLog::recover(Env& env, const std::function<void(const StoredMessage&)>& visit,
                           std::uint64_t& next_id, RecoveryStats& stats) {
  stats = {};
  next_id = 1;
  std::vector<std::string> orphans;
  {
    Txn txn;
    if (auto e = txn.begin(env, true)) return e;
    std::optional<std::string_view> stored_next;
    if (auto e = txn.get(meta_, kNextIdKey, stored_next)) return e;
    if (stored_next) {
      std::uint64_t value = 0;
      if (!get_le(*stored_next, value)) return StorageError{EINVAL, "recovery: bad next_id"};
      next_id = value;
    }
    Cursor messages, attempts;
    if (auto e = messages.open(txn, messages_)) return e;
    if (auto e = attempts.open(txn, attempts_)) return e;
    bool have_message = false, have_attempts = false;
    if (auto e = messages.seek(std::nullopt, have_message)) return e;
    if (auto e = attempts.seek(std::nullopt, have_attempts)) return e;
    // Both databases are in id order: walk them side by side.
    while (have_message) {
      StoredMessage m;
      m.id = key_id(messages.key());
      while (have_attempts && key_id(attempts.key()) < m.id) {
        orphans.emplace_back(attempts.key());
        if (auto e = attempts.next(have_attempts)) return e;
      }
      if (have_attempts && key_id(attempts.key()) == m.id) {
        std::string_view v = attempts.value();
        if (!get_le(v, m.attempts) || !get_le(v, m.not_before_wall_us))
          return unreadable(m.id, "attempts");
        if (m.not_before_wall_us == kDeliveryOut) {
          m.interrupted = m.attempts > 0;
          m.not_before_wall_us = 0;
        }
        if (auto e = attempts.next(have_attempts)) return e;
      }
      std::string_view v = messages.value();
      std::uint8_t version = 0;
      std::uint16_t queue_size = 0;
      if (!get_le(v, version) || version != kRecordVersion || !get_le(v, queue_size) ||
          v.size() < queue_size)
        return unreadable(m.id, "message");
      m.queue = v.substr(0, queue_size);
      v.remove_prefix(queue_size);
      if (!get_le(v, m.publish_wall_us)) return unreadable(m.id, "message");
      m.message = v;
      visit(m);
      stats.messages++;
      next_id = std::max(next_id, m.id + 1);
      if (auto e = messages.next(have_message)) return e;
    }
    for (; have_attempts;) {
      orphans.emplace_back(attempts.key());
      if (auto e = attempts.next(have_attempts)) return e;
    }
  }
  stats.orphan_attempts = orphans.size();
  if (orphans.empty()) return std::nullopt;
  Txn txn;
  if (auto e = txn.begin(env, false)) return e;
  for (const auto& key : orphans)
    if (auto e = txn.erase(attempts_, key)) return e;
  return txn.commit();
}

}  // namespace sluice::storage
