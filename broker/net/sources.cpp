#include "sources.hpp"

#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "http_util.hpp"
#include "json_depth.hpp"
#include "sluice/security/hmac.hpp"

namespace sluice::net {

namespace {

using config::SourceScheme;

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool parse_seconds(std::string_view text, std::int64_t& out) {
  if (text.empty() || text.size() > 12) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size() && out >= 0;
}

/// True when one of `candidates` is the signature of `signed_text` under one of the keys.
template <typename Encode>
bool any_matches(const Sources::Source& source, std::string_view signed_text,
                 const std::vector<std::string_view>& candidates, Encode&& encode) {
  bool match = false;
  for (const std::string& key : source.keys) {
    const std::string digest = security::hmac_sha256(key, signed_text);
    if (digest.empty()) continue;  // OpenSSL failed: nothing verifies
    const std::string expected = encode(digest);
    for (const std::string_view given : candidates)
      match |= security::constant_time_equal(expected, given);
  }
  return match;
}

std::string hex(const std::string& digest) {
  return security::to_hex(digest);
}

Sources::Verdict fresh(std::int64_t timestamp, std::int64_t now_s,
                       std::chrono::milliseconds tolerance) {
  const std::int64_t skew = timestamp > now_s ? timestamp - now_s : now_s - timestamp;
  return skew * 1000 <= tolerance.count() ? Sources::Verdict::ok : Sources::Verdict::stale;
}

Sources::Verdict verify_github(const Sources::Source& source, const HttpRequest& request,
                               std::string& delivery_id) {
  const std::string* header = request.header("x-hub-signature-256");
  if (header == nullptr || !header->starts_with("sha256=")) return Sources::Verdict::bad_signature;
  const std::string given = lower(std::string_view(*header).substr(7));
  if (!any_matches(source, request.body, {given}, hex)) return Sources::Verdict::bad_signature;
  if (const std::string* id = request.header("x-github-delivery")) delivery_id = *id;
  return Sources::Verdict::ok;
}

Sources::Verdict verify_stripe(const Sources::Source& source, const HttpRequest& request,
                               std::int64_t now_s, std::string& delivery_id) {
  // "t=1492774577,v1=5257a8...,v1=...,v0=...": every v1 is a candidate (Stripe
  // sends one per secret while a rotation lasts).
  const std::string* header = request.header("stripe-signature");
  if (header == nullptr) return Sources::Verdict::bad_signature;
  std::string_view t;
  std::vector<std::string> v1;
  std::string_view rest = *header;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item.starts_with("t=") && t.empty()) t = item.substr(2);
    if (item.starts_with("v1=") && v1.size() < 8) v1.push_back(lower(item.substr(3)));
  }
  std::int64_t timestamp = 0;
  if (v1.empty() || !parse_seconds(t, timestamp)) return Sources::Verdict::bad_signature;
  std::string signed_text;
  signed_text.reserve(t.size() + 1 + request.body.size());
  signed_text.append(t).append(".").append(request.body);
  const std::vector<std::string_view> candidates(v1.begin(), v1.end());
  if (!any_matches(source, signed_text, candidates, hex)) return Sources::Verdict::bad_signature;
  if (fresh(timestamp, now_s, source.settings.tolerance) != Sources::Verdict::ok)
    return Sources::Verdict::stale;
  // Stripe's retries of an event repeat its id ("evt_..."), in the body.
  const auto event = json_depth_within(request.body)
                         ? nlohmann::json::parse(request.body, nullptr, false)
                         : nlohmann::json(nlohmann::json::value_t::discarded);
  if (event.is_object())
    if (auto id = event.find("id"); id != event.end() && id->is_string())
      delivery_id = id->get<std::string>();
  return Sources::Verdict::ok;
}

Sources::Verdict verify_standard(const Sources::Source& source, const HttpRequest& request,
                                 std::int64_t now_s, std::string& delivery_id) {
  const std::string* id = request.header("webhook-id");
  const std::string* ts = request.header("webhook-timestamp");
  const std::string* header = request.header("webhook-signature");
  std::int64_t timestamp = 0;
  if (id == nullptr || ts == nullptr || header == nullptr || !parse_seconds(*ts, timestamp))
    return Sources::Verdict::bad_signature;
  // "v1,<base64> v1,<base64>": space-separated, one per secret the sender holds.
  std::vector<std::string_view> candidates;
  std::string_view rest = *header;
  while (!rest.empty() && candidates.size() < 8) {
    const auto space = rest.find(' ');
    const std::string_view item = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view{} : rest.substr(space + 1);
    if (item.starts_with("v1,")) candidates.push_back(item.substr(3));
  }
  std::string signed_text;
  signed_text.reserve(id->size() + ts->size() + request.body.size() + 2);
  signed_text.append(*id).append(".").append(*ts).append(".").append(request.body);
  if (candidates.empty() || !any_matches(source, signed_text, candidates, base64_encode))
    return Sources::Verdict::bad_signature;
  if (fresh(timestamp, now_s, source.settings.tolerance) != Sources::Verdict::ok)
    return Sources::Verdict::stale;
  delivery_id = *id;
  return Sources::Verdict::ok;
}

