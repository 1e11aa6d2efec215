// sluicectl's admin commands: dead letters and triggers.
#include "admin.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "json_output.hpp"
#include "output.hpp"

namespace sluicectl {

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::string copy(s);
  out = std::strtoull(copy.c_str(), &end, 10);
  return end && *end == '\0' && copy[0] != '-';
}

int broker_error(const sluice::client::Error& e) {
  std::fprintf(stderr, "sluicectl: %s\n", e.to_string().c_str());
  return e.code == sluice::errc::not_found || e.code == sluice::errc::queue_not_found ? 3 : 1;
}

const char* const kDlqUsage =
    R"(usage: sluicectl dlq list QUEUE [--newest] [--limit N] [--after ID] [FILTERS]
       sluicectl dlq show QUEUE ID
       sluicectl dlq redrive QUEUE (ID... | --all | FILTERS) [--rate N]
       sluicectl dlq delete QUEUE ID...
       sluicectl dlq purge QUEUE

A queue's dead letters: messages that used up their attempts, or that a
consumer rejected as poison. list prints one line per entry:
  <entry id> <message id> <attempts> <age> <reason>
then "next: --after ID" when there is another page. show prints one entry
with its headers and payload. redrive puts entries back into QUEUE with their
attempts reset, at --rate messages per second (default: as fast as the queue
takes them). delete removes entries; purge removes them all.

  --newest            list newest first (default: oldest first)
  --limit N           entries per page, at most 1000 (default 100)
  --after ID          continue a listing after this entry id
  --all               redrive every entry
  --min-age DURATION  only entries dead-lettered at least this long ago (e.g. 90s, 5m, 2h, 1d)
  --max-age DURATION  only entries dead-lettered at most this long ago
  --reason TEXT       only entries whose last reason contains TEXT
  --rate N            redrive at most N messages per second
)";

bool parse_age(std::string_view text, std::chrono::milliseconds& out) {
  std::uint64_t scale = 1000;
  if (text.ends_with("ms")) {
    scale = 1, text.remove_suffix(2);
  } else if (text.ends_with("s")) {
    text.remove_suffix(1);
  } else if (text.ends_with("m")) {
    scale = 60'000, text.remove_suffix(1);
  } else if (text.ends_with("h")) {
    scale = 3'600'000, text.remove_suffix(1);
  } else if (text.ends_with("d")) {
    scale = 86'400'000, text.remove_suffix(1);
  }
  std::uint64_t n = 0;
  if (!parse_u64(text, n) || n > (1ull << 40)) return false;
  out = std::chrono::milliseconds(static_cast<std::int64_t>(n * scale));
  return true;
}

sluice::client::DeadLetterQuery dlq_query(const DlqArgs& args) {
  using Op = sluice::client::DeadLetterQuery::Op;
  sluice::client::DeadLetterQuery q = args.query;
  q.op = args.op == "list"      ? Op::list
         : args.op == "show"    ? Op::show
         : args.op == "redrive" ? Op::redrive
         : args.op == "delete"  ? Op::remove
                                : Op::purge;
  const auto age = [](const std::string& text, const char* flag, std::chrono::milliseconds& out) {
    if (!text.empty() && !parse_age(text, out))
      throw UsageError{std::string(flag) + " needs a duration like 90s, 5m, 2h or 1d"};
  };
  age(args.min_age, "--min-age", q.min_age);
  age(args.max_age, "--max-age", q.max_age);
  const bool filtered = q.min_age.count() != 0 || q.max_age.count() != 0 || !q.reason.empty();
  if (q.op == Op::show && q.ids.size() != 1) throw UsageError{"dlq show needs exactly one ID"};
  if (q.op == Op::remove && q.ids.empty())
    throw UsageError{"dlq delete needs at least one ID (purge removes all)"};
  if (q.op == Op::redrive && q.ids.empty() && !args.all && !filtered)
    throw UsageError{"dlq redrive needs IDs, --all or a filter"};
  return q;
}

int dlq(sluice::client::Connection& conn, const sluice::client::DeadLetterQuery& q, bool json) {
  auto result = conn.dead_letters(q);
  if (!result) return broker_error(result.error());
  if (!json) {
    print_dead_letters(q, *result);
    return 0;
  }
  using Op = sluice::client::DeadLetterQuery::Op;
  if (q.op == Op::show) {
    print_json(dead_letter_json(result->entries.at(0)));
  } else if (q.op == Op::list) {
    nlohmann::json entries = nlohmann::json::array();
    for (const auto& e : result->entries) entries.push_back(dead_letter_json(e));
    nlohmann::json page = {{"queue", q.queue}, {"total", result->affected}, {"entries", entries}};
    page["next_after"] =
        result->next_after == 0 ? nlohmann::json(nullptr) : nlohmann::json(result->next_after);
    print_json(page);
  } else {
    print_json(
        {{"queue", q.queue}, {q.op == Op::redrive ? "redriving" : "deleted", result->affected}});
  }
  return 0;
}

const char* const kTriggersUsage =
    R"(usage: sluicectl triggers [list [NAME]]
       sluicectl triggers pause NAME
       sluicectl triggers resume NAME
       sluicectl triggers invoke NAME [--body TEXT | --file FILE]

The broker's triggers ([triggers.NAME] in its config), each pushing a queue's
messages to an HTTP function. list prints one line per trigger:
  <name> <queue> <state> <breaker> <limit> <in flight> <sent> <ok> <failed> <url>
