// Loads Settings from TOML and from "name=value" flags.
//
// Every setting is described once, in the field tables below (key, kind of value, range, where it
// is stored). The file loader, the flag parser, validate() and the "allowed:" texts all read those
// tables, so the accepted forms and the error messages cannot drift apart.

#include "sluice/config/settings.hpp"

// Debian ships toml++ as a compiled library; use it instead of compiling the whole parser into
// this object (the CMake target passes the same two definitions).
#ifndef TOML_HEADER_ONLY
#define TOML_HEADER_ONLY 0
#endif
#ifndef TOML_SHARED_LIB
#define TOML_SHARED_LIB 1
#endif
#include <toml++/toml.h>

#include <arpa/inet.h>

#include "sluice/security/token.hpp"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <sstream>
#include <system_error>
#include <utility>

namespace sluice::config {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kSecond = 1000;
constexpr uint64_t kMinute = 60 * kSecond;
constexpr uint64_t kHour = 60 * kMinute;
// A frame carries ids, key, attributes and batch framing besides the payload; this much of
// max_frame_bytes is kept for them so a maximal payload always fits in one frame.
constexpr uint64_t kFrameOverhead = 64 * kKiB;
constexpr std::string_view kCommandLine = "command line";

// ---------------------------------------------------------------------------------------------
// Value rules and text forms

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
  choice,      // one of Rule::choices; Parsed::choice is its index
  factor,      // a number with up to 3 decimals, stored in thousandths (like rate)
  token_hash,  // "sha256:<salt>:<digest>" (sluicectl hash-token)
  patterns,    // an array of queue-name patterns ('*' = any run); on the command line, a,b,c
};

constexpr uint64_t kMaxRateMilli = 1'000'000'000;  // 1,000,000 messages per second
constexpr uint64_t kMinRateMilli = 100;            // 0.1 per second

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

Number whole(uint64_t value) {
  return {false, value};
}

Number from_int64(int64_t value) {
  if (value < 0) return {true, uint64_t{0} - static_cast<uint64_t>(value)};
  return {false, static_cast<uint64_t>(value)};
}

uint64_t saturating_mul(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) {
    return std::numeric_limits<uint64_t>::max();
  }
  return a * b;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// Digits with single '_' between them, like a TOML integer. Saturates instead of failing so a
// huge number is reported as "above the maximum" rather than as malformed.
std::optional<uint64_t> parse_whole(std::string_view text) {
  if (text.empty() || !is_digit(text.front()) || !is_digit(text.back())) return std::nullopt;
  uint64_t value = 0;
  bool after_underscore = false;
  for (char c : text) {
    if (c == '_') {
      if (after_underscore) return std::nullopt;
      after_underscore = true;
      continue;
    }
    if (!is_digit(c)) return std::nullopt;
    after_underscore = false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    value = saturating_mul(value, 10);
    value = value > std::numeric_limits<uint64_t>::max() - digit
                ? std::numeric_limits<uint64_t>::max()
                : value + digit;
  }
  return value;
}

std::optional<Number> parse_integer_text(std::string_view text) {
  const bool negative = text.starts_with('-');
  if (negative) text.remove_prefix(1);
  auto magnitude = parse_whole(text);
  if (!magnitude) return std::nullopt;
  return Number{negative && *magnitude != 0, *magnitude};
}

using Units = std::span<const std::pair<std::string_view, uint64_t>>;
constexpr std::pair<std::string_view, uint64_t> kDurationUnitList[] = {
    {"", 1}, {"ms", 1}, {"s", kSecond}, {"m", kMinute}, {"h", kHour}};
constexpr std::pair<std::string_view, uint64_t> kSizeUnitList[] = {
    {"", 1}, {"KiB", kKiB}, {"MiB", kMiB}, {"GiB", kGiB}};
constexpr Units kDurationUnits{kDurationUnitList};
constexpr Units kSizeUnits{kSizeUnitList};

/// "30s" -> 30000 with `units` mapping each suffix ("" included) to its multiplier.
std::optional<uint64_t> parse_with_unit(std::string_view text, Units units) {
  const auto unit_start = text.find_first_not_of("0123456789_");
  const std::string_view unit = unit_start == std::string_view::npos ? "" : text.substr(unit_start);
  auto number = parse_whole(text.substr(0, text.size() - unit.size()));
  if (!number) return std::nullopt;
  for (const auto& [suffix, multiplier] : units) {
    if (suffix == unit) return saturating_mul(*number, multiplier);
  }
  return std::nullopt;
}

std::string format_duration(uint64_t ms) {
  if (ms == 0) return "0ms";
  if (ms % kHour == 0) return std::to_string(ms / kHour) + "h";
  if (ms % kMinute == 0) return std::to_string(ms / kMinute) + "m";
  if (ms % kSecond == 0) return std::to_string(ms / kSecond) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_size(uint64_t bytes) {
  if (bytes == 1) return "1 byte";
  if (bytes != 0 && bytes % kGiB == 0) return std::to_string(bytes / kGiB) + "GiB";
  if (bytes != 0 && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + "MiB";
  if (bytes != 0 && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "KiB";
  return std::to_string(bytes) + " bytes";
}

std::string format_rate(uint64_t milli) {
  std::string text = std::to_string(milli / 1000);
  if (const uint64_t fraction = milli % 1000; fraction != 0) {
    std::string digits = std::to_string(1000 + fraction).substr(1);
    while (digits.back() == '0') digits.pop_back();
    text += "." + digits;
  }
  return text + "/s";
}

std::string format(Kind kind, uint64_t value) {
  if (kind == Kind::duration) return format_duration(value);
  if (kind == Kind::size) return format_size(value);
  if (kind == Kind::rate) return format_rate(value);
  if (kind == Kind::factor) {
    std::string text = format_rate(value);
    return text.substr(0, text.size() - 2);
  }
  return std::to_string(value);
}

/// "12.5" -> 12500 (thousandths); digits with at most 3 decimals. Saturates when huge.
std::optional<uint64_t> parse_rate_text(std::string_view text) {
  if (text.ends_with("/s")) text.remove_suffix(2);
  const auto dot = text.find('.');
  auto whole_part = parse_whole(text.substr(0, dot));
  if (!whole_part) return std::nullopt;
  uint64_t milli = saturating_mul(*whole_part, 1000);
  if (dot != std::string_view::npos) {
    const std::string_view fraction = text.substr(dot + 1);
    if (fraction.empty() || fraction.size() > 3) return std::nullopt;
    uint64_t scale = 100;
    for (char c : fraction) {
      if (!is_digit(c)) return std::nullopt;
      milli += static_cast<uint64_t>(c - '0') * scale;
      scale /= 10;
    }
  }
  return milli;
}

/// Control characters as \xNN, so a message always stays on one line.
void append_escaped(std::string& out, char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte < 0x20 || byte == 0x7F) {
    constexpr char kHex[] = "0123456789abcdef";
    out += "\\x";
    out += kHex[byte >> 4];
    out += kHex[byte & 0xF];
  } else {
    out += c;
  }
}

/// User text inside a message: quoted, control characters escaped, long text shortened.
std::string quote(std::string_view text) {
  constexpr size_t kShown = 60;
  bool shortened = false;
  if (text.size() > kShown) {
    size_t cut = kShown;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text = text.substr(0, cut);
    shortened = true;
  }
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    append_escaped(out, c);
  }
  out += shortened ? "...\"" : "\"";
  return out;
}

bool is_valid_ip(int family, std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return false;
  unsigned char address[16];
  return inet_pton(family, std::string(text).c_str(), address) == 1;
}

bool is_listen_host(std::string_view host) {
  return host == "localhost" || is_valid_ip(AF_INET, host) || is_valid_ip(AF_INET6, host);
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '.' ||
         c == ':' || c == '-';
}

/// The protocol's rule (protocol::valid_queue_name): "." and ".." are out, as
/// a URL path normaliser would change them.
bool is_valid_queue_name(std::string_view name) {
  if (name.empty() || name.size() > 200 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), is_name_char);
}

