// POST /v1/sources/NAME: a verified webhook (sources.hpp, docs/ingress.md).
// The signature is checked before anything else is looked at; a bad one is
// answered 401 with nothing that would help an attacker.
#include "broker.hpp"
#include "clock.hpp"
#include "cloudevents.hpp"
#include "http_api.hpp"
#include "http_json.hpp"
#include "log.hpp"
#include "sluice/protocol/frames.hpp"
#include "sources.hpp"

namespace sluice::net {

namespace {

/// The sender's own headers worth keeping on the message, by scheme.
bool kept_header(config::SourceScheme scheme, std::string_view name, std::string_view id_header) {
  if (name == "content-type") return true;
  switch (scheme) {
    case config::SourceScheme::github:
      return name == "x-github-event" || name == "x-github-delivery" || name == "x-github-hook-id";
    case config::SourceScheme::standard_webhooks:
      return name == "webhook-id" || name == "webhook-timestamp";
    case config::SourceScheme::stripe:
      return false;
    case config::SourceScheme::hmac:
      return !id_header.empty() && name == id_header;
  }
  return false;
}

}  // namespace

void HttpApi::source(const HttpRequest& request, std::string_view name, Respond& respond) {
  Sources::Source* source = broker_.sources().find(name);
  if (source == nullptr) {
    respond(error_response(errc::not_found, "no such source"));
    return;
  }
  if (request.body.size() > options_.max_payload_bytes) {  // before any HMAC over it
    ++source->counts.refused;
    respond(error_response(errc::payload_too_large, "payload over limits.max_payload_bytes"));
    return;
  }
  const auto rejected = [&](const char* reason) {
    log::warn("source_rejected")
        .str("source", source->settings.name)
        .str("peer", request.peer)
        .str("reason", reason);
  };
  std::string delivery_id;
  switch (Sources::verify(*source, request, wall_us() / 1'000'000, delivery_id)) {
    case Sources::Verdict::ok:
      break;
    case Sources::Verdict::bad_signature:
      ++source->counts.bad_signature;
      rejected("bad_signature");
      respond(error_response(errc::unauthenticated, "unauthenticated"));
      return;
    case Sources::Verdict::stale:
      ++source->counts.stale;
      rejected("stale");
      respond(error_response(errc::invalid_argument,
                             "the request's timestamp is outside the source's tolerance"));
      return;
  }
  const engine::Micros now = mono_us();
  if (!source->bucket.unlimited() && !source->bucket.try_take(now)) {
    ++source->counts.rate_limited;
    respond(error_response(errc::queue_full, "over the source's rate (sources.NAME.rate)",
                           source->bucket.next_available(now) - now));
    return;
  }
  const config::SourceScheme scheme = source->settings.scheme.value_or(config::SourceScheme::hmac);
  std::vector<PublishDraft> drafts(1);
  PublishDraft& d = drafts.front();
  d.payload = request.body;
  for (const auto& [header, value] : request.headers)
    if (kept_header(scheme, header, source->settings.id_header))
      d.headers.emplace_back(header, value);
  d.headers.emplace_back("sluice-source", source->settings.name);
  if (!delivery_id.empty()) {
    d.headers.emplace_back(std::string(protocol::kDedupHeader),
                           cloudevents::pair_dedup_id("src", source->settings.name, delivery_id));
    if (delivery_id.size() <= 200) d.correlation_id = delivery_id;
  }
  if (!publish_drafts(source->settings.queue, drafts, false, respond)) {
    ++source->counts.refused;
    return;
  }
  if (taken_.duplicates.empty())
    ++source->counts.accepted;
  else
    ++source->counts.duplicate;
}

}  // namespace sluice::net
