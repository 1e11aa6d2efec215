// sluicectl's admin commands (dlq, triggers): their usage, arguments, the
// checks made before connecting, and the calls. main.cpp wires them up.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/client/client.hpp"

namespace sluicectl {

/// A bad command line: the message is printed with the command's usage, exit 2.
struct UsageError {
  std::string message;
};

/// "KEY=VALUE" split at the first '='; throws UsageError naming `what`.
std::pair<std::string, std::string> split_pair(const std::string& text, const char* what);
/// A whole decimal number without a sign.
bool parse_u64(std::string_view s, std::uint64_t& out);
/// "90s", "5m", "2h", "1d", "250ms" or plain seconds; false if malformed.
bool parse_age(std::string_view text, std::chrono::milliseconds& out);
/// A broker's refusal on stderr; exit code 3 when what was named does not exist
/// (not_found), else 1.
int broker_error(const sluice::client::Error& e);

extern const char* const kDlqUsage;

struct DlqArgs {
  std::string op;
  sluice::client::DeadLetterQuery query;
  bool all = false;
  std::string min_age, max_age;
};
/// The query for `args`, checked; throws UsageError.
sluice::client::DeadLetterQuery dlq_query(const DlqArgs& args);
/// Prints the result as text, or as one JSON document when `json`.
int dlq(sluice::client::Connection& conn, const sluice::client::DeadLetterQuery& q, bool json);

extern const char* const kTriggersUsage;

struct TriggersArgs {
  std::string op = "list";
  std::string name;
  std::string body;
  bool has_body = false;
  std::string file;
};
/// The command for `args`, checked (reads --file); throws UsageError.
sluice::client::TriggerCommand triggers_command(const TriggersArgs& args);
int triggers(sluice::client::Connection& conn, const sluice::client::TriggerCommand& command,
             bool json);

extern const char* const kQueuesUsage;

struct QueuesArgs {
  std::string op = "list";
  std::string queue;
  std::vector<std::string> pairs;  // create: NAME=VALUE
  bool force = false;
};
/// The command for `args`, checked; throws UsageError.
sluice::client::QueueCommand queues_command(const QueuesArgs& args);
int queues(sluice::client::Connection& conn, const sluice::client::QueueCommand& command,
           bool json);

}  // namespace sluicectl