constexpr std::string_view kQueueNameAllowed =
    "a queue name of 1 to 200 characters from A-Z a-z 0-9 _ . : -, not \".\" or \"..\"";

bool is_valid_pattern(std::string_view pattern) {
  if (pattern.empty() || pattern.size() > 200) return false;
  std::string without_stars;
  for (char c : pattern)
    if (c != '*') without_stars.push_back(c);
  // "*" alone is fine; the rest must be queue-name characters.
  return std::all_of(without_stars.begin(), without_stars.end(), is_name_char);
}

/// Token names share the queue-name alphabet, shorter.
bool is_valid_token_name(std::string_view name) {
  return name.size() <= 100 && is_valid_queue_name(name);
}

constexpr std::string_view kTokenNameAllowed =
    "a token name of 1 to 100 characters from A-Z a-z 0-9 _ . : -";

constexpr std::pair<std::string_view, LogLevel> kLogLevels[] = {{"trace", LogLevel::trace},
                                                                {"debug", LogLevel::debug},
                                                                {"info", LogLevel::info},
                                                                {"warn", LogLevel::warn},
                                                                {"error", LogLevel::error}};

std::string allowed_text(const Rule& rule) {
  const std::string range =
      " from " + format(rule.kind, rule.min) + " to " +
      (rule.max_note.empty() ? format(rule.kind, rule.max) : std::string(rule.max_note));
  switch (rule.kind) {
    case Kind::count:
      return "an integer" + range;
    case Kind::duration:
      return "a duration like \"500ms\", \"30s\", \"5m\" or \"1h\" (a whole number and ms, s, m "
             "or h; a bare integer means milliseconds)" +
             range;
    case Kind::size:
      return "a size: a whole number of bytes, or a string like \"64KiB\", \"4MiB\" or \"1GiB\" "
             "(units KiB, MiB and GiB only)" +
             range;
    case Kind::endpoint:
      return "\"host:port\" where host is an IPv4 address, [IPv6 address] or localhost, and port "
             "is 0 to 65535 (0 = any free port)";
    case Kind::path:
      return "a file path, or \"\" for none";
    case Kind::log_level:
      return "one of \"trace\", \"debug\", \"info\", \"warn\", \"error\"";
    case Kind::rate:
      return "messages per second, like 50, 0.5 or \"1000/s\" (at most 3 decimals), from 0.1/s to "
             "1000000/s, or 0 for no limit";
    case Kind::factor:
      return "a number like 2 or 1.5 (at most 3 decimals)" + range;
    case Kind::overflow:
      return "\"block\" (stop reading the producer) or \"reject\" (refuse with queue_full)";
    case Kind::header_name:
      return "a message header name of 1 to 255 bytes without control characters, or \"\" for "
             "none";
    case Kind::token_hash:
      return "\"sha256:<32 hex digits>:<64 hex digits>\" as printed by `sluicectl hash-token`";
    case Kind::patterns:
      return "an array of queue-name patterns like [\"orders\", \"orders.*\", \"*\"] ('*' stands "
             "for any run of characters; names use A-Z a-z 0-9 _ . : -), or [] for none";
    case Kind::choice: {
      std::string text = "one of";
      for (std::size_t i = 0; i < rule.choices.size(); ++i)
        text += (i == 0 ? " \"" : ", \"") + std::string(rule.choices[i]) + "\"";
      if (!rule.choices_note.empty()) text += " (" + std::string(rule.choices_note) + ")";
      return text;
    }
  }
  return {};
}

