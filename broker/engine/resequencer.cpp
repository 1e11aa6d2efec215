#include "resequencer.hpp"

#include <algorithm>

namespace sluice::engine {

Resequencer::Verdict Resequencer::offer(std::string_view key, std::uint64_t sequence,
                                        std::uint32_t slot, Micros now,
                                        std::vector<std::uint32_t>& released) {
  auto it = keys_.find(key);
  if (it == keys_.end()) {
    if (keys_.size() >= kMaxIdleKeys) trim_idle_keys();
    it = keys_.emplace(std::string(key), KeyState{}).first;
  }
  KeyState& state = it->second;
  state.last_used = now;
  if (sequence < state.expected) {
    // A number a gap release skipped is late, not repeated: let it through.
    if (state.skipped.erase(sequence) != 0) {
      released.push_back(slot);
      return Verdict::release;
    }
    return Verdict::duplicate;
  }
  if (sequence > state.expected) {
    if (!state.held.emplace(sequence, std::pair{slot, now}).second) return Verdict::duplicate;
    held_++;
    return Verdict::hold;
  }
  released.push_back(slot);
  state.expected++;
  release_run(state, released);
  return Verdict::release;
}

bool Resequencer::seen(std::string_view key, std::uint64_t sequence,
                       std::uint32_t& held_slot) const {
  held_slot = kNil;
  const auto it = keys_.find(key);
  if (it == keys_.end()) return false;
  const KeyState& state = it->second;
  if (sequence < state.expected) return state.skipped.count(sequence) == 0;
  const auto held = state.held.find(sequence);
  if (held == state.held.end()) return false;
  held_slot = held->second.first;
  return true;
}

void Resequencer::release_run(KeyState& state, std::vector<std::uint32_t>& released) {
  while (!state.held.empty() && state.held.begin()->first == state.expected) {
    released.push_back(state.held.begin()->second.first);
    state.held.erase(state.held.begin());
    held_--;
    state.expected++;
  }
}

Micros Resequencer::expire(Micros now, Micros gap_timeout, std::vector<std::uint32_t>& released) {
  Micros next = kNever;
  for (auto& [key, state] : keys_) {
    if (state.held.empty()) continue;
    Micros oldest = kNever;
    for (const auto& [seq, held] : state.held) oldest = std::min(oldest, held.second);
    if (oldest + gap_timeout > now) {
      next = std::min(next, oldest + gap_timeout);
      continue;
    }
    // Give up on the missing numbers below the first held one, then release
    // that one and the run after it; repeat while something is held.
    gaps_++;
    while (!state.held.empty()) {
      const std::uint64_t first = state.held.begin()->first;
      for (std::uint64_t s = state.expected; s < first && state.skipped.size() < kMaxSkipped; ++s)
        state.skipped.insert(s);
      state.expected = first;
      release_run(state, released);
    }
    state.last_used = now;
  }
  return next;
}

Micros Resequencer::next_timeout(Micros gap_timeout) const noexcept {
  Micros next = kNever;
  for (const auto& [key, state] : keys_)
    for (const auto& [seq, held] : state.held) next = std::min(next, held.second + gap_timeout);
  return next;
}

void Resequencer::trim_idle_keys() {
  // Drop the least recently used tenth of the keys that hold nothing.
  std::vector<std::pair<Micros, const std::string*>> idle;
  for (const auto& [key, state] : keys_)
    if (state.held.empty()) idle.emplace_back(state.last_used, &key);
  const std::size_t drop = std::max<std::size_t>(1, idle.size() / 10);
  if (idle.size() > drop)
    std::nth_element(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(drop), idle.end());
  std::vector<std::string> victims;
  for (std::size_t i = 0; i < std::min(drop, idle.size()); ++i) victims.push_back(*idle[i].second);
  for (const auto& key : victims) keys_.erase(key);
}

}  // namespace sluice::engine
