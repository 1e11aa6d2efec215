// Shared by the engine's unit tests: a recording DeliverySink and Journal, and small helpers.
#pragma once

#include <utility>
#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <vector>

#include "engine.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::test {

using engine::Engine;
using engine::Micros;

inline constexpr Micros kSecond = 1'000'000;

inline std::string encode(std::string_view payload) {
  std::string out;
  protocol::encode_message(out, {}, payload);
  return out;
}

/// A message with `payload` and these headers, in order.
inline std::string with_headers(std::string_view payload,
                                std::vector<std::pair<std::string, std::string>> headers) {
  std::vector<protocol::Header> h;
  for (const auto& [k, v] : headers) h.push_back({k, v});
  std::string out;
  protocol::encode_message(out, h, payload);
  return out;
}

inline std::string payload_of(std::string_view raw) {
  protocol::MessageParts parts;
  REQUIRE(protocol::parse_message(raw, parts));
  return std::string(parts.payload);
}

/// Records every delivery; can refuse more (outbound full) to test pausing.
struct RecordingSink final : engine::DeliverySink {
  struct Got {
    engine::Consumer* consumer;
    protocol::Delivery delivery;
    std::string payload;
  };
  std::vector<Got> got;
  std::vector<engine::Consumer*> released_consumers;
  bool accepting = true;

  bool deliver(engine::Consumer& c, const protocol::Delivery& d) override {
    got.push_back({&c, d, payload_of(d.message)});
    got.back().delivery.message = {};  // the view dies with the call
    return accepting;
  }
  void released(engine::Consumer& c) override { released_consumers.push_back(&c); }
  void ended(engine::Consumer& c) override { ended_consumers.push_back(&c); }
  std::vector<engine::Consumer*> ended_consumers;

  std::vector<Got> take() { return std::exchange(got, {}); }
};

/// Records every journal call as a line of text; sequence numbers count calls.
struct RecordingJournal final : engine::Journal {
  std::uint64_t seq = 0;
  std::vector<std::string> calls;
  std::uint64_t stored(const engine::Queue& q, std::uint64_t id, std::int64_t,
                       std::string_view message, std::uint64_t) override {
    calls.push_back("stored " + q.name() + " " + std::to_string(id) + " " + payload_of(message));
    return ++seq;
  }
  void delivered(std::uint64_t id, std::uint32_t attempt) override {
    calls.push_back("delivered " + std::to_string(id) + " " + std::to_string(attempt));
    ++seq;
  }
  std::uint64_t attempted(std::uint64_t id, std::uint32_t attempt, Micros not_before) override {
    calls.push_back("attempted " + std::to_string(id) + " " + std::to_string(attempt) + " " +
                    std::to_string(not_before));
    return ++seq;
  }
  void removed(std::uint64_t id) override {
    calls.push_back("removed " + std::to_string(id));
    ++seq;
  }
  void ids_used(std::uint64_t) override { ++seq; }
  void dropped(const engine::Queue& q, std::span<const std::uint64_t> ids,
               bool whole_queue) override {
    std::string line = (whole_queue ? "queue_removed " : "purged ") + q.name();
    for (auto id : ids) line += " " + std::to_string(id);
    calls.push_back(line);
    ++seq;
  }
  std::uint64_t dead_lettered(const engine::DeadLetter& d) override {
    calls.push_back("dead_lettered " + std::to_string(d.message_id) + " " + std::string(d.reason));
    return ++seq;
  }
  std::vector<std::string> take() { return std::exchange(calls, {}); }
};

inline engine::Consumer* subscribe(Engine& e, engine::Queue& q, RecordingSink& sink,
                                   std::uint32_t credit, Micros lease = 0, Micros now = 0,
                                   std::uint32_t id = 1) {
  auto r = e.subscribe(q, sink, id, credit, lease, now);
  REQUIRE(r.code == errc::ok);
  return r.consumer;
}

}  // namespace sluice::test