std::optional<std::string> range_problem(const Rule& rule, Number value, std::string shown) {
  if (value.negative || value.magnitude < rule.min) {
    return shown + " is below the minimum of " + format(rule.kind, rule.min);
  }
  if (value.magnitude > rule.max) {
    if (!rule.max_note.empty()) {
      return shown + " is above the maximum of " + std::string(rule.max_note) + " (at most " +
             format(rule.kind, rule.max) + ")";
    }
    return shown + " is above the maximum of " + format(rule.kind, rule.max);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// One value on its way in

/// A value as it arrived. TOML knows its type; the command line only has text.
struct Input {
  enum class Type { integer, floating, string, array, other } type = Type::other;
  int64_t integer = 0;
  double floating = 0;
  std::string string;
  std::vector<std::string> strings;  // Type::array (all strings) or command-line a,b,c
  bool array_of_strings = true;
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

std::string describe(const toml::node& node) {
  // toml++ prints each scalar in its TOML spelling.
  auto shown = [](std::string_view what, const auto* value) {
    std::ostringstream out;
    out << what << " (" << *value << ")";
    return out.str();
  };
  switch (node.type()) {
    case toml::node_type::integer:
      return shown("an integer", node.as_integer());
    case toml::node_type::string:
      return "a string (" + quote(node.as_string()->get()) + ")";
    case toml::node_type::floating_point:
      return shown("a float", node.as_floating_point());
    case toml::node_type::boolean:
      return shown("a boolean", node.as_boolean());
    case toml::node_type::date:
      return shown("a date", node.as_date());
    case toml::node_type::time:
      return shown("a time", node.as_time());
    case toml::node_type::date_time:
      return shown("a date-time", node.as_date_time());
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

Input input_from_node(const toml::node& node) {
  Input input;
  if (const auto* integer = node.as_integer()) {
    input.type = Input::Type::integer;
    input.integer = integer->get();
  } else if (const auto* string = node.as_string()) {
    input.type = Input::Type::string;
    input.string = string->get();
  } else if (const auto* floating = node.as_floating_point()) {
    input.type = Input::Type::floating;
    input.floating = floating->get();
  } else if (const auto* array = node.as_array()) {
    input.type = Input::Type::array;
    for (const auto& element : *array) {
      if (const auto* string = element.as_string())
        input.strings.push_back(string->get());
      else
        input.array_of_strings = false;
    }
  }
  input.description = describe(node);
  return input;
}

Input input_from_text(std::string_view text) {
  Input input;
  input.type = Input::Type::string;
  input.string = std::string(text);
  input.description = quote(text);
  input.from_command_line = true;
  return input;
}

/// Durations and sizes: an integer in the base unit, or text with a unit.
std::optional<std::string> parse_quantity(const Rule& rule, const Input& input, Parsed& out) {
  const bool is_duration = rule.kind == Kind::duration;
  const std::string_view noun = is_duration ? "a duration" : "a size";
  Number value;
  std::string shown;
  if (input.type == Input::Type::integer) {
    value = from_int64(input.integer);
    shown = (value.negative ? "-" : "") + format(rule.kind, value.magnitude);
  } else if (input.type == Input::Type::string) {
    auto magnitude = parse_with_unit(input.string, is_duration ? kDurationUnits : kSizeUnits);
    if (!magnitude) {
      std::string problem = "expected " + std::string(noun) + ", got " + quote(input.string);
      const auto unit = input.string.find_first_of("kKmMgG");
      if (!is_duration && unit != std::string::npos &&
          input.string.find_first_of("iI", unit) == std::string::npos) {
        problem += "; decimal units (KB, MB, GB) are not accepted, use KiB, MiB or GiB";
      }
      return problem;
    }
    value.magnitude = *magnitude;
    shown = input.string;
  } else {
    return "expected " + std::string(noun) + ", got " + input.description;
  }
  if (auto problem = range_problem(rule, value, shown)) return problem;
  out.number = value.magnitude;
  return std::nullopt;
}

/// Turns `input` into a value that satisfies `rule`, or says what is wrong with it.
std::optional<std::string> parse_value(const Rule& rule, const Input& input, Parsed& out) {
  const bool is_string = input.type == Input::Type::string;
  switch (rule.kind) {
    case Kind::count: {
      Number value;
      if (input.type == Input::Type::integer) {
        value = from_int64(input.integer);
      } else if (is_string && input.from_command_line) {
        auto number = parse_integer_text(input.string);
        if (!number) return "expected an integer, got " + quote(input.string);
        value = *number;
      } else {
        return "expected an integer, got " + input.description;
      }
      const std::string shown = (value.negative ? "-" : "") + std::to_string(value.magnitude);
      if (auto problem = range_problem(rule, value, shown)) return problem;
      out.number = value.magnitude;
      return std::nullopt;
    }
    case Kind::duration:
    case Kind::size:
      return parse_quantity(rule, input, out);
    case Kind::endpoint:
      if (!is_string) return "expected a string \"host:port\", got " + input.description;
      if (!parse_endpoint(input.string, out.text, out.port)) {
        std::string problem = "expected \"host:port\", got " + quote(input.string);
        if (!input.string.starts_with('[') &&
            std::count(input.string.begin(), input.string.end(), ':') > 1) {
          problem += "; an IPv6 address needs brackets, like \"[::1]:7450\"";
        }
        return problem;
      }
      return std::nullopt;
    case Kind::path:
      if (!is_string) return "expected a string, got " + input.description;
      if (input.string.find('\0') != std::string::npos) {
        return "a path cannot contain a NUL character, got " + quote(input.string);
      }
      out.text = input.string;
      return std::nullopt;
    case Kind::log_level:
      if (!is_string) return "expected a string, got " + input.description;
      for (const auto& [name, level] : kLogLevels) {
        if (name == input.string) {
          out.level = level;
          return std::nullopt;
        }
      }
      return "unknown log level " + quote(input.string);
    case Kind::factor:
    case Kind::rate: {
      Number value;
      if (input.type == Input::Type::integer) {
        value = from_int64(input.integer);
        value.magnitude = saturating_mul(value.magnitude, 1000);
      } else if (input.type == Input::Type::floating) {
        if (!(input.floating >= 0) || input.floating > 1e12)
          return "expected a rate, got " + input.description;
        value.magnitude = static_cast<uint64_t>(std::llround(input.floating * 1000));
        if (std::abs(static_cast<double>(value.magnitude) - input.floating * 1000) > 1e-6)
          return "a rate has at most 3 decimals, got " + input.description;
      } else if (is_string) {
        auto milli = parse_rate_text(input.string);
        if (!milli) return "expected a rate, got " + quote(input.string);
        value.magnitude = *milli;
      } else {
        return "expected a rate, got " + input.description;
      }
      const std::string shown = (value.negative ? "-" : "") + format(rule.kind, value.magnitude);
      if (auto problem = range_problem(rule, value, shown)) return problem;
      if (rule.kind == Kind::rate && value.magnitude != 0 && value.magnitude < kMinRateMilli)
        return shown + " is below the minimum of 0.1/s (0 means no limit)";
      out.number = value.magnitude;
      return std::nullopt;
    }
    case Kind::overflow:
      if (!is_string) return "expected a string, got " + input.description;
      if (input.string == "block") {
        out.overflow = Overflow::block;
        return std::nullopt;
      }
      if (input.string == "reject") {
        out.overflow = Overflow::reject;
        return std::nullopt;
      }
      return "unknown overflow policy " + quote(input.string);
    case Kind::header_name:
      if (!is_string) return "expected a string, got " + input.description;
      if (input.string.size() > 255) return "a header name is at most 255 bytes";
      for (char ch : input.string) {
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F)
          return "a header name cannot contain control characters, got " + quote(input.string);
      }
      out.text = input.string;
      return std::nullopt;
    case Kind::token_hash:
      if (!is_string) return "expected a string, got " + input.description;
      if (!security::is_token_hash(input.string)) {
        // Never echo what may be a token pasted by mistake.
        return input.string.starts_with("sluice_")
                   ? "this looks like a token, not its hash; store only the hash"
                   : "not a token hash";
      }
      out.text = input.string;
      return std::nullopt;
    case Kind::patterns: {
      std::vector<std::string> items;
      if (input.type == Input::Type::array) {
        if (!input.array_of_strings) return "expected an array of strings, got another type inside";
        items = input.strings;
      } else if (is_string && input.from_command_line) {
        std::string_view rest = input.string;
        while (!rest.empty()) {
          const auto comma = rest.find(',');
          items.emplace_back(rest.substr(0, comma));
          rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        }
      } else {
        // Not the value itself: under [tokens] a stray string may be a pasted token.
        return "expected an array of strings, got " +
               (is_string ? std::string("a string") : input.description);
      }
      for (const auto& item : items) {
        if (!is_valid_pattern(item)) return "invalid queue-name pattern " + quote(item);
      }
      out.list = std::move(items);
      return std::nullopt;
    }
    case Kind::choice:
      if (!is_string) return "expected a string, got " + input.description;
      for (std::size_t i = 0; i < rule.choices.size(); ++i) {
        if (rule.choices[i] == input.string) {
          out.choice = i;
          return std::nullopt;
        }
      }
      return "unknown value " + quote(input.string);
  }
  return "unsupported setting";
}

// ---------------------------------------------------------------------------------------------
// The settings, described once

template <class Target>
struct Field {
  std::string_view key;
  Rule rule;
  void (*store)(Target&, const Parsed&);
  /// Numeric fields only; lets validate() re-check values set in code.
  Number (*read)(const Target&) = nullptr;
};

Number read_ms(std::chrono::milliseconds value) {
  return from_int64(value.count());
}

constexpr Field<Settings> kServerFields[] = {
    {.key = "listen",
     .rule = {.kind = Kind::endpoint},
     .store =
         [](Settings& s, const Parsed& v) {
           s.listen_host = v.text;
           s.listen_port = v.port;
         }},
    {.key = "port_file",
     .rule = {.kind = Kind::path},
     .store = [](Settings& s, const Parsed& v) { s.port_file = v.text; }},
    {.key = "max_connections",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s, const Parsed& v) { s.max_connections = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_connections); }},
    {.key = "max_connections_per_source",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s,
                 const Parsed& v) { s.max_connections_per_source = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_connections_per_source); }},
    {.key = "shutdown_grace",
     .rule = {.kind = Kind::duration, .min = 0, .max = 10 * kMinute},
     .store =
         [](Settings& s, const Parsed& v) {
           s.shutdown_grace = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.shutdown_grace); }},
};

