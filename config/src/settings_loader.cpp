// The file and the command line: load_file() and load_text() read TOML, apply_setting() one
// "name=value" flag; both check each value against the field tables.

#include "settings_internal.hpp"

// Debian ships toml++ as a compiled library; use it instead of compiling the whole parser into
// this object (the CMake target passes the same two definitions).
#ifndef TOML_HEADER_ONLY
#define TOML_HEADER_ONLY 0
#endif
#ifndef TOML_SHARED_LIB
#define TOML_SHARED_LIB 1
#endif
#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <system_error>

namespace sluice::config {
// The helpers of settings_internal.hpp.
using namespace detail;

namespace {

constexpr std::string_view kCommandLine = "command line";

// ---------------------------------------------------------------------------------------------
// Named entries ([queues.NAME], [tokens.NAME], ...): the one of that name, made on first mention

template <typename Entry>
Entry& find_or_add(std::vector<Entry>& entries, std::string_view name) {
  for (auto& entry : entries)
    if (entry.name == name) return entry;
  Entry& entry = entries.emplace_back();
  entry.name = std::string(name);
  return entry;
}

DeclaredQueue& declare_queue(Settings& settings, std::string_view name) {
  const std::size_t before = settings.queues.size();
  DeclaredQueue& queue = find_or_add(settings.queues, name);
  if (settings.queues.size() != before) queue.settings = settings.queue_defaults;  // a new one
  return queue;
}
TokenSettings& declare_token(Settings& settings, std::string_view name) {
  return find_or_add(settings.tokens, name);
}
TriggerSettings& declare_trigger(Settings& settings, std::string_view name) {
  return find_or_add(settings.triggers, name);
}
SourceSettings& declare_source(Settings& settings, std::string_view name) {
  return find_or_add(settings.sources, name);
}

// ---------------------------------------------------------------------------------------------
// One value on its way in, from TOML

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
      if (const auto* integer = element.as_integer())
        input.integers.push_back(integer->get());
      else
        input.array_of_integers = false;
    }
  }
  input.description = describe(node);
  return input;
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
        load_named(node, kTokens, kTokenNameAllowed, &is_valid_token_name, kTokenFieldSpan,
                   &declare_token, settings);
      } else if (name == kTriggers) {
        load_named(node, kTriggers, kTokenNameAllowed, &is_valid_token_name, kTriggerFieldSpan,
                   &declare_trigger, settings);
      } else if (name == kSources) {
        load_named(node, kSources, kTokenNameAllowed, &is_valid_token_name, kSourceFieldSpan,
                   &declare_source, settings);
        // The secret files this file names are relative to it (and only those:
        // an earlier file's are resolved already).
        if (const auto* tables = node.as_table())
          for (auto&& [name, table] : *tables) {
            const auto* keys = table.as_table();
            if (keys == nullptr || !is_valid_token_name(name.str())) continue;
            SourceSettings& source = declare_source(settings, name.str());
            if (keys->contains("secret_file")) source.secret_file = beside_file(source.secret_file);
            if (keys->contains("previous_secret_file"))
              source.previous_secret_file = beside_file(source.previous_secret_file);
          }
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
      if (name == kQueuesAutoCreate.key && !queue->is_table()) {
        Parsed value;
        if (auto problem = parse_value(kQueuesAutoCreate.rule, input_from_node(*queue), value))
          report(queue->source(), setting, std::move(*problem),
                 allowed_text(kQueuesAutoCreate.rule));
        else
          kQueuesAutoCreate.store(settings, value);
        continue;
      }
      if (!is_valid_queue_name(name)) {
        report(key->source(), setting, "invalid queue name " + quote(name),
               std::string(kQueueNameAllowed));
        continue;
      }
      if (const auto* table = expect_table(*queue, setting, kQueueFieldSpan)) {
        DeclaredQueue& declared = declare_queue(settings, name);
        // Its schemas and require_schema sit beside the queue's settings, which are the
        // field table's (and, unlike them, cannot be changed by `sluicectl set`).
        toml::table fields = *table;
        fields.erase(kSchemas);
        fields.erase(kRequireSchema);
        apply_fields(fields, setting, kQueueFieldSpan, declared.settings);
        if (const toml::node* schemas = table->get(kSchemas))
          load_schemas(*schemas, setting + "." + std::string(kSchemas), declared);
        if (const toml::node* require = table->get(kRequireSchema)) {
          static constexpr std::string_view kOnOff[] = {"off", "on"};
          const Rule rule{.kind = Kind::choice, .choices = kOnOff};
          Parsed value;
          if (auto problem = parse_value(rule, input_from_node(*require), value))
            report(require->source(), setting + "." + std::string(kRequireSchema),
                   std::move(*problem), allowed_text(rule));
          else
            declared.require_schema = value.choice == 1;
        }
      }
    }
  }

  /// [queues.NAME.schemas]: VERSION = "file", in file order.
  void load_schemas(const toml::node& node, const std::string& setting, DeclaredQueue& queue) {
    const auto* versions = node.as_table();
    if (!versions) {
      report(node.source(), setting, "expected a table, got " + describe(node),
             "a table [" + setting + "] of " + std::string(kSchemaVersionAllowed));
      return;
    }
    std::vector<std::pair<const toml::key*, const toml::node*>> entries;
    for (auto&& [key, file] : *versions) entries.emplace_back(&key, &file);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.first->source().begin.line < b.first->source().begin.line;
    });
    queue.schemas.clear();
    for (const auto& [key, file] : entries) {
      const std::string_view version = key->str();
      const std::string where = setting + "." + std::string(version);
      if (version.size() > 64 || !is_valid_token_name(version)) {
        report(key->source(), where, "invalid schema version " + quote(version),
               std::string(kSchemaVersionAllowed));
        continue;
      }
      const auto* path = file->as_string();
      if (!path || path->get().empty()) {
        report(file->source(), where, "expected a file path, got " + describe(*file),
               std::string(kSchemaVersionAllowed));
        continue;
      }
      queue.schemas.push_back({std::string(version), beside_file(path->get())});
    }
  }

  /// A relative path named in this file, made relative to the file's directory.
  std::string beside_file(const std::string& path) const {
    if (path.empty() || path.front() == '/') return path;
    const std::filesystem::path dir = std::filesystem::path(path_).parent_path();
    return dir.empty() ? path : (dir / path).string();
  }

  /// [tokens.NAME] or [triggers.NAME]: tables by name, each from `fields`, in file order.
  template <class Target>
  void load_named(const toml::node& node, std::string_view kind, std::string_view name_allowed,
                  bool (*valid_name)(std::string_view), std::span<const Field<Target>> fields,
                  Target& (*declare)(Settings&, std::string_view), Settings& settings) {
    // Strings are described by type only: under [tokens] one may be a pasted token.
    auto what = [](const toml::node& n) { return n.is_string() ? "a string" : describe(n); };
    const std::string noun(kind.substr(0, kind.size() - 1));  // "token", "trigger"
    const auto* tables = node.as_table();
    if (!tables) {
      report(node.source(), std::string(kind), "expected a table, got " + what(node),
             "[" + std::string(kind) + ".NAME] tables with keys " + join(keys_of(fields)));
      return;
    }
    std::vector<std::pair<const toml::key*, const toml::node*>> entries;
    for (auto&& [key, table] : *tables) entries.emplace_back(&key, &table);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      return a.first->source().begin.line < b.first->source().begin.line;
    });
    for (const auto& [key, entry] : entries) {
      const std::string_view name = key->str();
      const std::string setting = std::string(kind) + "." + std::string(name);
      if (!valid_name(name)) {
        report(key->source(), setting, "invalid " + noun + " name " + quote(name),
               std::string(name_allowed));
        continue;
      }
      const auto* table = entry->as_table();
      if (!table) {
        report(entry->source(), setting, "expected a table, got " + what(*entry),
               "a table [" + setting + "] with keys " + join(keys_of(fields)));
        continue;
      }
      apply_fields(*table, setting, fields, declare(settings, name));
    }
  }

  void report_unknown_table(const toml::key& key) {
    std::vector<std::string> tables;
    for (const auto& table : kSettingsTables) tables.push_back(std::string(table.name));
    tables.push_back(std::string(kQueueDefaults));
    tables.push_back(std::string(kQueues));
    tables.push_back(std::string(kTokens));
    tables.push_back(std::string(kTriggers));
    tables.push_back(std::string(kSources));
    std::string problem = "unknown table" + suggestion(key.str(), tables);
    // A key written above the first table header lands at the top level.
    for (const auto& table : kSettingsTables) {
      if (find_field(table.fields, key.str())) {
        problem = "setting outside its table; did you mean " + std::string(key.str()) + " under [" +
                  std::string(table.name) + "]?";
      }
    }
    report(
        key.source(), std::string(key.str()), std::move(problem),
        "tables [server], [http], [limits], [storage], [tls], [log], [metrics], [queue_defaults], "
        "[queues.NAME], [tokens.NAME], [triggers.NAME] and [sources.NAME]");
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

namespace {

/// tokens.NAME.SETTING or triggers.NAME.SETTING from the command line.
template <class Target>
std::optional<ConfigError> apply_named(Settings& settings, std::string_view name,
                                       const Input& input, std::string_view kind,
                                       std::string_view name_allowed,
                                       std::span<const Field<Target>> fields,
                                       Target& (*declare)(Settings&, std::string_view)) {
  auto error = [&](std::string problem, std::string allowed) {
    return ConfigError{std::string(kCommandLine), 0, std::string(name), std::move(problem),
                       std::move(allowed)};
  };
  const std::string_view rest = name.substr(kind.size() + 1);
  const auto last_dot = rest.rfind('.');
  const std::string_view key =
      last_dot == std::string_view::npos ? std::string_view{} : rest.substr(last_dot + 1);
  const std::string_view entry =
      last_dot == std::string_view::npos ? std::string_view{} : rest.substr(0, last_dot);
  const Field<Target>* field = find_field(fields, key);
  const std::string prefix = std::string(kind) + ".NAME.";
  if (!field) {
    std::vector<std::string> names;
    for (const auto& known : keys_of(fields)) names.push_back(prefix + known);
    return error("expected " + prefix + "SETTING" + suggestion(name, names), join(names));
  }
  if (!is_valid_token_name(entry))
    return error(
        "invalid " + std::string(kind.substr(0, kind.size() - 1)) + " name " + quote(entry),
        std::string(name_allowed));
  Parsed parsed;
  if (auto problem = parse_value(field->rule, input, parsed))
    return error(std::move(*problem), allowed_text(field->rule));
  field->store(declare(settings, entry), parsed);
  return std::nullopt;
}

}  // namespace

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

  if (table == kQueues && rest == kQueuesAutoCreate.key) {
    if (auto problem = parse_value(kQueuesAutoCreate.rule, input, parsed))
      return error(std::move(*problem), allowed_text(kQueuesAutoCreate.rule));
    kQueuesAutoCreate.store(settings, parsed);
    return std::nullopt;
  }
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

  if (table == kTokens)
    return apply_named(settings, name, input, kTokens, kTokenNameAllowed, kTokenFieldSpan,
                       &declare_token);
  if (table == kTriggers)
    return apply_named(settings, name, input, kTriggers, kTokenNameAllowed, kTriggerFieldSpan,
                       &declare_trigger);
  if (table == kSources)
    return apply_named(settings, name, input, kSources, kTokenNameAllowed, kSourceFieldSpan,
                       &declare_source);

  const TableSpec* spec = find_table(table);
  const Field<Settings>* field = spec ? find_field(spec->fields, rest) : nullptr;
  if (!field) return unknown();
  if (auto problem = parse_value(field->rule, input, parsed)) {
    return error(std::move(*problem), allowed_text(field->rule));
  }
  field->store(settings, parsed);
  return std::nullopt;
}

}  // namespace sluice::config
