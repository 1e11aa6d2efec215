// What the settings sources share; private to sluice_config (not installed, toml++-free).
//
// Every setting is described once, in the field tables of settings_schema.cpp (key, kind of value,
// range, where it is stored). The file loader, the flag parser, validate() and the "allowed:" texts
// all read those tables, so the accepted forms and the error messages cannot drift apart.
//
//   settings_values.cpp  value rules and text forms: numbers, units, formats, names
//   settings_input.cpp   one value on its way in: checked against its rule and typed
//   settings_schema.cpp  the settings, described once: field tables, lookup, suggestions
//   settings_loader.cpp  the file (TOML) and the command line: load_file, load_text, apply_setting,
//                        and the named entries ([queues.NAME], ...) they add to
//   settings.cpp         validate() and the small public helpers
#pragma once

#include "sluice/config/settings.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::config::detail {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kSecond = 1000;
inline constexpr uint64_t kMinute = 60 * kSecond;
inline constexpr uint64_t kHour = 60 * kMinute;
// A frame carries ids, key, attributes and batch framing besides the payload; this much of
// max_frame_bytes is kept for them so a maximal payload always fits in one frame.
inline constexpr uint64_t kFrameOverhead = 64 * kKiB;

// ---------------------------------------------------------------------------------------------
// Value rules and text forms (settings_values.cpp)

enum class Kind {
  count,
  duration,
  size,
  endpoint,
  path,
  log_level,
  rate,
  overflow,
  header_name,
  choice,           // one of Rule::choices; Parsed::choice is its index
  factor,           // a number with up to 3 decimals, stored in thousandths (like rate)
  token_hash,       // "sha256:<salt>:<digest>" (sluicectl hash-token)
  patterns,         // an array of queue-name patterns ('*' = any run); on the command line, a,b,c
  queue_name,       // one queue name
  url,              // "http://host[:port]/path" or "https://..."
  header_lines,     // an array of "Name: value"; on the command line, one line
  statuses,         // an array of HTTP statuses 400 to 599; on the command line, 400,422
  queue_selection,  // "all" (= ["*"]), "none" (= []) or an array of queue-name patterns
};

inline constexpr uint64_t kMaxRateMilli = 1'000'000'000;  // 1,000,000 messages per second
inline constexpr uint64_t kMinRateMilli = 100;            // 0.1 per second

struct Rule {
  Kind kind;
  uint64_t min = 0;  // milliseconds for durations, bytes for sizes
  uint64_t max = 0;
  std::string_view max_note = {};  // said instead of `max` when the real bound is another setting
  std::span<const std::string_view> choices = {};  // Kind::choice: the words accepted
  std::string_view choices_note = {};              // Kind::choice: what each word means
};

/// A whole number that may be negative, so "-5" can be reported as below the minimum.
struct Number {
  bool negative = false;
  uint64_t magnitude = 0;
};

Number whole(uint64_t value);
Number from_int64(int64_t value);
uint64_t saturating_mul(uint64_t a, uint64_t b);
bool is_digit(char c);
std::optional<uint64_t> parse_whole(std::string_view text);
std::optional<Number> parse_integer_text(std::string_view text);

using Units = std::span<const std::pair<std::string_view, uint64_t>>;
inline constexpr std::pair<std::string_view, uint64_t> kDurationUnitList[] = {
    {"", 1}, {"ms", 1}, {"s", kSecond}, {"m", kMinute}, {"h", kHour}};
inline constexpr std::pair<std::string_view, uint64_t> kSizeUnitList[] = {
    {"", 1}, {"KiB", kKiB}, {"MiB", kMiB}, {"GiB", kGiB}};
inline constexpr Units kDurationUnits{kDurationUnitList};
inline constexpr Units kSizeUnits{kSizeUnitList};

std::optional<uint64_t> parse_with_unit(std::string_view text, Units units);
std::string format_duration(uint64_t ms);
std::string format_size(uint64_t bytes);
std::string format_rate(uint64_t milli);
std::string format(Kind kind, uint64_t value);
std::optional<uint64_t> parse_rate_text(std::string_view text);
void append_escaped(std::string& out, char c);
std::string quote(std::string_view text);

bool is_valid_ip(int family, std::string_view text);
bool is_listen_host(std::string_view host);
bool is_valid_queue_name(std::string_view name);
bool is_valid_pattern(std::string_view pattern);
bool is_valid_token_name(std::string_view name);
bool is_valid_url(std::string_view url);

