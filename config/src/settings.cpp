// validate() and the small public helpers: ConfigError::to_string(), parse_endpoint(),
// is_loopback_host(), pattern_matches() and to_string(LogLevel). Loading is in
// settings_loader.cpp; the field tables are in settings_schema.cpp.

#include "settings_internal.hpp"

#include <arpa/inet.h>

#include "sluice/security/token.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

namespace sluice::config {
// The helpers of settings_internal.hpp.
using namespace detail;

// ---------------------------------------------------------------------------------------------
// Public API

std::string ConfigError::to_string() const {
  // Only control characters are escaped: the parts already quote user text, and a newline here
  // would split one problem across log lines.
  std::string out;
  auto append = [&out](std::string_view part) {
    for (char c : part) append_escaped(out, c);
  };
  append(file);
  if (line > 0) out += ":" + std::to_string(line);
  if (!out.empty()) out += ": ";
  if (!setting.empty()) {
    append(setting);
    out += ": ";
  }
  append(problem);
  if (!allowed.empty()) {
    out += " (allowed: ";
    append(allowed);
    out += ")";
  }
  return out;
}

namespace {

template <class Target>
std::optional<ConfigError> check_ranges(const Target& target, std::string_view prefix,
                                        std::span<const Field<Target>> fields) {
  for (const auto& field : fields) {
    if (!field.read) continue;
    const Number value = field.read(target);
    std::string shown = format(field.rule.kind, value.magnitude);
    if (value.negative) shown.insert(0, 1, '-');
    auto problem = range_problem(field.rule, value, shown);
    if (!problem && field.rule.kind == Kind::rate && value.magnitude != 0 &&
        value.magnitude < kMinRateMilli)
      problem = shown + " is below the minimum of 0.1/s (0 means no limit)";
    if (problem) {
      return ConfigError{"", 0, std::string(prefix) + "." + std::string(field.key),
                         std::move(*problem), allowed_text(field.rule)};
    }
  }
  return std::nullopt;
}

/// What one field cannot see: the low watermark must be below the high one.
std::optional<ConfigError> check_queue(const QueueSettings& queue, std::string_view prefix) {
  if (auto problem = check_ranges(queue, prefix, kQueueFieldSpan)) return problem;
  if (queue.low_watermark >= queue.high_watermark) {
    return ConfigError{"", 0, std::string(prefix) + ".low_watermark",
                       std::to_string(queue.low_watermark) + " is not below high_watermark (" +
                           std::to_string(queue.high_watermark) + ")",
                       "a percent below " + std::string(prefix) + ".high_watermark"};
  }
  if ((queue.ordered || queue.resequence) && queue.key_header.empty()) {
    return ConfigError{"", 0, std::string(prefix) + ".key_header",
                       "ordering and resequence need a key header, and key_header is \"\"",
                       "a header name (the default is \"sluice-key\")"};
  }
  return std::nullopt;
}

}  // namespace

std::optional<ConfigError> validate(const Settings& settings) {
  for (const auto& table : kSettingsTables) {
    if (auto problem = check_ranges(settings, table.name, table.fields)) return problem;
  }
  if (!is_listen_host(settings.listen_host)) {
    return ConfigError{"", 0, "server.listen", "invalid host " + quote(settings.listen_host),
                       allowed_text({.kind = Kind::endpoint})};
  }
  if (!is_listen_host(settings.http_host)) {
    return ConfigError{"", 0, "http.listen", "invalid host " + quote(settings.http_host),
                       allowed_text({.kind = Kind::endpoint})};
  }
  if (settings.http_enabled && settings.http_port != 0 &&
      settings.http_port == settings.listen_port && settings.http_host == settings.listen_host) {
    return ConfigError{"", 0, "http.listen",
                       "the same address as server.listen (" + settings.listen_host + ":" +
                           std::to_string(settings.listen_port) + ")",
                       "another port, or http.enabled = \"off\""};
  }
  if (static_cast<unsigned>(settings.log_level) > static_cast<unsigned>(LogLevel::error)) {
    return ConfigError{"", 0, "log.level", "not a known log level",
                       allowed_text({.kind = Kind::log_level})};
  }
  const uint64_t frame = settings.max_frame_bytes;
  if (frame <= kFrameOverhead || settings.max_payload_bytes > frame - kFrameOverhead) {
    const uint64_t room = frame > kFrameOverhead ? frame - kFrameOverhead : 0;
    return ConfigError{"", 0, "limits.max_payload_bytes",
                       format_size(settings.max_payload_bytes) + " does not fit in a frame of " +
                           format_size(frame) +
                           " (limits.max_frame_bytes) with 64KiB kept for frame headers",
                       "at most limits.max_frame_bytes minus 64KiB, here " + format_size(room) +
                           "; raise limits.max_frame_bytes or lower limits.max_payload_bytes"};
  }
  if (auto problem = check_queue(settings.queue_defaults, kQueueDefaults)) return problem;
  for (size_t i = 0; i < settings.queues.size(); ++i) {
    const DeclaredQueue& queue = settings.queues[i];
    const std::string prefix = "queues." + queue.name;
    if (!is_valid_queue_name(queue.name)) {
      return ConfigError{"", 0, prefix, "invalid queue name " + quote(queue.name),
                         std::string(kQueueNameAllowed)};
    }
    for (size_t j = 0; j < i; ++j) {
      if (settings.queues[j].name == queue.name) {
        return ConfigError{"", 0, prefix, "queue " + quote(queue.name) + " is declared twice",
                           "each queue name declared once"};
      }
    }
    if (auto problem = check_queue(queue.settings, prefix)) return problem;
    for (size_t v = 0; v < queue.schemas.size(); ++v) {
      const SchemaVersion& schema = queue.schemas[v];
      const std::string where = prefix + ".schemas." + schema.version;
      if (schema.version.size() > 64 || !is_valid_token_name(schema.version) || schema.file.empty())
        return ConfigError{"", 0, where, "invalid schema version or file",
                           std::string(kSchemaVersionAllowed)};
      for (size_t w = 0; w < v; ++w)
        if (queue.schemas[w].version == schema.version)
          return ConfigError{"", 0, where, "version " + quote(schema.version) + " is given twice",
                             "each version once"};
    }
    if (queue.require_schema && queue.schemas.empty())
      return ConfigError{"", 0, prefix + ".require_schema",
                         "\"on\" needs at least one schema version",
                         "[" + prefix +
                             ".schemas] with VERSION = \"file.json\", or "
                             "require_schema = \"off\""};
  }
  if (settings.tls_cert_file.empty() != settings.tls_key_file.empty()) {
    const bool cert = !settings.tls_cert_file.empty();
    return ConfigError{
        "", 0, cert ? "tls.key_file" : "tls.cert_file",
        std::string(cert ? "tls.cert_file" : "tls.key_file") + " is set and this one is not",
        "both tls.cert_file and tls.key_file, or neither"};
  }
  for (size_t i = 0; i < settings.tokens.size(); ++i) {
    const TokenSettings& token = settings.tokens[i];
    const std::string prefix = "tokens." + token.name;
    if (!is_valid_token_name(token.name))
      return ConfigError{"", 0, prefix, "invalid token name " + quote(token.name),
                         std::string(kTokenNameAllowed)};
    for (size_t j = 0; j < i; ++j) {
      if (settings.tokens[j].name == token.name)
        return ConfigError{"", 0, prefix, "token " + quote(token.name) + " is declared twice",
                           "each token name declared once"};
      if (settings.tokens[j].hash == token.hash)
        return ConfigError{"", 0, prefix + ".hash",
                           "the same hash as tokens." + settings.tokens[j].name,
                           "a hash of its own (`sluicectl hash-token` salts each one)"};
    }
    if (!security::is_token_hash(token.hash))
      return ConfigError{"", 0, prefix + ".hash",
                         token.hash.empty() ? "missing" : "not a token hash",
                         allowed_text({.kind = Kind::token_hash})};
    for (const auto* list : {&token.publish, &token.consume, &token.admin}) {
      for (const auto& pattern : *list) {
        if (!is_valid_pattern(pattern))
          return ConfigError{"", 0, prefix, "invalid queue-name pattern " + quote(pattern),
                             allowed_text({.kind = Kind::patterns})};
      }
    }
    if (token.publish.empty() && token.consume.empty() && token.admin.empty() && !token.metrics)
      return ConfigError{"", 0, prefix,
                         "the token may do nothing: publish, consume and admin are all empty and "
                         "metrics is off",
                         "at least one of publish, consume or admin with a queue-name pattern, or "
                         "metrics = \"on\""};
  }
  for (size_t i = 0; i < settings.triggers.size(); ++i) {
    const TriggerSettings& trigger = settings.triggers[i];
    const std::string prefix = "triggers." + trigger.name;
    if (!is_valid_token_name(trigger.name))
      return ConfigError{"", 0, prefix, "invalid trigger name " + quote(trigger.name),
                         std::string(kTokenNameAllowed)};
    for (size_t j = 0; j < i; ++j) {
      if (settings.triggers[j].name == trigger.name)
        return ConfigError{"", 0, prefix, "trigger " + quote(trigger.name) + " is declared twice",
                           "each trigger name declared once"};
    }
    if (!is_valid_queue_name(trigger.queue))
      return ConfigError{
          "", 0, prefix + ".queue",
          trigger.queue.empty() ? "missing" : "invalid queue name " + quote(trigger.queue),
          std::string(kQueueNameAllowed)};
    if (!is_valid_url(trigger.url))
      return ConfigError{"", 0, prefix + ".url",
                         trigger.url.empty() ? "missing" : "not an http or https URL",
                         allowed_text({.kind = Kind::url})};
    if (trigger.batch_size > 1 && !trigger.body_json)
      return ConfigError{"", 0, prefix + ".batch_size",
                         "a batch of " + std::to_string(trigger.batch_size) +
                             " needs body = \"json\" (\"raw\" sends one message per request)",
                         "batch_size = 1, or body = \"json\""};
    if (auto problem = check_ranges(trigger, prefix, kTriggerFieldSpan)) return problem;
    if (trigger.min_concurrency > trigger.max_concurrency)
      return ConfigError{"", 0, prefix + ".min_concurrency",
                         std::to_string(trigger.min_concurrency) + " is above max_concurrency (" +
                             std::to_string(trigger.max_concurrency) + ")",
                         "at most max_concurrency"};
    if (trigger.breaker_open_max < trigger.breaker_open_for)
      return ConfigError{"", 0, prefix + ".breaker_open_max",
                         "below breaker_open_for (" +
                             format_duration(uint64_t(trigger.breaker_open_for.count())) + ")",
                         "a duration at least breaker_open_for"};
  }
  for (size_t i = 0; i < settings.sources.size(); ++i) {
    const SourceSettings& source = settings.sources[i];
    const std::string prefix = "sources." + source.name;
    if (!is_valid_token_name(source.name))
      return ConfigError{"", 0, prefix, "invalid source name " + quote(source.name),
                         std::string(kTokenNameAllowed)};
    for (size_t j = 0; j < i; ++j) {
      if (settings.sources[j].name == source.name)
        return ConfigError{"", 0, prefix, "source " + quote(source.name) + " is declared twice",
                           "each source name declared once"};
    }
    if (!is_valid_queue_name(source.queue))
      return ConfigError{
          "", 0, prefix + ".queue",
          source.queue.empty() ? "missing" : "invalid queue name " + quote(source.queue),
          std::string(kQueueNameAllowed)};
    if (!source.scheme)
      return ConfigError{"", 0, prefix + ".scheme", "missing",
                         "\"github\", \"stripe\", \"standard-webhooks\" or \"hmac\""};
    if (source.secret_file.empty())
      return ConfigError{"", 0, prefix + ".secret_file", "missing",
                         "the path of a file holding the shared secret"};
    if (*source.scheme == SourceScheme::hmac && source.signature_header.empty())
      return ConfigError{"", 0, prefix + ".signature_header", "missing",
                         "the header the sender puts its signature in"};
    if (source.id_header.starts_with("sluice-"))
      return ConfigError{"", 0, prefix + ".id_header",
                         "a sluice-* header is the broker's to read, not a delivery id",
                         "the sender's own delivery-id header, or \"\""};
    if (auto problem = check_ranges(source, prefix, kSourceFieldSpan)) return problem;
    // The queue it feeds: declared, or made from the defaults on first use.
    const DeclaredQueue* declared = nullptr;
    for (const auto& queue : settings.queues)
      if (queue.name == source.queue) declared = &queue;
    if (declared != nullptr && declared->require_schema)
      return ConfigError{
          "", 0, prefix + ".queue",
          "queue " + source.queue + " requires a schema version, which a webhook does not name",
          "a queue without require_schema = \"on\""};
    // A signed timestamp stops replays only for as long as the dedup id is
    // remembered: a request may arrive up to `tolerance` early by the sender's
    // clock and be replayed until `tolerance` after it.
    const auto window =
        (declared != nullptr ? declared->settings : settings.queue_defaults).dedup_window;
    if ((*source.scheme == SourceScheme::stripe ||
         *source.scheme == SourceScheme::standard_webhooks) &&
        window < 2 * source.tolerance)
      return ConfigError{
          "", 0, prefix + ".tolerance",
          "queue " + source.queue + " remembers delivery ids for " +
              format_duration(uint64_t(window.count())) + " (dedup_window), less than twice " +
              format_duration(uint64_t(source.tolerance.count())) +
              ": a request replayed after its id is forgotten would be enqueued again",
          "[queues." + source.queue + "] dedup_window = \"" +
              format_duration(uint64_t(2 * source.tolerance.count())) +
              "\" (or more), or a lower tolerance"};
  }
  // Durable queues need somewhere to keep their messages.
  if (settings.storage_path.empty()) {
    std::string durable;
    if (settings.queue_defaults.durability == Durability::durable)
      durable = std::string(kQueueDefaults);
    for (const auto& queue : settings.queues) {
      if (durable.empty() && queue.settings.durability == Durability::durable)
        durable = "queues." + queue.name;
    }
    if (!durable.empty()) {
      return ConfigError{
          "", 0, durable + ".durability",
          "\"durable\" needs a data directory, and storage.path is \"\" (memory only)",
          "\"memory\", or storage.path set to a directory sluiced may write (or left "
          "out: the default data directory)"};
    }
  }
  return std::nullopt;
}

void resolve_defaults(Settings& settings) {
  if (settings.storage_path_given) return;
  std::string path = "sluice-data";
  if (const char* state = std::getenv("STATE_DIRECTORY"); state != nullptr && *state != '\0') {
    const std::string_view dirs(state);
    path = std::string(dirs.substr(0, dirs.find(':')));
  }
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(path, ec);
  settings.storage_path = ec ? path : absolute.lexically_normal().string();
}

bool parse_endpoint(std::string_view text, std::string& host, uint16_t& port) {
  std::string_view host_part;
  std::string_view port_part;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || text.substr(close + 1, 1) != ":") return false;
    host_part = text.substr(1, close - 1);
    port_part = text.substr(close + 2);
    if (!is_valid_ip(AF_INET6, host_part)) return false;
  } else {
    // A bare IPv6 address has several colons and fails the IPv4 check: it needs brackets.
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    host_part = text.substr(0, colon);
    port_part = text.substr(colon + 1);
    if (host_part != "localhost" && !is_valid_ip(AF_INET, host_part)) return false;
  }
  if (port_part.empty() || port_part.size() > 5 ||
      !std::all_of(port_part.begin(), port_part.end(), is_digit)) {
    return false;
  }
  const auto number = parse_whole(port_part);
  if (!number || *number > 65535) return false;
  host = std::string(host_part);
  port = static_cast<uint16_t>(*number);
  return true;
}

bool is_loopback_host(std::string_view host) {
  if (host == "localhost") return true;
  if (host.find('\0') != std::string_view::npos) return false;
  const std::string text(host);
  unsigned char address[16] = {};
  if (inet_pton(AF_INET, text.c_str(), address) == 1) return address[0] == 127;
  static constexpr unsigned char kV6Loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  return inet_pton(AF_INET6, text.c_str(), address) == 1 &&
         std::equal(address, address + 16, kV6Loopback);
}

bool pattern_matches(std::string_view pattern, std::string_view name) {
  // Greedy glob with one backtrack point: linear enough for names of 200 characters.
  std::size_t p = 0, n = 0, star = std::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (p < pattern.size() && pattern[p] == name[n]) {
      ++p;
      ++n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string_view to_string(LogLevel level) {
  for (const auto& [name, value] : kLogLevels) {
    if (value == level) return name;
  }
  return "unknown";
}

}  // namespace sluice::config