(state: running or paused; breaker: closed, open or half_open; limit: the
concurrency limit now; ok and failed: invocations that succeeded, and those
that did not). pause stops invocations and gives what the trigger holds back
to the queue without using an attempt; resume goes on. Both last until the
broker restarts or reloads its config. invoke sends one signed test message
to the function, outside the queue, and prints the answer:
  <outcome> <status> <milliseconds>
  <body>
exiting 0 for a 2xx answer and 1 otherwise. Needs admin on the trigger's queue.

  --body TEXT   the test message's payload (default: {})
  --file FILE   read the payload from FILE
)";

sluice::client::TriggerCommand triggers_command(const TriggersArgs& args) {
  using Op = sluice::client::TriggerCommand::Op;
  sluice::client::TriggerCommand c;
  c.op = args.op == "list"     ? Op::list
         : args.op == "pause"  ? Op::pause
         : args.op == "resume" ? Op::resume
                               : Op::invoke;
  c.name = args.name;
  if (c.op != Op::list && c.name.empty()) throw UsageError{"triggers " + args.op + " needs NAME"};
  if (c.op != Op::invoke && (args.has_body || !args.file.empty()))
    throw UsageError{"--body and --file go with triggers invoke"};
  if (args.has_body && !args.file.empty()) throw UsageError{"--body or --file, not both"};
  c.body = args.has_body ? args.body : "{}";
  if (!args.file.empty()) {
    std::ifstream in(args.file, std::ios::binary);
    if (!in) throw UsageError{"cannot read " + args.file};
    c.body.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return c;
}

int triggers(sluice::client::Connection& conn, const sluice::client::TriggerCommand& command,
             bool json) {
  auto result = conn.triggers(command);
  if (!result) return broker_error(result.error());
  if (command.op != sluice::client::TriggerCommand::Op::invoke) {
    if (json) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& t : result->triggers) list.push_back(trigger_json(t));
      print_json({{"triggers", std::move(list)}});
    } else {
      print_triggers(result->triggers);
    }
    return 0;
  }
  if (!result->invocation) return broker_error({sluice::errc::malformed_frame, "no answer"});
  const auto& i = *result->invocation;
  const bool ok = i.outcome == "answered" && i.status >= 200 && i.status < 300;
  if (json) {
    print_json(invocation_json(i));
    return ok ? 0 : 1;
  }
  std::printf("%s %u %.1f\n", i.outcome.c_str(), static_cast<unsigned>(i.status),
              static_cast<double>(i.took.count()) / 1000.0);
  std::fwrite(i.body.data(), 1, i.body.size(), stdout);
  if (!i.error.empty()) std::printf("%s", i.error.c_str());
  std::printf("\n");
  return ok ? 0 : 1;
}

std::pair<std::string, std::string> split_pair(const std::string& text, const char* what) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UsageError{std::string(what) + " needs KEY=VALUE, got " + text};
  return {text.substr(0, eq), text.substr(eq + 1)};
}

const char* const kQueuesUsage =
    R"(usage: sluicectl queues [list [QUEUE]]
       sluicectl queues create QUEUE [NAME=VALUE...]
       sluicectl queues delete QUEUE [--force]
       sluicectl queues purge QUEUE

list prints one line per queue the token may see:
  <name> <memory|durable> <messages> <consumers>
create makes a queue with settings as in a [queues.NAME] table (the others
from [queue_defaults]); it lasts until the broker restarts (the config file
declares queues for good). delete removes a queue with its dead letters; it
is refused while the queue holds messages or has consumers unless --force
(then those consumers end and what it holds goes too), and always for a
queue the config file declares or a trigger consumes. purge drops the
queue's ready messages; those in flight settle as usual. create, delete and
purge need admin on the queue; delete and purge print how many messages went.

  --force   delete: also when it holds messages or has consumers
)";

sluice::client::QueueCommand queues_command(const QueuesArgs& args) {
  using Op = sluice::client::QueueCommand::Op;
  sluice::client::QueueCommand c;
  c.op = args.op == "create"   ? Op::create
         : args.op == "delete" ? Op::remove
         : args.op == "purge"  ? Op::purge
                               : Op::list;
  c.queue = args.queue;
  c.force = args.force;
  if (c.op != Op::list && c.queue.empty()) throw UsageError{args.op + " needs a QUEUE"};
  if (c.op != Op::create && !args.pairs.empty())
    throw UsageError{"settings (NAME=VALUE) go with create only"};
  if (c.op != Op::remove && c.force) throw UsageError{"--force goes with delete only"};
  for (const auto& p : args.pairs) c.settings.push_back(split_pair(p, "a setting"));
  return c;
}

int queues(sluice::client::Connection& conn, const sluice::client::QueueCommand& command,
           bool json) {
  using Op = sluice::client::QueueCommand::Op;
  auto result = conn.queues(command);
  if (!result) return broker_error(result.error());
  if (json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& q : result->queues)
      list.push_back({{"name", q.name},
                      {"durable", q.durable},
                      {"messages", q.messages},
                      {"consumers", q.consumers}});
    if (command.op == Op::list || command.op == Op::create)
      print_json({{"queues", std::move(list)}});
    else
      print_json({{"queue", command.queue}, {"messages_dropped", result->affected}});
    return 0;
  }
  if (command.op == Op::remove || command.op == Op::purge) {
    std::printf("%llu\n", static_cast<unsigned long long>(result->affected));
    return 0;
  }
  for (const auto& q : result->queues)
    std::printf("%s %s %llu %u\n", q.name.c_str(), q.durable ? "durable" : "memory",
                static_cast<unsigned long long>(q.messages), q.consumers);
  return 0;
}

}  // namespace sluicectl