Sources::Verdict verify_hmac(const Sources::Source& source, const HttpRequest& request,
                             std::string& delivery_id) {
  const std::string* header = request.header(source.settings.signature_header);
  if (header == nullptr) return Sources::Verdict::bad_signature;
  std::string_view given = *header;
  if (given.starts_with("sha256=")) given.remove_prefix(7);
  bool match = false;
  if (source.settings.signature_base64) {
    match = any_matches(source, request.body, {given}, base64_encode);
  } else {
    const std::string lowered = lower(given);
    match = any_matches(source, request.body, {lowered}, hex);
  }
  if (!match) return Sources::Verdict::bad_signature;
  if (!source.settings.id_header.empty())
    if (const std::string* id = request.header(source.settings.id_header)) delivery_id = *id;
  return Sources::Verdict::ok;
}

}  // namespace

Error read_secret_key(const std::string& path, SecretForm form, std::string_view setting,
                      std::string& key) {
  const std::string where = std::string(setting) + " (" + path + ")";
  std::error_code ec;
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path, ec))
    return {errc::invalid_argument, where + ": cannot read the secret file"};
  std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!secret.empty() && std::isspace(static_cast<unsigned char>(secret.back())))
    secret.pop_back();
  const bool prefixed = secret.starts_with("whsec_");
  if (form == SecretForm::base64 || (form == SecretForm::whsec_prefix && prefixed)) {
    auto decoded = base64_decode(std::string_view(secret).substr(prefixed ? 6 : 0));
    if (!decoded)
      return {errc::invalid_argument, where + ": a Standard Webhooks secret is base64 (whsec_...)"};
    secret = std::move(*decoded);
  }
  if (secret.size() < 16)
    return {errc::invalid_argument, where +
                                        ": the key is shorter than 16 bytes; make a longer "
                                        "one (e.g. openssl rand -base64 32)"};
  key = std::move(secret);
  return {};
}

std::string_view to_string(config::SourceScheme scheme) noexcept {
  switch (scheme) {
    case SourceScheme::github:
      return "github";
    case SourceScheme::stripe:
      return "stripe";
    case SourceScheme::standard_webhooks:
      return "standard-webhooks";
    case SourceScheme::hmac:
      return "hmac";
  }
  return "hmac";
}

Error Sources::load(const std::vector<config::SourceSettings>& settings, engine::Micros now,
                    std::vector<Source>& out) {
  out.clear();
  for (const auto& s : settings) {
    Source source;
    source.settings = s;
    const SourceScheme scheme = s.scheme.value_or(SourceScheme::hmac);
    // Stripe signs with the whole "whsec_..." string; Standard Webhooks with what it encodes.
    const SecretForm form =
        scheme == SourceScheme::standard_webhooks ? SecretForm::base64 : SecretForm::raw;
    for (const std::string* file : {&s.secret_file, &s.previous_secret_file}) {
      if (file->empty()) continue;
      std::string key;
      if (Error problem = read_secret_key(*file, form, "sources." + s.name, key)) return problem;
      source.keys.push_back(std::move(key));
    }
    if (s.rate != 0) source.bucket = engine::TokenBucket(s.rate, s.burst, now);
    out.push_back(std::move(source));
  }
  return {};
}

void Sources::replace(std::vector<Source> next) {
  for (Source& s : next) {
    const Source* old = find(s.settings.name);
    if (old == nullptr) continue;
    s.counts = old->counts;
    if (old->settings.rate == s.settings.rate && old->settings.burst == s.settings.burst)
      s.bucket = old->bucket;
  }
  sources_ = std::move(next);
}

Sources::Source* Sources::find(std::string_view name) noexcept {
  for (Source& s : sources_)
    if (s.settings.name == name) return &s;
  return nullptr;
}

Sources::Verdict Sources::verify(const Source& source, const HttpRequest& request,
                                 std::int64_t now_s, std::string& delivery_id) {
  delivery_id.clear();
  switch (source.settings.scheme.value_or(SourceScheme::hmac)) {
    case SourceScheme::github:
      return verify_github(source, request, delivery_id);
    case SourceScheme::stripe:
      return verify_stripe(source, request, now_s, delivery_id);
    case SourceScheme::standard_webhooks:
      return verify_standard(source, request, now_s, delivery_id);
    case SourceScheme::hmac:
      return verify_hmac(source, request, delivery_id);
  }
  return Verdict::bad_signature;
}

}  // namespace sluice::net
