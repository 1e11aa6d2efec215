// The HTTP API's trigger endpoints: list, pause, resume, and a test invocation.
// Each needs admin rights on the trigger's queue.
#include "http_api.hpp"

#include "broker.hpp"
#include "http_json.hpp"
#include "triggers.hpp"

namespace sluice::net {

namespace {

json trigger_json(const Trigger& t) {
  json outcomes = json::object();
  for (std::size_t i = 0; i < kInvocationOutcomes; ++i) {
    const auto outcome = static_cast<InvocationOutcome>(i);
    outcomes[std::string(to_string(outcome))] = t.invocations(outcome);
  }
  const TriggerOptions& o = t.options();
  return {{"name", o.settings.name},
          {"queue", o.settings.queue},
          {"url", (o.url.tls ? "https://" : "http://") + o.url.origin() + o.url.target},
          {"state", t.paused() ? "paused" : "running"},
          {"breaker", to_string(t.breaker())},
          {"concurrency", o.settings.adaptive ? "adaptive" : "fixed"},
          {"concurrency_limit", t.limit()},
          {"in_flight", t.in_flight()},
          {"messages_sent", t.messages_sent()},
          {"invocations", std::move(outcomes)}};
}

}  // namespace

void HttpApi::triggers(const HttpRequest& request, std::string_view rest, Grant& grant,
                       Respond& respond) {
  if (triggers_ == nullptr) {
    respond(error_response(errc::not_found, "this broker runs no triggers"));
    return;
  }
  if (rest.empty()) {
    if (request.method != "GET") {
      respond(error_response(errc::invalid_argument, "GET /v1/triggers lists them"));
      return;
    }
    json list = json::array();
    for (const auto& [name, trigger] : triggers_->running())
      if (broker_.auth().check(grant, Permission::admin, trigger->options().settings.queue) ==
          errc::ok)
        list.push_back(trigger_json(*trigger));
    respond(json_response(200, {{"triggers", std::move(list)}}));
    return;
  }
  const auto slash = rest.find('/');
  const std::string name(rest.substr(0, slash));
  const std::string_view action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  const auto it = triggers_->running().find(name);
  if (it == triggers_->running().end()) {
    respond(error_response(errc::not_found, "no trigger named " + name));
    return;
  }
  Trigger& trigger = *it->second;
  if (!allowed(grant, Permission::admin, trigger.options().settings.queue, respond)) return;
  if (action.empty() && request.method == "GET") {
    respond(json_response(200, trigger_json(trigger)));
  } else if ((action == "pause" || action == "resume") && request.method == "POST") {
    trigger.set_paused(action == "pause");
    respond(json_response(200, trigger_json(trigger)));
  } else if (action == "invoke" && request.method == "POST") {
    trigger.test_invoke(request.body, [respond](OutboundResponse&& r) mutable {
      static constexpr const char* kOutcome[] = {"answered", "timeout", "connect_error", "broken"};
      json answer = {{"outcome", kOutcome[static_cast<int>(r.outcome)]},
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
