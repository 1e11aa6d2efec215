// The HTTP API's operator endpoints: queues, their settings, the log level, dead letters.
#include "http_api.hpp"

#include <charconv>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>

#include "broker.hpp"
#include "durable_store.hpp"
#include "http_json.hpp"
#include "http_util.hpp"
#include "json_body.hpp"
#include "key_lanes.hpp"
#include "live_config.hpp"
#include "log.hpp"
#include "sluice/protocol/codec.hpp"

namespace sluice::net {

namespace {

double per_second(engine::MilliRate rate) {
  return static_cast<double>(rate) / 1000.0;
}

json settings_json(const engine::QueueOptions& o) {
  static constexpr const char* kJitter[] = {"none", "full", "equal"};
  return {
      {"durability", o.durable ? "durable" : "memory"},
      {"lease_timeout_ms", o.lease / 1000},
      {"max_consumer_in_flight", o.max_consumer_in_flight},
      {"max_messages", o.max_messages},
      {"max_bytes", o.max_bytes},
      {"high_watermark", o.high_watermark_pct},
      {"low_watermark", o.low_watermark_pct},
      {"overflow", o.overflow == engine::Overflow::block ? "block" : "reject"},
      {"dispatch_rate", per_second(o.dispatch_rate.rate)},
      {"dispatch_burst", o.dispatch_rate.burst},
      {"max_consumer_rate", per_second(o.max_consumer_rate)},
      {"ingress_rate", per_second(o.ingress_rate.rate)},
      {"ingress_burst", o.ingress_rate.burst},
      {"max_in_flight", o.max_in_flight},
      {"key_header", o.key_header},
      {"key_rate", per_second(o.key_rate.rate)},
      {"key_burst", o.key_rate.burst},
      {"ordering", o.ordered ? "key" : "none"},
      {"max_attempts", o.retry.max_attempts},
      {"retry_backoff_ms", o.retry.initial_backoff / 1000},
      {"retry_backoff_max_ms", o.retry.max_backoff / 1000},
      {"retry_multiplier", o.retry.multiplier_milli / 1000.0},
      {"retry_jitter", kJitter[static_cast<int>(o.retry.jitter)]},
      {"dedup_window_ms", o.dedup_window / 1000},
      {"dedup_max_entries", o.dedup_max_entries},
      {"resequence", o.resequence ? "on" : "off"},
      {"gap_timeout_ms", o.gap_timeout / 1000},
      {"dlq_max_entries", o.dlq_max_entries},
      {"dlq_retention_ms", o.dlq_retention / 1000},
  };
}

json queue_json(const engine::Engine& engine, const engine::Queue& q, const DurableStore* store) {
  const auto& c = q.counters();
  const std::int64_t oldest = engine.oldest_ready_wall_us(q);
  json j = {
      {"name", q.name()},
      {"messages",
       {{"ready", c.ready},
        {"delayed", c.delayed},
        {"in_flight", c.in_flight},
        {"staged", c.staged},
        {"held", c.held},
        {"dead_lettering", c.dead_lettering}}},
      {"bytes", c.bytes},
      {"consumers", q.consumer_count()},
      {"pressure", q.pressure() / 100.0},
      {"oldest_ready_age_ms",
       oldest == 0 ? 0 : std::max<std::int64_t>(0, wall_us() - oldest) / 1000},
      {"totals",
       {{"published", c.published_total},
        {"delivered", c.delivered_total},
        {"acked", c.acked_total},
        {"nacked", c.nacked_total},
        {"retried", c.retried_total},
        {"dead_lettered", c.dead_lettered_total},
        {"lease_expired", c.expired_total},
        {"requeued", c.requeued_total},
        {"duplicates", c.duplicates_total},
        {"refused", c.refused_total},
        {"blocked", c.blocked_total},
        {"sequence_gaps", q.sequence_gaps()},
        {"dedup_evicted", q.dedup_evicted()}}},
      {"settings", settings_json(q.options())},
  };
  if (store != nullptr) {
    j["dead_letters"] = store->dead_letters().count(q.name());
    j["redriving"] = store->dead_letters().redriving(q.name());
  }
  return j;
}

}  // namespace

void HttpApi::queue_list(const HttpRequest& request, Grant& grant, Respond& respond) {
  // A page: the queues after `after` (by name) whose names contain `contains`,
  // at most `limit` of them (none given: all). The console lists 10,000 queues
  // a page at a time.
  std::size_t limit = 0;
  std::string after, contains;
  for (const auto& [name, value] : split_target(request.target).second) {
    if (name == "limit") {
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
      if (ec != std::errc() || end != value.data() + value.size() || limit == 0 || limit > 10000) {
        respond(error_response(errc::invalid_argument, "limit must be 1..10000"));
        return;
      }
    } else if (name == "after") {
      after = value;
    } else if (name == "contains") {
      contains = value;
    } else {
      respond(error_response(errc::invalid_argument,
                             "unknown parameter " + name.substr(0, 64) +
                                 " (the list takes limit, after and contains)"));
      return;
    }
  }
  std::vector<const engine::Queue*> queues;
  for (const auto* q : engine_.queues())
    if (q->name().find(contains) != std::string_view::npos &&
        broker_.auth().can_see(grant, q->name()))
      queues.push_back(q);
  std::sort(queues.begin(), queues.end(),
            [](const auto* a, const auto* b) { return a->name() < b->name(); });
  const auto first = std::upper_bound(
      queues.begin(), queues.end(), after,
      [](const std::string& name, const engine::Queue* q) { return name < q->name(); });
  const auto from = after.empty() ? queues.begin() : first;
  const std::size_t room = static_cast<std::size_t>(queues.end() - from);
  const std::size_t count = limit == 0 ? room : std::min(limit, room);
  json list = json::array();
  for (auto it = from; it != from + static_cast<long>(count); ++it) {
    list.push_back(queue_json(engine_, **it, broker_.store()));
    list.back()["can"] = rights(grant, (*it)->name());
  }
  json answer = {{"queues", std::move(list)}, {"total", queues.size()}};
  if (count < room) answer["next"] = std::string((*(from + static_cast<long>(count) - 1))->name());
  respond(json_response(200, std::move(answer)));
}

void HttpApi::queue_show(const QueueCall& call, Respond& respond) {
  const std::string_view queue = call.queue;
  const engine::Queue* q = engine_.find(queue);
  if (q == nullptr) {
    respond(error_response(errc::not_found, "no queue named " + std::string(queue)));
    return;
  }
  json j = queue_json(engine_, *q, broker_.store());
  Grant grant = call.grant;
  j["can"] = rights(grant, queue);
  // One queue's detail for the console: its consumers, and the keys with the
  // most messages waiting.
  json consumers = json::array();
  q->for_each_consumer([&](const engine::Consumer& c) {
    if (consumers.size() >= 1000) return;
    consumers.push_back({{"subscription", c.subscription_id()},
                         {"credit", c.credit()},
                         {"in_flight", c.in_flight()},
                         {"rate", per_second(c.rate())},
                         {"paused", c.paused()},
                         {"draining", c.draining()}});
  });
  j["consumer_list"] = std::move(consumers);
  // Keys are message data: only for a token that may read the messages.
  const auto& can = j["can"];
  if (std::find(can.begin(), can.end(), "consume") == can.end() &&
      std::find(can.begin(), can.end(), "admin") == can.end()) {
    respond(json_response(200, std::move(j)));
    return;
  }
  std::vector<std::pair<std::size_t, const engine::KeyLane*>> keys;
  q->for_each_key_lane([&](const engine::KeyLane& lane) {
    if (!lane.ready.empty()) keys.emplace_back(lane.ready.size(), &lane);
  });
  const std::size_t top = std::min<std::size_t>(keys.size(), 10);
  std::partial_sort(keys.begin(), keys.begin() + static_cast<long>(top), keys.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  json busiest = json::array();
  for (std::size_t i = 0; i < top; ++i)
    busiest.push_back(
        {{"key", keys[i].second->key}, {"ready", keys[i].first}, {"held", keys[i].second->held}});
  j["busiest_keys"] = std::move(busiest);
  respond(json_response(200, std::move(j)));
}

std::vector<std::string> HttpApi::rights(Grant& grant, std::string_view queue) const {
  // What the console offers: no admin buttons for a token without admin.
  std::vector<std::string> can;
  static constexpr std::pair<Permission, const char*> kRights[] = {{Permission::publish, "publish"},
                                                                   {Permission::consume, "consume"},
                                                                   {Permission::admin, "admin"}};
  for (const auto& [what, name] : kRights)
    if (broker_.auth().check(grant, what, queue) == errc::ok) can.emplace_back(name);
  return can;
}

void HttpApi::queue_lifecycle(const QueueCall& call, Respond& respond) {
  const HttpRequest& request = call.request;
  LiveConfig* live = broker_.live_config();
  if (live == nullptr) {
    respond(error_response(errc::unsupported, "this broker has no queue lifecycle"));
    return;
  }
  protocol::QueuesRequest req;
  req.queue = call.queue;
  std::string problem;
  std::vector<std::string> values;  // what req.settings views
  std::optional<json> body;
  if (request.method == "PUT" || request.method == "PATCH") {
    req.op = protocol::QueueOp::create;
    // {"SETTING": "value" or a number, ...}: as in a [queues.NAME] table.
    if (!request.body.empty()) body = parse_strict(request.body, problem);
    if (body && !body->is_object()) problem = "the body must be a JSON object of settings";
    if (body && problem.empty()) {
      if (body->size() > protocol::kMaxConfigureSettings) problem = "at most 64 settings";
      values.reserve(body->size());
      for (auto it = body->begin(); it != body->end() && problem.empty(); ++it) {
        if (it->is_string())
          values.push_back(it->get<std::string>());
        else if (it->is_number_unsigned())
          values.push_back(std::to_string(it->get<std::uint64_t>()));
        else
          problem = "setting " + it.key() + " must be a string or a whole number";
      }
      std::size_t i = 0;
      for (auto it = body->begin(); it != body->end() && i < values.size(); ++it, ++i)
        req.settings.emplace_back(it.key(), values[i]);
    }
  } else if (request.method == "DELETE") {
    req.op = protocol::QueueOp::remove;
    for (const auto& [name, value] : split_target(request.target).second) {
      if (name == "force" && (value == "true" || value == "false"))
        req.flags = value == "true" ? protocol::kQueuesForce : 0;
      else
        problem = "unknown or bad query parameter " + name + " (force=true|false)";
    }
  } else {
    req.op = protocol::QueueOp::purge;
    if (!request.body.empty() && request.body != "{}") problem = "purge takes no body";
  }
  if (!problem.empty()) {
    respond(error_response(errc::invalid_argument, problem));
    return;
  }
  if (request.method == "PATCH") {
    // Live settings of an existing queue, as `sluicectl set` changes them.
    if (engine_.find(call.queue) == nullptr) {
      respond(error_response(errc::not_found, "no queue named " + std::string(call.queue)));
      return;
    }
    if (req.settings.empty()) {
      respond(error_response(errc::invalid_argument, "PATCH takes a JSON object of settings"));
      return;
    }
    const auto& configure = broker_.configure_handler();
    if (!configure) {
      respond(error_response(errc::unsupported, "this broker takes no live settings"));
      return;
    }
    if (auto refused = configure(call.queue, req.settings)) {
      respond(error_response(refused.code, refused.detail));
      return;
    }
    json j = queue_json(engine_, *engine_.find(call.queue), broker_.store());
    Grant grant = call.grant;
    j["can"] = rights(grant, call.queue);
    respond(json_response(200, std::move(j)));
    return;
  }
  protocol::QueuesResult result;
  if (auto refused = live->run(
          req, [](std::string_view) { return true; }, mono_us(), result)) {
    respond(error_response(refused.code, refused.detail));
    return;
  }
  if (req.op == protocol::QueueOp::create) {
    respond(json_response(201, queue_json(engine_, *engine_.find(call.queue), broker_.store())));
    return;
  }
  respond(json_response(200, {{"queue", call.queue}, {"messages_dropped", result.affected}}));
}

void HttpApi::stats_history(const HttpRequest& request, Grant& grant, Respond& respond) {
  std::vector<std::string> queues;
  std::size_t seconds = StatsHistory::kSamples;
  for (const auto& [name, value] : split_target(request.target).second) {
    if (name == "queue") {
      queues.push_back(value);
    } else if (name == "seconds") {
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
      if (ec != std::errc() || end != value.data() + value.size() || seconds == 0 ||
          seconds > StatsHistory::kSamples) {
        respond(error_response(errc::invalid_argument, "seconds must be 1..900"));
        return;
      }
    } else {
      respond(error_response(errc::invalid_argument,
                             "unknown parameter " + name.substr(0, 64) +
                                 " (the history takes queue, repeated, and seconds)"));
      return;
    }
  }
  if (queues.empty() || queues.size() > 100) {
    respond(error_response(errc::invalid_argument, "name 1..100 queues: ?queue=A&queue=B"));
    return;
  }
  json out = json::object();
  StatsHistory::Series s;
  for (const std::string& queue : queues) {
    // Queues the token may not see are left out, as in the list.
    if (!broker_.auth().can_see(grant, queue) || !history_.series(queue, seconds, s)) continue;
    out[queue] = {{"depth", s.depth},
                  {"published", s.published},
                  {"delivered", s.delivered},
                  {"acked", s.acked}};
  }
  respond(json_response(200, {{"interval_ms", 1000}, {"queues", std::move(out)}}));
}

void HttpApi::log_level(const HttpRequest& request, Respond& respond) {
  static constexpr const char* kLevels[] = {"trace", "debug", "info", "warn", "error"};
  if (request.method == "PUT") {
    std::string problem;
    auto body = parse_body(request, false, {"level"}, problem);
    int level = -1;
    if (body) {
      if (auto it = body->find("level"); it != body->end() && it->is_string())
        for (int i = 0; i < 5; ++i)
          if (it->get<std::string>() == kLevels[i]) level = i;
    }
    if (level < 0) {
      respond(error_response(errc::invalid_argument,
                             "log-level: {\"level\": trace|debug|info|warn|error}"));
      return;
    }
    log::set_level(static_cast<log::Level>(level));
    log::info("log_level_set").str("level", kLevels[level]).str("peer", request.peer);
  } else if (request.method != "GET") {
    respond(method_not_allowed("GET, PUT"));
    return;
  }
  int current = 4;
  for (int i = 4; i >= 0; --i)
    if (log::enabled(static_cast<log::Level>(i))) current = i;
  respond(json_response(200, {{"level", kLevels[current]}}));
}

void HttpApi::dead_letters(const QueueCall& call, Respond& respond) {
  const HttpRequest& request = call.request;
  const std::string_view queue = call.queue;
  const std::string_view rest = call.rest;
  DeadLetters* dead_letters = broker_.dead_letters();
  if (dead_letters == nullptr) {
    respond(error_response(errc::unsupported, "this broker keeps no dead letters"));
    return;
  }
  const auto [path, query] = split_target(request.target);
  protocol::DeadLetterRequest req;
  req.queue = queue;
  std::string problem;
  std::uint64_t single = 0;
  const bool one = rest.size() > 1 && rest[0] == '/' && parse_uint(rest.substr(1), single);
  std::optional<json> body;
  if (rest.empty() && request.method == "GET") {
    req.op = protocol::DeadLetterOp::list;
    for (const auto& [name, value] : query) {
      std::uint64_t n = 0;
      if (name == "limit" && parse_uint(value, n) && n >= 1 && n <= 1000)
        req.limit = static_cast<std::uint32_t>(n);
      else if (name == "after" && parse_uint(value, n))
        req.after = n;
      else if (name == "order" && (value == "newest" || value == "oldest"))
        req.flags = value == "newest" ? protocol::kDeadLettersNewestFirst : 0;
      else
        problem = "unknown or bad query parameter " + name +
                  " (limit=1..1000, after=ENTRY_ID, order=oldest|newest)";
    }
  } else if (rest.empty() && request.method == "DELETE") {
    req.op = protocol::DeadLetterOp::purge;
  } else if (one && (request.method == "GET" || request.method == "DELETE")) {
    req.op =
        request.method == "GET" ? protocol::DeadLetterOp::show : protocol::DeadLetterOp::remove;
    req.ids.push_back(single);
  } else if ((rest == "/redrive" || rest == "/delete") && request.method == "POST") {
    req.op = rest == "/redrive" ? protocol::DeadLetterOp::redrive : protocol::DeadLetterOp::remove;
    if (req.op == protocol::DeadLetterOp::redrive)
      body = parse_body(request, false,
                        {"ids", "min_age_ms", "max_age_ms", "reason", "rate", "all"}, problem);
    else
      body = parse_body(request, false, {"ids"}, problem);
    if (body) {
      std::uint64_t rate_milli = 0;
      if (auto it = body->find("ids"); it != body->end()) {
        if (!it->is_array() || it->size() > protocol::kMaxDeadLetterIds) {
          problem = "ids must be an array of up to 10000 entry ids";
        } else {
          for (const auto& v : *it) {
            if (!v.is_number_unsigned()) {
              problem = "ids must be entry ids (integers)";
              break;
            }
            req.ids.push_back(v.get<std::uint64_t>());
          }
        }
      }
      if (problem.empty()) {
        read_uint(*body, "min_age_ms", UINT64_MAX, 0, req.min_age_ms, problem);
        read_uint(*body, "max_age_ms", UINT64_MAX, 0, req.max_age_ms, problem);
      }
      if (problem.empty()) {
        if (auto it = body->find("rate"); it != body->end() && !it->is_null()) {
          if (!it->is_number() || it->get<double>() <= 0 || it->get<double>() > 1e9)
            problem = "rate must be a positive number of messages per second";
          else
            rate_milli = static_cast<std::uint64_t>(it->get<double>() * 1000.0 + 0.5);
        }
      }
      req.rate_milli = static_cast<std::uint32_t>(std::min<std::uint64_t>(rate_milli, UINT32_MAX));
      if (auto it = body->find("reason"); problem.empty() && it != body->end() && !it->is_null()) {
        if (!it->is_string()) problem = "reason must be a string";
      }
      const auto all_it = body->find("all");
      if (all_it != body->end() && !all_it->is_boolean()) problem = "all must be true or false";
      const bool all = all_it != body->end() && all_it->is_boolean() && all_it->get<bool>();
      const auto reason_it = body->find("reason");
      const bool filtered = req.min_age_ms || req.max_age_ms ||
                            (reason_it != body->end() && reason_it->is_string() &&
                             !reason_it->get<std::string>().empty());
      if (problem.empty() && req.ids.empty() && !all && !filtered)
        problem =
            "name the entries: \"ids\", a filter (min_age_ms, max_age_ms, reason) or \"all\": true";
      if (problem.empty() && req.op == protocol::DeadLetterOp::remove && req.ids.empty())
        problem = "delete needs \"ids\" (DELETE on the dlq purges it)";
    }
  } else {
    respond(error_response(errc::not_found, "no such endpoint: " + std::string(path)));
    return;
  }
  // The reason filter must outlive the request struct's view.
  std::string reason;
  if (body && body->contains("reason") && (*body)["reason"].is_string()) {
    reason = (*body)["reason"].get<std::string>();
    req.reason = reason;
  }
  if (!problem.empty()) {
    respond(error_response(errc::invalid_argument, "dlq: " + problem));
    return;
  }
  // Pages of a listing stop well below a response's size.
  DeadLetterResult result;
  if (auto e = dead_letters->run(req, (4u << 20) - 4096, result)) {
    respond(error_response(e.code, e.detail));
    return;
  }
  const auto entry_json = [](const DeadLetter& e) {
    json j = {{"entry_id", e.entry_id},
              {"message_id", e.message_id},
              {"queue", e.queue},
              {"attempts", e.attempts},
              {"published_at_ms", e.publish_wall_us / 1000},
              {"first_failure_at_ms", e.first_failure_wall_us / 1000},
              {"last_failure_at_ms", e.last_failure_wall_us / 1000},
              {"reason", e.reason}};
    describe_message(e.message, j);
    return j;
  };
  switch (req.op) {
    case protocol::DeadLetterOp::list: {
      json entries = json::array();
      for (const auto& e : result.entries) entries.push_back(entry_json(e));
      json j = {{"total", result.affected}, {"entries", std::move(entries)}};
      if (result.next_after != 0) j["next_after"] = result.next_after;
      respond(json_response(200, j));
      break;
    }
    case protocol::DeadLetterOp::show:
      respond(json_response(200, entry_json(result.entries.at(0))));
      break;
    case protocol::DeadLetterOp::remove:
      if (one && result.affected == 0) {
        respond(error_response(errc::not_found, "no dead letter " + std::to_string(single) +
                                                    " in " + std::string(queue)));
        break;
      }
      [[fallthrough]];
    default:
      respond(json_response(req.op == protocol::DeadLetterOp::redrive ? 202 : 200,
                            {{"affected", result.affected}}));
  }
}

}  // namespace sluice::net