constexpr std::string_view kOnOffChoices[] = {"off", "on"};

constexpr Field<Settings> kHttpFields[] = {
    {.key = "enabled",
     .rule = {.kind = Kind::choice, .choices = kOnOffChoices},
     .store = [](Settings& s, const Parsed& v) { s.http_enabled = v.choice == 1; }},
    {.key = "listen",
     .rule = {.kind = Kind::endpoint},
     .store =
         [](Settings& s, const Parsed& v) {
           s.http_host = v.text;
           s.http_port = v.port;
         }},
    {.key = "max_body_bytes",
     .rule = {.kind = Kind::size, .min = kKiB, .max = 64 * kMiB},
     .store = [](Settings& s, const Parsed& v) { s.http_max_body_bytes = v.number; },
     .read = [](const Settings& s) { return whole(s.http_max_body_bytes); }},
    {.key = "max_connections",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s, const Parsed& v) { s.http_max_connections = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.http_max_connections); }},
    {.key = "max_connections_per_source",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s,
                 const Parsed& v) { s.http_max_connections_per_source = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.http_max_connections_per_source); }},
    {.key = "idle_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = kHour},
     .store =
         [](Settings& s, const Parsed& v) {
           s.http_idle_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.http_idle_timeout); }},
    {.key = "max_wait",
     .rule = {.kind = Kind::duration, .min = 0, .max = 5 * kMinute},
     .store =
         [](Settings& s, const Parsed& v) {
           s.http_max_wait = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.http_max_wait); }},
};

constexpr Field<Settings> kLimitsFields[] = {
    {.key = "max_frame_bytes",
     .rule = {.kind = Kind::size, .min = 4 * kKiB, .max = 64 * kMiB},
     .store = [](Settings& s, const Parsed& v) { s.max_frame_bytes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_frame_bytes); }},
    // The bound against max_frame_bytes is checked in validate(), when both are known.
    {.key = "max_payload_bytes",
     .rule = {.kind = Kind::size,
              .min = 1,
              .max = 64 * kMiB - kFrameOverhead,
              .max_note = "limits.max_frame_bytes minus 64KiB"},
     .store = [](Settings& s, const Parsed& v) { s.max_payload_bytes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_payload_bytes); }},
    {.key = "connection_outbound_bytes",
     .rule = {.kind = Kind::size, .min = 64 * kKiB, .max = kGiB},
     .store = [](Settings& s, const Parsed& v) { s.connection_outbound_bytes = v.number; },
     .read = [](const Settings& s) { return whole(s.connection_outbound_bytes); }},
    {.key = "max_headers",
     .rule = {.kind = Kind::count, .min = 1, .max = 64},
     .store = [](Settings& s, const Parsed& v) { s.max_headers = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_headers); }},
    {.key = "max_header_bytes",
     .rule = {.kind = Kind::size, .min = 0, .max = kMiB},
     .store = [](Settings& s, const Parsed& v) { s.max_header_bytes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_header_bytes); }},
    {.key = "max_pending_publishes",
     .rule = {.kind = Kind::count, .min = 1, .max = 10'000'000},
     .store = [](Settings& s, const Parsed& v) { s.max_pending_publishes = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_pending_publishes); }},
    {.key = "frame_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = kHour},
     .store =
         [](Settings& s, const Parsed& v) {
           s.frame_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.frame_timeout); }},
    {.key = "handshake_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = 10 * kMinute},
     .store =
         [](Settings& s, const Parsed& v) {
           s.handshake_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const Settings& s) { return read_ms(s.handshake_timeout); }},
    {.key = "max_queues",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](Settings& s, const Parsed& v) { s.max_queues = uint32_t(v.number); },
     .read = [](const Settings& s) { return whole(s.max_queues); }},
    {.key = "memory",
     .rule = {.kind = Kind::size, .min = kMiB, .max = 1024 * kGiB},
     .store = [](Settings& s, const Parsed& v) { s.memory = v.number; },
     .read = [](const Settings& s) { return whole(s.memory); }},
};

