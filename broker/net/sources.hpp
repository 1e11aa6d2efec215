// Sources: verified webhook senders ([sources.NAME], docs/ingress.md). Each
// gets POST /v1/sources/NAME, which needs no bearer token: the request's
// signature, made with a secret shared with the sender, is its credential.
// Four schemes: GitHub, Stripe, Standard Webhooks and a generic HMAC-SHA256
// header. Secrets are read at start and on SIGHUP; during a rotation the
// previous secret is accepted too. Engine thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http_types.hpp"
#include "sluice/config/settings.hpp"
#include "sluice/protocol/error.hpp"
#include "token_bucket.hpp"

namespace sluice::net {

/// What a source's requests came to, for sluice_source_requests_total.
struct SourceCounts {
  std::uint64_t accepted = 0;       // enqueued
  std::uint64_t duplicate = 0;      // a delivery id seen within the queue's dedup_window
  std::uint64_t bad_signature = 0;  // 401: missing, malformed or wrong signature
  std::uint64_t stale = 0;          // 400: signed, but its timestamp is outside the tolerance
  std::uint64_t rate_limited = 0;   // 429: over the source's rate
  std::uint64_t refused = 0;        // signed, but the queue refused it (full, too large, ...)
};

class Sources {
 public:
  struct Source {
    config::SourceSettings settings;
    std::vector<std::string> keys;  // HMAC keys: the secret, then the previous one
    engine::TokenBucket bucket;
    SourceCounts counts;
  };

  /// Reads every source's secrets into `out`; the first problem as one line.
  static Error load(const std::vector<config::SourceSettings>& settings, engine::Micros now,
                    std::vector<Source>& out);
  /// Replaces the running set; a source keeps its counts (and its bucket, if
  /// its rate did not change).
  void replace(std::vector<Source> next);

  Source* find(std::string_view name) noexcept;
  const std::vector<Source>& all() const noexcept { return sources_; }

  enum class Verdict { ok, bad_signature, stale };
  /// Checks `request`'s signature as `source`'s scheme defines it, with any of
  /// its keys (compared in constant time), then its timestamp against `now_s`
  /// (Unix seconds). On ok, `delivery_id` is what the sender's retries of this
  /// delivery repeat ("" if the scheme has none).
  static Verdict verify(const Source& source, const HttpRequest& request, std::int64_t now_s,
                        std::string& delivery_id);

 private:
  std::vector<Source> sources_;
};

/// How a secret file's content stands for an HMAC key.
enum class SecretForm {
  raw,           // the content itself (GitHub, Stripe, generic HMAC)
  whsec_prefix,  // "whsec_<base64>" is the key its base64 encodes, else the content
  base64,        // base64, with or without "whsec_" (a Standard Webhooks verifier)
};

/// Reads the HMAC key in the file at `path` (trailing whitespace dropped; at
/// least 16 bytes). A problem names `setting` and the path.
Error read_secret_key(const std::string& path, SecretForm form, std::string_view setting,
                      std::string& key);

/// The name of `scheme` as the config writes it.
std::string_view to_string(config::SourceScheme scheme) noexcept;

}  // namespace sluice::net
