// The CloudEvents 1.0 HTTP binding on POST /v1/queues/{queue}/messages
// (docs/ingress.md): binary mode (ce-* headers, the body is the data),
// structured mode (application/cloudevents+json, the body is the event) and
// batch mode (application/cloudevents-batch+json, an array of events). The
// required attributes are checked; every attribute is kept as a "ce-NAME"
// message header; the payload stays as the event came (binary: the data;
// structured and batch: the event as JSON), so consumers, HTTP receives and
// triggers get each event in the mode it arrived in. `source` + `id` is the
// dedup id unless the request sets sluice-dedup-id.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http_types.hpp"
#include "publish_draft.hpp"

namespace sluice::net::cloudevents {

enum class Mode { none, binary, structured, batch };

inline constexpr std::string_view kStructuredType = "application/cloudevents+json";
inline constexpr std::string_view kBatchType = "application/cloudevents-batch+json";

/// True when the Content-Type value `content_type` is the media type `type`
/// (lower-case): parameters and surrounding blanks aside, case-insensitive.
/// Inline: the schema check (broker/net, below HTTP) asks it too.
inline bool is_media_type(std::string_view content_type, std::string_view type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && (content_type.back() == ' ' || content_type.back() == '\t'))
    content_type.remove_suffix(1);
  while (!content_type.empty() && (content_type.front() == ' ' || content_type.front() == '\t'))
    content_type.remove_prefix(1);
  if (content_type.size() != type.size()) return false;
  for (std::size_t i = 0; i < type.size(); ++i) {
    const char c = content_type[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != type[i]) return false;
  }
  return true;
}

/// The dedup id of a pair that is unique together (an event's source and id,
/// a webhook source's name and delivery id): "TAG:<length of first>:<first><second>",
/// the length keeping ("a:b", "c") apart from ("a", "b:c"); "TAG:sha256:<hex>"
/// of that when it would pass the 255 bytes a dedup id may have.
std::string pair_dedup_id(std::string_view tag, std::string_view first, std::string_view second);

/// Which mode `request` is in: the content type names structured and batch;
/// a ce-specversion header otherwise means binary.
Mode mode_of(const HttpRequest& request);

/// Binary mode: checks the required ce-* headers of `request` and adds every
/// ce-* header (and, unless `draft` has one, the dedup id) to `draft`. The
/// problem, or nullopt.
std::optional<std::string> from_binary(const HttpRequest& request, PublishDraft& draft);

/// Structured and batch mode: the events of `body` (one object, or an array
/// of at most `max_events`), each as a draft: its attributes as ce-* headers,
/// the event's JSON as the payload, content-type application/cloudevents+json.
/// The problem (naming the event's index in a batch), or nullopt.
std::optional<std::string> from_json(std::string_view body, bool batch, std::size_t max_events,
                                     std::vector<PublishDraft>& drafts);

/// The dedup id of an event: unique per (source, id), as the spec makes that pair.
std::string dedup_id(std::string_view source, std::string_view id);

}  // namespace sluice::net::cloudevents
