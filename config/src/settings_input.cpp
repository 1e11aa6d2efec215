// One value on its way in: an Input (typed by TOML, or plain command-line text) checked against
// its field's Rule and turned into a Parsed value, or a message saying what is wrong with it.

#include "settings_internal.hpp"

#include "sluice/security/token.hpp"

#include <algorithm>
#include <cmath>

namespace sluice::config::detail {

Input input_from_text(std::string_view text) {
  Input input;
  input.type = Input::Type::string;
  input.string = std::string(text);
  input.description = quote(text);
  input.from_command_line = true;
  return input;
}

namespace {

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

}  // namespace

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
    case Kind::header_lines: {
      // On the command line one line: a comma may well be part of a value.
      std::vector<std::string> items;
      if (input.type == Input::Type::array && input.array_of_strings)
        items = input.strings;
      else if (is_string && input.from_command_line)
        items.push_back(input.string);
      else
        return "expected an array of strings, got " + input.description;
      for (const auto& item : items) {
        const auto colon = item.find(':');
        bool ok = colon != std::string::npos && colon > 0;
        for (std::size_t i = 0; ok && i < colon; ++i) {
          const auto c = static_cast<unsigned char>(item[i]);
          ok = c > ' ' && c < 0x7f &&
               std::string_view("()<>@,;:\\\"/[]?={}").find(item[i]) == std::string_view::npos;
        }
        for (std::size_t i = colon + 1; ok && i < item.size(); ++i) {
          const auto c = static_cast<unsigned char>(item[i]);
          ok = (c >= ' ' || c == '\t') && c != 0x7f;
        }
        if (!ok) return "not a header line \"Name: value\": " + quote(item);
      }
      out.list = std::move(items);
      return std::nullopt;
    }
    case Kind::statuses: {
      std::vector<int64_t> items;
      if (input.type == Input::Type::array && input.array_of_integers) {
        items = input.integers;
      } else if (is_string && input.from_command_line) {
        std::string_view rest = input.string;
        while (!rest.empty()) {
          const auto comma = rest.find(',');
          const auto n = parse_whole(rest.substr(0, comma));
          if (!n) return "expected HTTP statuses like 400,422, got " + quote(input.string);
          items.push_back(static_cast<int64_t>(*n));
          rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
        }
      } else {
        return "expected an array of HTTP statuses, got " + input.description;
      }
      out.list.clear();
      for (auto status : items) {
        if (status < 400 || status > 599)
          return std::to_string(status) + " is not a 4xx or 5xx status";
        out.list.push_back(std::to_string(status));
      }
      return std::nullopt;
    }
    case Kind::queue_name:
      if (!is_string) return "expected a string, got " + input.description;
      if (!is_valid_queue_name(input.string)) return "invalid queue name " + quote(input.string);
      out.text = input.string;
      return std::nullopt;
    case Kind::url:
      if (!is_string) return "expected a string, got " + input.description;
      if (!is_valid_url(input.string)) return "not an http or https URL: " + quote(input.string);
      out.text = input.string;
      return std::nullopt;
    case Kind::queue_selection:
      if (is_string && (input.string == "all" || input.string == "none")) {
        out.list =
            input.string == "all" ? std::vector<std::string>{"*"} : std::vector<std::string>{};
        return std::nullopt;
      }
      [[fallthrough]];
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

}  // namespace sluice::config::detail