inline constexpr std::string_view kQueueNameAllowed =
    "a queue name of 1 to 200 characters from A-Z a-z 0-9 _ . : -, not \".\" or \"..\"";

inline constexpr std::string_view kTokenNameAllowed =
    "a token name of 1 to 100 characters from A-Z a-z 0-9 _ . : -";

inline constexpr std::pair<std::string_view, LogLevel> kLogLevels[] = {{"trace", LogLevel::trace},
                                                                       {"debug", LogLevel::debug},
                                                                       {"info", LogLevel::info},
                                                                       {"warn", LogLevel::warn},
                                                                       {"error", LogLevel::error}};

std::string allowed_text(const Rule& rule);
std::optional<std::string> range_problem(const Rule& rule, Number value, std::string shown);

// ---------------------------------------------------------------------------------------------
// One value on its way in (settings_input.cpp; from TOML in settings_loader.cpp)

/// A value as it arrived. TOML knows its type; the command line only has text.
struct Input {
  enum class Type { integer, floating, string, array, other } type = Type::other;
  int64_t integer = 0;
  double floating = 0;
  std::string string;
  std::vector<std::string> strings;  // Type::array (all strings) or command-line a,b,c
  bool array_of_strings = true;
  std::vector<int64_t> integers;  // Type::array (all integers)
  bool array_of_integers = true;
  std::string description;  // for "got ..." in a wrong-type message
  bool from_command_line = false;
};

/// The typed value, ready to store.
struct Parsed {
  uint64_t number = 0;
  std::string text;  // a path, or the endpoint's host
  uint16_t port = 0;
  LogLevel level = LogLevel::info;
  Overflow overflow = Overflow::block;
  std::size_t choice = 0;
  std::vector<std::string> list;  // Kind::patterns
};

Input input_from_text(std::string_view text);
std::optional<std::string> parse_value(const Rule& rule, const Input& input, Parsed& out);

// ---------------------------------------------------------------------------------------------
// The settings, described once (settings_schema.cpp)

template <class Target>
struct Field {
  std::string_view key;
  Rule rule;
  void (*store)(Target&, const Parsed&);
  /// Numeric fields only; lets validate() re-check values set in code.
  Number (*read)(const Target&) = nullptr;
};

struct TableSpec {
  std::string_view name;
  std::span<const Field<Settings>> fields;
};

extern const std::span<const TableSpec> kSettingsTables;
extern const std::span<const Field<QueueSettings>> kQueueFieldSpan;
/// queues.auto_create, the one setting of [queues] that is not a queue's table.
extern const Field<Settings>& kQueuesAutoCreate;
extern const std::span<const Field<TokenSettings>> kTokenFieldSpan;
extern const std::span<const Field<TriggerSettings>> kTriggerFieldSpan;
extern const std::span<const Field<SourceSettings>> kSourceFieldSpan;

inline constexpr std::string_view kQueueDefaults = "queue_defaults";
inline constexpr std::string_view kQueues = "queues";
inline constexpr std::string_view kTokens = "tokens";
inline constexpr std::string_view kTriggers = "triggers";
inline constexpr std::string_view kSources = "sources";
/// In [queues.NAME], beside the queue's settings: its schemas and whether one is required.
inline constexpr std::string_view kSchemas = "schemas";
inline constexpr std::string_view kRequireSchema = "require_schema";
inline constexpr std::string_view kSchemaVersionAllowed =
    "a version name of 1 to 64 characters from A-Z a-z 0-9 _ . : - and a JSON Schema file path";

const TableSpec* find_table(std::string_view name);

template <class Target>
const Field<Target>* find_field(std::span<const Field<Target>> fields, std::string_view key) {
  for (const auto& field : fields) {
    if (field.key == key) return &field;
  }
  return nullptr;
}

template <class Target>
std::vector<std::string> keys_of(std::span<const Field<Target>> fields) {
  std::vector<std::string> keys;
  for (const auto& field : fields) keys.push_back(std::string(field.key));
  return keys;
}

std::string join(const std::vector<std::string>& items);
std::vector<std::string> all_setting_names();
std::string suggestion(std::string_view typed, const std::vector<std::string>& candidates);

}  // namespace sluice::config::detail
