// The HTTP API's trigger endpoints: list, pause, resume, and a test invocation.
// Each needs admin rights on the trigger's queue.
#include "http_api.hpp"

#include "broker.hpp"
#include "http_json.hpp"
#include "triggers.hpp"

namespace sluice::net {

namespace {

json trigger_json(const Trigger& t) {
  const protocol::TriggerEntry e = t.entry();
  json outcomes = json::object();
  for (std::size_t i = 0; i < kInvocationOutcomes; ++i)
    outcomes[std::string(to_string(static_cast<InvocationOutcome>(i)))] = e.invocations[i];
  const config::TriggerSettings& s = t.options().settings;
  return {{"name", e.name},
          {"queue", e.queue},
          {"url", e.url},
          {"state", e.paused ? "paused" : "running"},
          {"breaker", to_string(t.breaker())},
          {"concurrency", e.adaptive ? "adaptive" : "fixed"},
          {"concurrency_limit", e.limit},
          {"max_concurrency", s.max_concurrency},
          {"batch_size", s.batch_size},
          {"rate", static_cast<double>(s.rate) / 1000.0},
          {"in_flight", e.in_flight},
          {"messages_sent", e.messages_sent},
          {"latency_ms", t.average_latency_us() / 1000.0},
          {"invocations", std::move(outcomes)}};
}

}  // namespace

void HttpApi::triggers(const HttpRequest& request, std::string_view rest, Grant& grant,
                       Respond& respond) {
  const Triggers* triggers = broker_.triggers();
  if (triggers == nullptr) {
    respond(error_response(errc::not_found, "this broker runs no triggers"));
    return;
  }
  if (rest.empty()) {
    if (request.method != "GET") {
      respond(error_response(errc::invalid_argument, "GET /v1/triggers lists them"));
      return;
    }
    json list = json::array();
    for (const auto& [name, trigger] : triggers->running())
      if (broker_.auth().check(grant, Permission::admin, trigger->options().settings.queue) ==
          errc::ok)
        list.push_back(trigger_json(*trigger));
    respond(json_response(200, {{"triggers", std::move(list)}}));
    return;
  }
  const auto slash = rest.find('/');
  const std::string name(rest.substr(0, slash));
  const std::string_view action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  Trigger* found = triggers->find(name);
  if (found == nullptr) {
    respond(error_response(errc::not_found, "no trigger named " + name));
    return;
  }
  Trigger& trigger = *found;
  if (!allowed(grant, Permission::admin, trigger.options().settings.queue, respond)) return;
  if (action.empty() && request.method == "GET") {
    respond(json_response(200, trigger_json(trigger)));
  } else if ((action == "pause" || action == "resume") && request.method == "POST") {
    trigger.set_paused(action == "pause");
    respond(json_response(200, trigger_json(trigger)));
  } else if (action == "invoke" && request.method == "POST") {
    trigger.test_invoke(request.body, [respond](OutboundResponse&& r) mutable {
      json answer = {{"outcome", to_string(r.outcome)},
                     {"took_ms", static_cast<double>(r.took.count()) / 1000.0}};
      if (r.outcome == TransportOutcome::answered) {
        answer["status"] = r.status;
        answer["body"] = r.body;
      } else {
        answer["error"] = r.error;
      }
      respond(json_response(200, answer));
    });
  } else {
    respond(error_response(errc::not_found,
                           "triggers answer GET /v1/triggers[/NAME] and POST "
                           "/v1/triggers/NAME/pause, /resume or /invoke"));
  }
}

}  // namespace sluice::net
