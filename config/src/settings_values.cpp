// Value rules and text forms: whole numbers, units, how values are shown, quoting, and which
// host, queue, pattern and token names are valid.

#include "settings_internal.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <limits>

namespace sluice::config::detail {

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

namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '.' ||
         c == ':' || c == '-';
}

}  // namespace

/// The protocol's rule (protocol::valid_queue_name): "." and ".." are out, as
/// a URL path normaliser would change them.
bool is_valid_queue_name(std::string_view name) {
  if (name.empty() || name.size() > 200 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), is_name_char);
}

bool is_valid_pattern(std::string_view pattern) {
  if (pattern.empty() || pattern.size() > 200) return false;
  std::string without_stars;
  for (char c : pattern)
    if (c != '*') without_stars.push_back(c);
  // "*" alone is fine; the rest must be queue-name characters.
  return std::all_of(without_stars.begin(), without_stars.end(), is_name_char);
}

bool is_valid_url(std::string_view url) {
  std::string_view rest;
  if (url.starts_with("https://"))
    rest = url.substr(8);
  else if (url.starts_with("http://"))
    rest = url.substr(7);
  else
    return false;
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return false;
  } else if (authority.front() == ':') {
    return false;
  }
  const auto colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.back() != ']') {
    const std::string_view port = authority.substr(colon + 1);
    const auto n = parse_whole(port);
    if (!n || *n == 0 || *n > 65535) return false;
  }
  for (char c : url)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
  return true;
}

/// Token names share the queue-name alphabet, shorter.
bool is_valid_token_name(std::string_view name) {
  return name.size() <= 100 && is_valid_queue_name(name);
}

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
    case Kind::queue_selection:
      return "\"all\", \"none\", or an array of queue-name patterns like [\"orders\", "
             "\"orders.*\"] ('*' stands for any run of characters)";
    case Kind::queue_name:
      return std::string(kQueueNameAllowed);
    case Kind::statuses:
      return "an array of HTTP statuses from 400 to 599, like [400, 422], or [] for none";
    case Kind::url:
      return "\"http://host[:port]/path\" or \"https://host[:port]/path\" (host: a DNS name, an "
             "IPv4 address or [IPv6 address])";
    case Kind::header_lines:
      return "an array of header lines like [\"Authorization: Bearer abc\", \"X-Env: prod\"]";
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

}  // namespace sluice::config::detail