constexpr std::string_view kSyncChoices[] = {"fsync", "nosync"};
constexpr std::string_view kSettleChoices[] = {"at_once", "commit"};
constexpr std::string_view kDurabilityChoices[] = {"memory", "durable"};
constexpr std::string_view kOrderingChoices[] = {"none", "key"};
constexpr std::string_view kJitterChoices[] = {"none", "full", "equal"};

constexpr Field<Settings> kStorageFields[] = {
    {.key = "path",
     .rule = {.kind = Kind::path},
     .store = [](Settings& s, const Parsed& v) { s.storage_path = v.text; }},
    {.key = "sync",
     .rule = {.kind = Kind::choice,
              .choices = kSyncChoices,
              .choices_note = "fsync: on disk before a publish is confirmed; nosync: faster, an OS "
                              "crash can lose the last commits"},
     .store = [](Settings& s, const Parsed& v) { s.storage_sync = v.choice == 0; }},
    {.key = "max_size",
     .rule = {.kind = Kind::size, .min = kMiB, .max = 16 * 1024 * kGiB},
     .store = [](Settings& s, const Parsed& v) { s.storage_max_size = v.number; },
     .read = [](const Settings& s) { return whole(s.storage_max_size); }},
    {.key = "settle",
     .rule = {.kind = Kind::choice,
              .choices = kSettleChoices,
              .choices_note = "at_once: acks and nacks of durable queues are answered when "
                              "applied; commit: when their change is committed"},
     .store = [](Settings& s, const Parsed& v) { s.storage_settle_commit = v.choice == 1; }},
};

constexpr Field<Settings> kTlsFields[] = {
    {.key = "cert_file",
     .rule = {.kind = Kind::path},
     .store = [](Settings& s, const Parsed& v) { s.tls_cert_file = v.text; }},
    {.key = "key_file",
     .rule = {.kind = Kind::path},
     .store = [](Settings& s, const Parsed& v) { s.tls_key_file = v.text; }},
};

constexpr Field<TokenSettings> kTokenFields[] = {
    {.key = "hash",
     .rule = {.kind = Kind::token_hash},
     .store = [](TokenSettings& t, const Parsed& v) { t.hash = v.text; }},
    {.key = "publish",
     .rule = {.kind = Kind::patterns},
     .store = [](TokenSettings& t, const Parsed& v) { t.publish = v.list; }},
    {.key = "consume",
     .rule = {.kind = Kind::patterns},
     .store = [](TokenSettings& t, const Parsed& v) { t.consume = v.list; }},
    {.key = "admin",
     .rule = {.kind = Kind::patterns},
     .store = [](TokenSettings& t, const Parsed& v) { t.admin = v.list; }},
    {.key = "metrics",
     .rule = {.kind = Kind::choice,
              .choices = kOnOffChoices,
              .choices_note = "on: may read /metrics, which names every queue"},
     .store = [](TokenSettings& t, const Parsed& v) { t.metrics = v.choice == 1; }},
};
constexpr std::span<const Field<TokenSettings>> kTokenFieldSpan{kTokenFields};

constexpr Field<Settings> kLogFields[] = {
    {.key = "level",
     .rule = {.kind = Kind::log_level},
     .store = [](Settings& s, const Parsed& v) { s.log_level = v.level; }},
};

