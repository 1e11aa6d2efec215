#include "dedup_ledger.hpp"

namespace sluice::engine {

std::uint64_t DedupLedger::find(std::string_view dedup_id, Micros now) {
  auto it = entries_.find(dedup_id);
  if (it == entries_.end() || it->second.expires <= now) return 0;
  return it->second.message_id;
}

void DedupLedger::insert(std::string_view dedup_id, std::uint64_t message_id, Micros expires,
                         std::size_t max_entries) {
  auto [it, inserted] = entries_.try_emplace(std::string(dedup_id), Entry{message_id, expires});
  if (!inserted) it->second = Entry{message_id, expires};
  order_.emplace_back(expires, it->first);
  while (entries_.size() > max_entries && !order_.empty()) {
    auto& [when, key] = order_.front();
    auto victim = entries_.find(key);
    if (victim != entries_.end() && victim->second.expires == when) {
      entries_.erase(victim);
      evicted_++;
    }
    order_.pop_front();
  }
}

void DedupLedger::expire(Micros now) {
  while (!order_.empty() && order_.front().first <= now) {
    auto victim = entries_.find(order_.front().second);
    // Only the entry this record was made for: a later insert of the same id lives on.
    if (victim != entries_.end() && victim->second.expires == order_.front().first)
      entries_.erase(victim);
    order_.pop_front();
  }
}

}  // namespace sluice::engine
