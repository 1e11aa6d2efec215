#include "http_api.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <cstring>
#include <cctype>

#include "broker.hpp"
#include "durable_store.hpp"
#include "http_json.hpp"
#include "http_util.hpp"
#include "metrics.hpp"
#include "json_body.hpp"
#include "log.hpp"
#include "sluice/protocol/codec.hpp"
#include "ui_assets.hpp"

namespace sluice::net {

namespace {

constexpr std::string_view kQueuesPrefix = "/v1/queues";

}  // namespace

/// The endpoints under /v1/queues/{queue}/: what follows the queue name, the
/// method ("": the handler tells them apart), the right the token needs on
/// the queue, and the handler. docs/http-api.md lists the same.
struct HttpApi::QueueRoute {
  std::string_view action;
  bool prefix;  // also matches action + "/..." (the rest is handed on)
  std::string_view method;
  Permission need;
  void (HttpApi::*handler)(const QueueCall&, Respond&);
};

const HttpApi::QueueRoute HttpApi::kQueueRoutes[] = {
    {"", false, "GET", Permission::read, &HttpApi::queue_show},
    {"", false, "PUT", Permission::admin, &HttpApi::queue_lifecycle},
    {"", false, "DELETE", Permission::admin, &HttpApi::queue_lifecycle},
    {"", false, "PATCH", Permission::admin, &HttpApi::queue_lifecycle},
    {"purge", false, "POST", Permission::admin, &HttpApi::queue_lifecycle},
    {"messages", false, "POST", Permission::publish, &HttpApi::publish_one},
    {"messages/batch", false, "POST", Permission::publish, &HttpApi::publish_batch},
    {"receive", false, "POST", Permission::consume, &HttpApi::receive},
    {"ack", false, "POST", Permission::consume, &HttpApi::settle},
    {"nack", false, "POST", Permission::consume, &HttpApi::settle},
    {"extend", false, "POST", Permission::consume, &HttpApi::settle},
    {"dlq", true, "", Permission::admin, &HttpApi::dead_letters},
};

namespace {

/// The token of "Authorization: Bearer <token>" ("" if none).
std::string_view bearer_token(const HttpRequest& request) {
  for (const auto& [name, value] : request.headers) {
    if (name != "authorization") continue;
    std::string_view v = value;
    if (v.size() < 7) return {};
    std::string scheme(v.substr(0, 7));
    for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (scheme != "bearer ") return {};
    v.remove_prefix(7);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return v;
  }
  return {};
}

}  // namespace

std::size_t HttpRequestCounts::route_of(std::string_view path) noexcept {
  static constexpr std::string_view kQueue = "/v1/queues/{queue}";
  // The first route named `name`, or a queue route whose action is `name` (queue = true).
  const auto index = [](std::string_view name, bool queue = false) {
    for (std::size_t i = 0; i < kRouteCount; ++i) {
      std::string_view route = kRoutes[i];
      if (queue) {
        if (route.size() <= kQueue.size() || !route.starts_with(kQueue) ||
            route[kQueue.size()] != '/')
          continue;
        route.remove_prefix(kQueue.size() + 1);
      }
      if (route == name) return i;
    }
    return kRouteCount - 1;
  };
  if (path == "/v1/triggers" || path.starts_with("/v1/triggers/")) return index("/v1/triggers");
  if (path.starts_with("/v1/sources/")) return index("/v1/sources/{source}");
  if (path == "/ui" || path.starts_with("/ui/")) return index("/ui/");
  if (!path.starts_with("/v1/queues/")) return index(path);
  std::string_view action = path.substr(std::strlen("/v1/queues/"));
  const auto slash = action.find('/');
  action = slash == std::string_view::npos ? std::string_view{} : action.substr(slash + 1);
  if (action.empty()) return index(kQueue);
  if (action.starts_with("dlq/")) action = "dlq";
  return index(action, true);
}

void HttpApi::handle(HttpRequest&& request, Respond respond) {
  // Counted when answered, whenever that is (a long poll, a durable commit).
  const std::string_view target = request.target;
  const std::size_t counted = HttpRequestCounts::route_of(target.substr(0, target.find('?')));
  respond = [this, counted, inner = std::move(respond)](HttpResponse r) mutable {
    if (r.status >= 100 && r.status < 600) ++counts_.counts[counted][r.status / 100 - 1];
    inner(std::move(r));
  };
  try {
    route(request, respond);
  } catch (const std::exception& e) {
    // A bug, not bad input (bad input is answered where it is found); the
    // broker stays up and the client learns something went wrong.
    log::error("http_handler_failed").str("target", request.target).str("error", e.what());
    if (respond) respond(error_response(errc::internal, "internal error"));
  }
}

void HttpApi::route(const HttpRequest& request, Respond& respond) {
  const auto [path, query] = split_target(request.target);
  const std::string& method = request.method;
  const auto only = [&](std::string_view allowed) {
    if (method == allowed) return true;
    respond(method_not_allowed(allowed));
    return false;
  };
  if (path == "/healthz") {
    if (only("GET")) respond(json_response(200, {{"status", "ok"}}));
    return;
  }
  if (path == "/readyz") {
    if (!only("GET")) return;
    if (ready_)
      respond(json_response(200, {{"status", "ready"}}));
    else
      respond(json_response(503, {{"status", stopping_ ? "stopping" : "starting"}}));
    return;
  }
  // The console's files hold no data: the page asks for a token when the API
  // wants one (docs/console.md).
  if (path == "/ui" || path.starts_with("/ui/")) {
    if (only("GET")) console_file(path, respond);
    return;
  }
  // A verified source's signature is its credential: no bearer token.
  if (path.starts_with("/v1/sources/")) {
    if (only("POST")) source(request, path.substr(12), respond);
    return;
  }
  // Everything past the health checks needs a token when tokens are configured.
  Grant grant;
  const std::string_view token = bearer_token(request);
  if (broker_.auth().authenticate(token, grant) != errc::ok) {
    broker_.count_auth_failure(Port::http);
    log::warn("authentication_failed")
        .str("listener", "http")
        .str("peer", request.peer)
        .str("reason", token.empty() ? "no token" : "unknown token");
    respond(unauthenticated(token.empty() ? "this broker needs Authorization: Bearer <token>"
                                          : "the bearer token is not valid"));
    return;
  }
  if (path == "/metrics") {
    if (!only("GET")) return;
    if (const errc code = broker_.auth().check_metrics(grant); code != errc::ok) {
      respond(error_response(code, "token " + std::string(grant.name()) +
                                       " may not read /metrics (needs metrics = \"on\")"));
      return;
    }
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_.scrape();
    r.headers.emplace_back("Vary", "Accept-Encoding");
    // Prometheus asks for gzip; a scrape of many queues shrinks about tenfold.
    if (accepts_gzip(request.header("accept-encoding")))
      if (std::string packed = gzip(r.body); !packed.empty()) {
        r.body = std::move(packed);
        r.headers.emplace_back("Content-Encoding", "gzip");
      }
    respond(std::move(r));
    return;
  }
  if (path == "/v1/stats/history") {
    if (only("GET")) stats_history(request, grant, respond);
    return;
  }
  if (path == "/v1/log-level") {
    if (allowed(grant, Permission::admin, kEveryQueue, respond)) log_level(request, respond);
    return;
  }
  if (path == "/v1/triggers" || path.starts_with("/v1/triggers/")) {
    triggers(request, path.size() > 13 ? path.substr(13) : std::string_view{}, grant, respond);
    return;
  }
  if (path == kQueuesPrefix || path == "/v1/queues/") {
    if (only("GET")) queue_list(request, grant, respond);
    return;
  }
  if (path.substr(0, kQueuesPrefix.size() + 1) != "/v1/queues/") {
    respond(error_response(errc::not_found, "no such endpoint: " + std::string(path)));
    return;
  }
  std::string_view rest = path.substr(kQueuesPrefix.size() + 1);
  const auto slash = rest.find('/');
  // A browser may send a queue's ':' as %3A (encodeURIComponent): names hold
  // no other character that needs it, and '%' none can hold.
  std::string decoded_queue;
  std::string_view queue = rest.substr(0, slash);
  if (queue.find('%') != std::string_view::npos) {
    for (std::size_t i = 0; i < queue.size(); ++i) {
      if (queue.substr(i, 3) == "%3A" || queue.substr(i, 3) == "%3a") {
        decoded_queue += ':';
        i += 2;
      } else {
        decoded_queue += queue[i];
      }
    }
    queue = decoded_queue;
  }
  const std::string_view action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  if (!protocol::valid_queue_name(queue)) {
    respond(error_response(errc::invalid_queue_name,
                           "queue names are " + std::string(protocol::kQueueNameRule)));
    return;
  }
  // Rights are checked before the queue is looked up: 403 whether or not it exists.
  std::string allow;  // the methods the action takes, for a 405
  for (const QueueRoute& r : kQueueRoutes) {
    const bool hit = r.prefix
                         ? action == r.action || action.starts_with(std::string(r.action) + "/")
                         : action == r.action;
    if (!hit) continue;
    if (!r.method.empty() && r.method != method) {
      allow += (allow.empty() ? "" : ", ") + std::string(r.method);
      continue;
    }
    if (!allowed(grant, r.need, queue, respond)) return;
    (this->*r.handler)({request, queue, action, action.substr(r.action.size()), grant}, respond);
    return;
  }
  if (!allow.empty()) {
    respond(method_not_allowed(allow));
    return;
  }
  respond(error_response(errc::not_found, "no such endpoint: " + std::string(path)));
}

void HttpApi::console_file(std::string_view path, Respond& respond) {
  if (path == "/ui") {
    HttpResponse r;
    r.status = 308;
    r.content_type = "text/plain; charset=utf-8";
    r.headers.emplace_back("Location", "/ui/");
    respond(std::move(r));
    return;
  }
  std::string_view name = path.substr(4);
  if (name.empty()) name = "index.html";
  const auto asset = find_ui_asset(name);
  if (!asset) {
    respond(error_response(errc::not_found, "no such file in the console"));
    return;
  }
  HttpResponse r;
  r.content_type = std::string(asset->content_type);
  r.body = std::string(asset->body);
  // Only our own files run, nothing inline, and no page may frame it.
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'self'; script-src 'self'; style-src 'self'; "
                         "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                         "base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("Cache-Control", "no-cache");
  respond(std::move(r));
}

bool HttpApi::allowed(Grant& grant, Permission what, std::string_view queue, Respond& respond) {
  const errc code = broker_.auth().check(grant, what, queue);
  if (code == errc::ok) return true;
  static constexpr const char* kWhat[] = {"publish to", "consume from", "administer", "see"};
  const std::string target =
      queue == kEveryQueue ? std::string("the broker") : "queue " + std::string(queue);
  respond(code == errc::unauthenticated
              ? unauthenticated("the token was revoked")
              : error_response(code, "token " + std::string(grant.name()) + " may not " +
                                         kWhat[static_cast<int>(what)] + " " + target));
  return false;
}

}  // namespace sluice::net