constexpr Field<QueueSettings> kQueueFields[] = {
    {.key = "lease_timeout",
     .rule = {.kind = Kind::duration, .min = 100, .max = 12 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.lease_timeout = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.lease_timeout); }},
    {.key = "max_consumer_in_flight",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q,
                 const Parsed& v) { q.max_consumer_in_flight = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.max_consumer_in_flight); }},
    {.key = "max_messages",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_messages = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.max_messages); }},
    {.key = "max_bytes",
     .rule = {.kind = Kind::size, .min = kKiB, .max = 64 * kGiB},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_bytes = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.max_bytes); }},
    {.key = "high_watermark",
     .rule = {.kind = Kind::count, .min = 1, .max = 100},
     .store = [](QueueSettings& q, const Parsed& v) { q.high_watermark = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.high_watermark); }},
    {.key = "low_watermark",
     .rule = {.kind = Kind::count, .min = 1, .max = 99},
     .store = [](QueueSettings& q, const Parsed& v) { q.low_watermark = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.low_watermark); }},
    {.key = "overflow",
     .rule = {.kind = Kind::overflow},
     .store = [](QueueSettings& q, const Parsed& v) { q.overflow = v.overflow; }},
    {.key = "dispatch_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.dispatch_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.dispatch_rate); }},
    {.key = "dispatch_burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.dispatch_burst = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.dispatch_burst); }},
    {.key = "max_consumer_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_consumer_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.max_consumer_rate); }},
    {.key = "ingress_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.ingress_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.ingress_rate); }},
    {.key = "ingress_burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.ingress_burst = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.ingress_burst); }},
    {.key = "max_in_flight",
     .rule = {.kind = Kind::count, .min = 0, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_in_flight = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.max_in_flight); }},
    {.key = "key_header",
     .rule = {.kind = Kind::header_name},
     .store = [](QueueSettings& q, const Parsed& v) { q.key_header = v.text; }},
    {.key = "key_rate",
     .rule = {.kind = Kind::rate, .min = 0, .max = kMaxRateMilli},
     .store = [](QueueSettings& q, const Parsed& v) { q.key_rate = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.key_rate); }},
    {.key = "key_burst",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.key_burst = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.key_burst); }},
    {.key = "durability",
     .rule = {.kind = Kind::choice,
              .choices = kDurabilityChoices,
              .choices_note = "memory: lost on a crash; durable: committed to storage.path "
                              "before the publish is confirmed"},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.durability = v.choice == 0 ? Durability::memory : Durability::durable;
         }},
    {.key = "ordering",
     .rule = {.kind = Kind::choice,
              .choices = kOrderingChoices,
              .choices_note = "key: FIFO per key_header value with one message of a key out at "
                              "a time"},
     .store = [](QueueSettings& q, const Parsed& v) { q.ordered = v.choice == 1; }},
    {.key = "max_attempts",
     .rule = {.kind = Kind::count, .min = 0, .max = 1'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.max_attempts = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.max_attempts); }},
    {.key = "retry_backoff",
     .rule = {.kind = Kind::duration, .min = 0, .max = kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.retry_backoff = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.retry_backoff); }},
    {.key = "retry_backoff_max",
     .rule = {.kind = Kind::duration, .min = 0, .max = 24 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.retry_backoff_max = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.retry_backoff_max); }},
    {.key = "retry_multiplier",
     .rule = {.kind = Kind::factor, .min = 1000, .max = 100'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.retry_multiplier = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.retry_multiplier); }},
    {.key = "retry_jitter",
     .rule = {.kind = Kind::choice,
              .choices = kJitterChoices,
              .choices_note = "full: anywhere up to the backoff; equal: half of it plus up to "
                              "the other half"},
     .store = [](QueueSettings& q,
                 const Parsed& v) { q.retry_jitter = static_cast<Jitter>(v.choice); }},
    {.key = "dedup_window",
     .rule = {.kind = Kind::duration, .min = 0, .max = 24 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.dedup_window = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.dedup_window); }},
    {.key = "dedup_max_entries",
     .rule = {.kind = Kind::count, .min = 1, .max = 100'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.dedup_max_entries = uint32_t(v.number); },
     .read = [](const QueueSettings& q) { return whole(q.dedup_max_entries); }},
    {.key = "resequence",
     .rule = {.kind = Kind::choice,
              .choices = kOnOffChoices,
              .choices_note =
                  "on: messages with sluice-seq are released in sequence order per key"},
     .store = [](QueueSettings& q, const Parsed& v) { q.resequence = v.choice == 1; }},
    {.key = "gap_timeout",
     .rule = {.kind = Kind::duration, .min = 1, .max = kHour},
     .store = [](QueueSettings& q,
                 const Parsed& v) { q.gap_timeout = std::chrono::milliseconds(int64_t(v.number)); },
     .read = [](const QueueSettings& q) { return read_ms(q.gap_timeout); }},
    {.key = "dlq_max_entries",
     .rule = {.kind = Kind::count, .min = 1, .max = 1'000'000'000},
     .store = [](QueueSettings& q, const Parsed& v) { q.dlq_max_entries = v.number; },
     .read = [](const QueueSettings& q) { return whole(q.dlq_max_entries); }},
    {.key = "dlq_retention",
     .rule = {.kind = Kind::duration, .min = kMinute, .max = 365 * 24 * kHour},
     .store =
         [](QueueSettings& q, const Parsed& v) {
           q.dlq_retention = std::chrono::milliseconds(int64_t(v.number));
         },
     .read = [](const QueueSettings& q) { return read_ms(q.dlq_retention); }},
};

constexpr std::span<const Field<QueueSettings>> kQueueFieldSpan{kQueueFields};

struct TableSpec {
  std::string_view name;
  std::span<const Field<Settings>> fields;
};

constexpr TableSpec kSettingsTables[] = {{"server", kServerFields}, {"http", kHttpFields},
                                         {"limits", kLimitsFields}, {"storage", kStorageFields},
                                         {"tls", kTlsFields},       {"log", kLogFields}};

constexpr std::string_view kQueueDefaults = "queue_defaults";
constexpr std::string_view kQueues = "queues";
constexpr std::string_view kTokens = "tokens";

const TableSpec* find_table(std::string_view name) {
  for (const auto& table : kSettingsTables) {
    if (table.name == name) return &table;
  }
  return nullptr;
}

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

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

std::vector<std::string> all_setting_names() {
  std::vector<std::string> names;
  for (const auto& table : kSettingsTables) {
    for (const auto& field : table.fields)
      names.push_back(std::string(table.name) + "." + std::string(field.key));
  }
  for (const auto& field : kQueueFields) {
    names.push_back("queue_defaults." + std::string(field.key));
  }
  for (const auto& field : kQueueFields) names.push_back("queues.NAME." + std::string(field.key));
  for (const auto& field : kTokenFields) names.push_back("tokens.NAME." + std::string(field.key));
  return names;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// "; did you mean X?" for a near miss (a typo is the usual reason for an unknown key), else "".
std::string suggestion(std::string_view typed, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = 3;  // more than two edits away is not a typo
  for (const auto& candidate : candidates) {
    const size_t distance = edit_distance(typed, candidate);
    if (distance < best_distance && distance < candidate.size() / 2) {
      best = &candidate;
      best_distance = distance;
    }
  }
  return best ? "; did you mean " + *best + "?" : "";
}

DeclaredQueue& declare_queue(Settings& settings, std::string_view name) {
  for (auto& queue : settings.queues) {
    if (queue.name == name) return queue;
  }
  return settings.queues.emplace_back(DeclaredQueue{std::string(name), settings.queue_defaults});
}

TokenSettings& declare_token(Settings& settings, std::string_view name) {
  for (auto& token : settings.tokens) {
    if (token.name == name) return token;
  }
  TokenSettings& token = settings.tokens.emplace_back();
  token.name = std::string(name);
  return token;
}

// ---------------------------------------------------------------------------------------------
// The file

/// Collects every problem of one file, so the earliest in file order can be reported (toml++
/// tables iterate by key, not by position).
class FileLoader {
 public:
  explicit FileLoader(const std::string& path) : path_(path) {}

  void load(const toml::table& root, Settings& settings) {
    // Declared queues start from the defaults, so those go first wherever they are written.
    if (const toml::node* defaults = root.get(kQueueDefaults)) {
      if (const auto* table =
              expect_table(*defaults, std::string(kQueueDefaults), kQueueFieldSpan)) {
        apply_fields(*table, kQueueDefaults, kQueueFieldSpan, settings.queue_defaults);
      }
    }
    for (auto&& [key, node] : root) {
      const std::string_view name = key.str();
      if (name == kQueueDefaults) continue;
      if (name == kQueues) {
        load_queues(node, settings);
      } else if (name == kTokens) {
        load_tokens(node, settings);
      } else if (const TableSpec* spec = find_table(name)) {
        if (const auto* table = expect_table(node, std::string(name), spec->fields)) {
          apply_fields(*table, name, spec->fields, settings);
        }
      } else {
        report_unknown_table(key);
      }
    }
  }

  std::optional<ConfigError> first_problem() const {
    if (problems_.empty()) return std::nullopt;
    // Line 0 (position unknown) sorts last; ties keep the order found.
    return *std::min_element(problems_.begin(), problems_.end(), [](const auto& a, const auto& b) {
      return unsigned(a.line - 1) < unsigned(b.line - 1);
    });
  }

 private:
  void report(const toml::source_region& where, std::string setting, std::string problem,
              std::string allowed) {
    problems_.push_back(ConfigError{path_, static_cast<int>(where.begin.line), std::move(setting),
                                    std::move(problem), std::move(allowed)});
  }

  template <class Target>
  const toml::table* expect_table(const toml::node& node, const std::string& setting,
                                  std::span<const Field<Target>> fields) {
    if (const auto* table = node.as_table()) return table;
    report(node.source(), setting, "expected a table, got " + describe(node),
           "a table [" + setting + "] with keys " + join(keys_of(fields)));
    return nullptr;
  }

  template <class Target>
  void apply_fields(const toml::table& table, std::string_view prefix,
                    std::span<const Field<Target>> fields, Target& target) {
    for (auto&& [key, node] : table) {
      const std::string setting = std::string(prefix) + "." + std::string(key.str());
      const Field<Target>* field = find_field(fields, key.str());
      if (!field) {
        report(key.source(), setting, "unknown setting" + suggestion(key.str(), keys_of(fields)),
               "keys in [" + std::string(prefix) + "]: " + join(keys_of(fields)));
        continue;
      }
      Parsed value;
      if (auto problem = parse_value(field->rule, input_from_node(node), value)) {
        report(node.source(), setting, std::move(*problem), allowed_text(field->rule));
        continue;
      }
      field->store(target, value);
    }
  }

  void load_queues(const toml::node& node, Settings& settings) {
    const auto* queues = node.as_table();
    if (!queues) {
      report(node.source(), std::string(kQueues), "expected a table, got " + describe(node),
             "[queues.NAME] tables with keys " + join(keys_of(kQueueFieldSpan)));
      return;
    }
    // Declare in file order, so logs and admin listings follow the file.
    std::vector<std::pair<const toml::key*, const toml::node*>> entries;
    for (auto&& [key, queue] : *queues) entries.emplace_back(&key, &queue);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.first->source().begin.line < b.first->source().begin.line;
    });
    for (const auto& [key, queue] : entries) {
      const std::string_view name = key->str();
      const std::string setting = "queues." + std::string(name);
      if (!is_valid_queue_name(name)) {
        report(key->source(), setting, "invalid queue name " + quote(name),
               std::string(kQueueNameAllowed));
        continue;
      }
      if (const auto* table = expect_table(*queue, setting, kQueueFieldSpan)) {
        apply_fields(*table, setting, kQueueFieldSpan, declare_queue(settings, name).settings);
      }
    }
  }

  void load_tokens(const toml::node& node, Settings& settings) {
    // Strings are described by type only: under [tokens] one may be a pasted token.
    auto what = [](const toml::node& n) { return n.is_string() ? "a string" : describe(n); };
    const auto* tokens = node.as_table();
    if (!tokens) {
      report(node.source(), std::string(kTokens), "expected a table, got " + what(node),
             "[tokens.NAME] tables with keys " + join(keys_of(kTokenFieldSpan)));
      return;
    }
    std::vector<std::pair<const toml::key*, const toml::node*>> entries;
    for (auto&& [key, token] : *tokens) entries.emplace_back(&key, &token);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.first->source().begin.line < b.first->source().begin.line;
    });
    for (const auto& [key, token] : entries) {
      const std::string_view name = key->str();
      const std::string setting = "tokens." + std::string(name);
      if (!is_valid_token_name(name)) {
        report(key->source(), setting, "invalid token name " + quote(name),
               std::string(kTokenNameAllowed));
        continue;
      }
      const auto* table = token->as_table();
      if (!table) {
        report(token->source(), setting, "expected a table, got " + what(*token),
               "a table [" + setting + "] with keys " + join(keys_of(kTokenFieldSpan)));
        continue;
      }
      apply_fields(*table, setting, kTokenFieldSpan, declare_token(settings, name));
    }
  }

  void report_unknown_table(const toml::key& key) {
    std::vector<std::string> tables;
    for (const auto& table : kSettingsTables) tables.push_back(std::string(table.name));
    tables.push_back(std::string(kQueueDefaults));
    tables.push_back(std::string(kQueues));
    tables.push_back(std::string(kTokens));
    std::string problem = "unknown table" + suggestion(key.str(), tables);
    // A key written above the first table header lands at the top level.
    for (const auto& table : kSettingsTables) {
      if (find_field(table.fields, key.str())) {
        problem = "setting outside its table; did you mean " + std::string(key.str()) + " under [" +
                  std::string(table.name) + "]?";
      }
    }
    report(key.source(), std::string(key.str()), std::move(problem),
           "tables [server], [http], [limits], [storage], [tls], [log], [queue_defaults], "
           "[queues.NAME] and [tokens.NAME]");
  }

  std::string path_;
  std::vector<ConfigError> problems_;
};

