#include "json_output.hpp"

#include <cstdio>

#include "sluice/protocol/utf8.hpp"

namespace sluicectl {

namespace {

using sluice::protocol::valid_utf8;  // strict: what it passes, JSON carries

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(v >> shift) & 63];
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace

nlohmann::json queue_json(const sluice::client::QueueStats& q) {
  return {{"name", q.name},
          {"ready", q.ready},
          {"delayed", q.delayed},
          {"in_flight", q.in_flight},
          {"staged", q.staged},
          {"held", q.held},
          {"consumers", q.consumers},
          {"bytes", q.bytes},
          {"pressure", q.pressure},
          {"published_total", q.published_total},
          {"delivered_total", q.delivered_total},
          {"acked_total", q.acked_total},
          {"nacked_total", q.nacked_total},
          {"expired_total", q.expired_total},
          {"retried_total", q.retried_total},
          {"refused_total", q.refused_total},
          {"blocked_total", q.blocked_total},
          {"dead_lettered_total", q.dead_lettered_total},
          {"duplicates_total", q.duplicates_total},
          {"dedup_evicted_total", q.dedup_evicted_total},
          {"sequence_gaps_total", q.sequence_gaps_total},
          {"dead_letters", q.dead_letters},
          {"redriving", q.redriving}};
}

nlohmann::json storage_json(const sluice::client::StorageStats& s) {
  return {{"file_bytes", s.file_bytes},
          {"used_bytes", s.used_bytes},
          {"limit_bytes", s.limit_bytes},
          {"commits_total", s.commits_total},
          {"operations_total", s.operations_total},
          {"median_batch", s.median_batch},
          {"waiting", s.waiting},
          {"full", s.full},
          {"failures_total", s.failures_total}};
}

void describe(std::string_view payload,
              const std::vector<std::pair<std::string, std::string>>& headers,
              nlohmann::json& out) {
  nlohmann::json h = nlohmann::json::object();
  for (const auto& [k, v] : headers)
    h[valid_utf8(k) ? k : base64(k)] = valid_utf8(v) ? v : base64(v);
  out["headers"] = std::move(h);
  if (valid_utf8(payload))
    out["payload"] = std::string(payload);
  else
    out["payload_base64"] = base64(payload);
}

nlohmann::json dead_letter_json(const sluice::client::DeadLetter& e) {
  nlohmann::json j = {{"entry_id", e.entry_id},
                      {"message_id", e.message_id},
                      {"queue", e.queue},
                      {"attempts", e.attempts},
                      {"publish_time_us", e.publish_time_us},
                      {"first_failure_us", e.first_failure_us},
                      {"last_failure_us", e.last_failure_us},
                      {"reason", valid_utf8(e.reason) ? e.reason : base64(e.reason)}};
  describe(e.message.payload, e.message.headers, j);
  return j;
}

nlohmann::json trigger_json(const sluice::client::TriggerState& t) {
  static constexpr const char* kOutcomes[] = {"ok",      "failed",        "throttled",
                                              "timeout", "connect_error", "dead_lettered"};
  nlohmann::json invocations = nlohmann::json::object();
  for (std::size_t i = 0; i < t.invocations.size() && i < std::size(kOutcomes); ++i)
    invocations[kOutcomes[i]] = t.invocations[i];
  return {{"name", t.name},
          {"queue", t.queue},
          {"url", t.url},
          {"state", t.paused ? "paused" : "running"},
          {"breaker", t.breaker},
          {"concurrency", t.adaptive ? "adaptive" : "fixed"},
          {"concurrency_limit", t.concurrency_limit},
          {"in_flight", t.in_flight},
          {"messages_sent", t.messages_sent},
          {"invocations", std::move(invocations)}};
}

nlohmann::json invocation_json(const sluice::client::TriggerInvocation& i) {
  nlohmann::json j = {{"outcome", i.outcome},
                      {"status", i.status},
                      {"took_ms", static_cast<double>(i.took.count()) / 1000.0}};
  if (!i.error.empty()) j["error"] = i.error;
  if (valid_utf8(i.body))
    j["body"] = i.body;
  else
    j["body_base64"] = base64(i.body);
  return j;
}

void print_json(const nlohmann::json& document) {
  // Text that slipped past valid_utf8 (overlong forms, surrogates) is replaced, never thrown on.
  std::puts(document.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

}  // namespace sluicectl
