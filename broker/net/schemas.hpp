// Schemas: each declared queue's JSON Schemas by version ([queues.NAME.schemas],
// docs/ingress.md), read and compiled at start and on SIGHUP. The Intake asks
// them about every message published to such a queue, whichever front end it
// came by: the message names its version (sluice-schema-version, or a
// CloudEvent's dataschema), and its JSON (a structured CloudEvent's "data") must
// be valid against that version. Queues without schemas cost one empty check.
// Engine thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/config/settings.hpp"
#include "sluice/protocol/error.hpp"
#include "sluice/protocol/frames.hpp"

namespace sluice::schema {
class Schema;
}

namespace sluice::net {

/// The header a message names its schema version in.
inline constexpr std::string_view kSchemaVersionHeader = "sluice-schema-version";

/// Why a message was refused by its queue's schema, besides the one-line detail.
struct SchemaRefusal {
  std::string version;  // the version it named ("" if none or unknown)
  std::string pointer;  // JSON Pointer of the first violation in the document
  std::string keyword;  // the schema keyword it broke
};

class Schemas {
 public:
  struct Version {
    std::string name;
    std::string file;
    std::shared_ptr<const schema::Schema> schema;
    std::uint64_t valid = 0;
    std::uint64_t invalid = 0;
  };
  struct Queue {
    std::string name;
    bool required = false;
    std::vector<Version> versions;
    std::uint64_t missing = 0;  // refused: require_schema and no version named
    std::uint64_t unknown = 0;  // refused: a version it does not have
  };

  /// Reads and compiles every declared queue's schemas into `out`; the first
  /// problem (file, and the unsupported keyword or JSON error) as one line.
  static Error load(const config::Settings& settings, std::vector<Queue>& out);
  /// Replaces the running set; the counts of a queue's versions carry over.
  void replace(std::vector<Queue> next);

  bool empty() const noexcept { return queues_.empty(); }
  /// `queue`'s schemas, or nullptr.
  Queue* find(std::string_view queue) noexcept;
  /// Checks one message: ok, or invalid_argument with the detail (and `why`).
  static Error check(Queue& queue, const protocol::MessageParts& parts, SchemaRefusal& why);
  const std::vector<Queue>& queues() const noexcept { return queues_; }

 private:
  std::vector<Queue> queues_;
};

}  // namespace sluice::net