std::optional<ConfigError> read_whole_file(const std::string& path, std::string& content) {
  auto unreadable = [&](std::string problem) {
    return ConfigError{path, 0, "", "cannot read the config file: " + problem,
                       "a readable TOML file (see sluiced.example.toml)"};
  };
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) return unreadable("it is a directory");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) return unreadable(std::generic_category().message(errno));
  char buffer[16 * 1024];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, file.get())) content.append(buffer, n);
  if (std::ferror(file.get())) return unreadable(std::generic_category().message(errno));
  return std::nullopt;
}

}  // namespace

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

std::optional<ConfigError> load_file(const std::string& path, Settings& settings) {
  std::string content;
  if (auto problem = read_whole_file(path, content)) return problem;
  return load_text(content, path, settings);
}

namespace {

/// Config files are ASCII. Debian's toml++ 3.3 reaches an "unreachable"
/// branch (undefined behaviour, found by fuzzing) for some Unicode code points
/// wherever it tests for whitespace, which includes error paths no pre-parse
/// can predict; so no byte above 0x7F gets to it. Strings can still hold any
/// character as a \uXXXX escape. Returns the 1-based line and column of the
/// first such byte, or nullopt.
std::optional<std::pair<int, int>> first_non_ascii(std::string_view text) {
  int line = 1, column = 0;
  for (const char c : text) {
    ++column;
    if (static_cast<unsigned char>(c) >= 0x80) return std::pair{line, column};
    if (c == '\n') {
      ++line;
      column = 0;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<ConfigError> load_text(std::string_view content, const std::string& path,
                                     Settings& settings) {
  if (auto where = first_non_ascii(content)) {
    return ConfigError{path, where->first, "",
                       "non-ASCII byte at column " + std::to_string(where->second),
                       "an ASCII file; write other characters in strings as \\uXXXX escapes "
                       "(e.g. \"caf\\u00e9\")"};
  }

  try {
    toml::table root;
    try {
      root = toml::parse(content, path);
    } catch (const toml::parse_error& err) {
      const auto& where = err.source().begin;
      return ConfigError{path, static_cast<int>(where.line), "",
                         "TOML syntax error at column " + std::to_string(where.column) + ": " +
                             std::string(err.description()),
                         "TOML 1.0 syntax (https://toml.io/en/v1.0.0)"};
    }
    // Apply to a copy so a rejected file leaves the caller's settings as they were.
    Settings updated = settings;
    FileLoader loader(path);
    loader.load(root, updated);
    if (auto problem = loader.first_problem()) return problem;
    settings = std::move(updated);
    return std::nullopt;
  } catch (const std::exception& err) {
    return ConfigError{path, 0, "", std::string("cannot load the config file: ") + err.what(), ""};
  }
}

std::optional<ConfigError> apply_setting(Settings& settings, std::string_view name,
                                         std::string_view value) {
  auto error = [&](std::string problem, std::string allowed) {
    return ConfigError{std::string(kCommandLine), 0, std::string(name), std::move(problem),
                       std::move(allowed)};
  };
  auto unknown = [&]() {
    const auto names = all_setting_names();
    return error("unknown setting" + suggestion(name, names), join(names));
  };
  const Input input = input_from_text(value);
  Parsed parsed;

  const auto dot = name.find('.');
  if (dot == std::string_view::npos) return unknown();
  const std::string_view table = name.substr(0, dot);
  const std::string_view rest = name.substr(dot + 1);

  if (table == kQueues || table == kQueueDefaults) {
    const bool is_default = table == kQueueDefaults;
    // Queue names may contain dots; the setting is always the last part.
    const auto last_dot = rest.rfind('.');
    const bool has_queue_name = last_dot != std::string_view::npos;
    const std::string_view key = has_queue_name ? rest.substr(last_dot + 1) : rest;
    const std::string_view queue_name = has_queue_name ? rest.substr(0, last_dot) : "";
    const Field<QueueSettings>* field = find_field(kQueueFieldSpan, key);
    // queue_defaults.SETTING has no queue name; queues.NAME.SETTING must have one.
    if (!field || is_default == has_queue_name) {
      const std::string prefix =
          is_default ? "queue_defaults."
                     : "queues." + std::string(has_queue_name ? queue_name : "NAME") + ".";
      std::vector<std::string> names;
      for (const auto& known : keys_of(kQueueFieldSpan)) names.push_back(prefix + known);
      const bool missing_name = !is_default && !has_queue_name;
      return error(missing_name ? "expected queues.NAME.SETTING"
                                : "unknown setting" + suggestion(name, names),
                   join(names));
    }
    if (table == kQueues && !is_valid_queue_name(queue_name)) {
      return error("invalid queue name " + quote(queue_name), std::string(kQueueNameAllowed));
    }
    if (auto problem = parse_value(field->rule, input, parsed)) {
      return error(std::move(*problem), allowed_text(field->rule));
    }
    field->store(
        table == kQueues ? declare_queue(settings, queue_name).settings : settings.queue_defaults,
        parsed);
    return std::nullopt;
  }

  if (table == kTokens) {
    const auto last_dot = rest.rfind('.');
    const std::string_view key =
        last_dot == std::string_view::npos ? std::string_view{} : rest.substr(last_dot + 1);
    const std::string_view token_name =
        last_dot == std::string_view::npos ? std::string_view{} : rest.substr(0, last_dot);
    const Field<TokenSettings>* field = find_field(kTokenFieldSpan, key);
    if (!field) {
      std::vector<std::string> names;
      for (const auto& known : keys_of(kTokenFieldSpan)) names.push_back("tokens.NAME." + known);
      return error("expected tokens.NAME.SETTING" + suggestion(name, names), join(names));
    }
    if (!is_valid_token_name(token_name))
      return error("invalid token name " + quote(token_name), std::string(kTokenNameAllowed));
    if (auto problem = parse_value(field->rule, input, parsed))
      return error(std::move(*problem), allowed_text(field->rule));
    field->store(declare_token(settings, token_name), parsed);
    return std::nullopt;
  }

  const TableSpec* spec = find_table(table);
  const Field<Settings>* field = spec ? find_field(spec->fields, rest) : nullptr;
  if (!field) return unknown();
  if (auto problem = parse_value(field->rule, input, parsed)) {
    return error(std::move(*problem), allowed_text(field->rule));
  }
  field->store(settings, parsed);
  return std::nullopt;
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
      return ConfigError{"", 0, durable + ".durability",
                         "\"durable\" needs a data directory, and storage.path is not set",
                         "\"memory\", or set storage.path to a directory sluiced may write"};
    }
  }
  return std::nullopt;
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
