// sluicectl: the broker's command line for people. publish, consume, stats.
// Arguments (CLI11) and commands are here; output.cpp prints the broker's answers.
// Every argument is checked before any connection is made: a usage error exits 2.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "admin.hpp"
#include "json_output.hpp"
#include "output.hpp"
#include "sluice/client/client.hpp"
#include "sluice/security/token.hpp"

namespace {

using sluice::client::Connection;
using sluice::client::Disposition;
using sluicectl::broker_error;
using sluicectl::DlqArgs;
using sluicectl::parse_u64;
using sluicectl::QueuesArgs;
using sluicectl::split_pair;
using sluicectl::TriggersArgs;
using sluicectl::UsageError;

constexpr const char* kUsage = R"(usage: sluicectl [connection options] COMMAND [options]

Talks to a Sluice broker (default 127.0.0.1:7450, or $SLUICE_BROKER).

commands:
  publish QUEUE     publish messages (from --body, or one per line of stdin)
  consume QUEUE     receive messages, print them, ack them
  stats [QUEUE]     queue depths, consumers and counters
  set QUEUE N=V...  change a queue's settings in the running broker
  dlq OP QUEUE ...  dead letters: list, show, redrive, delete, purge
  triggers [OP]     triggers: list, pause, resume, invoke
  queues [OP]       queues: list, create, delete, purge
  new-token         make a random token; print it and the hash for the config
  hash-token        read a token on stdin; print the hash for the config

options for every command (anywhere on the line):
  --json                print what the command prints as one JSON document
  --broker HOST:PORT    the broker (default $SLUICE_BROKER or 127.0.0.1:7450)
  --token-file FILE     read the access token from FILE (default: $SLUICE_TOKEN)
  --tls                 speak TLS and verify the broker's certificate
  --ca-file FILE        trust this CA (PEM) instead of the system's roots; implies --tls
  --server-name NAME    the name the certificate must carry (default: the broker's host)

'sluicectl COMMAND --help' explains each command.

exit status:
  0  done
  1  the broker refused the request, or could not be reached
  2  a usage error: nothing was sent
  3  what was named does not exist (a queue, a dead letter, a trigger)
)";

constexpr const char* kTokenUsage = R"(usage: sluicectl new-token [--name NAME]
       sluicectl hash-token [--name NAME] < token-file

new-token prints a fresh random token (256 bits) on the first line and, after
it, a [tokens.NAME] table holding only its salted hash. Give the token to the
client; put the table in sluiced's config and add the queue patterns it may
publish, consume or administer. The token itself is stored nowhere.

hash-token does the same for a token you already have (the first line of
standard input, at least 24 characters).
)";

constexpr const char* kPublishUsage =
    R"(usage: sluicectl publish QUEUE [--body TEXT] [--header KEY=VALUE]... [--count N]

Publishes to QUEUE and waits for the broker's confirms; prints each message id.
Without --body, each line of standard input is one message.

  --body TEXT          the payload
  --header KEY=VALUE   a message header (repeatable)
  --count N            publish the --body N times (default 1)
  --quiet              do not print the ids
)";

constexpr const char* kConsumeUsage =
    R"(usage: sluicectl consume QUEUE [--count N] [--max-in-flight N] [--timeout SECONDS] [--nack]

Subscribes to QUEUE and prints each delivery as one line:
  <message id> <attempt> <payload>
then acks it (or nacks it with --nack). Stops after --count messages, or when
no message arrived for --timeout seconds (default: wait forever; fractions allowed).
When the broker goes away (a restart), it says so on stderr, reconnects and
carries on; what was delivered and not yet acked is delivered again.

  --count N            stop after N messages
  --max-in-flight N    the most unacked messages held at once (default 16)
  --timeout SECONDS    stop after this long without a message
  --nack               nack instead of ack (the broker redelivers)
  --rate N             take at most N messages per second (the broker paces them)
  --headers            print headers as KEY=VALUE after the payload
)";

constexpr const char* kStatsUsage = R"(usage: sluicectl stats [QUEUE]

Prints one line per queue (or just QUEUE): messages ready, delayed, in flight,
consumers, the published / delivered / acked / nacked / expired totals, how
full it is (PRESSURE, % of its high watermark) and publishes refused as full.
Without QUEUE, and when the broker has a data directory (durable queues), a
STORAGE line follows: the data file's size and how much of it is in use
against storage.max_size, commits (fsyncs) so far, the median operations per
commit, and records waiting for room when the store is full.
)";

constexpr const char* kSetUsage = R"(usage: sluicectl set QUEUE NAME=VALUE [NAME=VALUE]...

Changes settings of QUEUE in the running broker, at once and without losing
or repeating a message; creates the queue if it does not exist. NAME is any
key of a [queues.NAME] table in the config file, e.g.

  sluicectl set orders dispatch_rate=200 max_in_flight=50 overflow=reject

All or nothing: a bad value changes nothing and is reported with what is
allowed. The change lasts until the broker restarts or reloads its config
file (SIGHUP), which puts the file's values back.
)";

/// A usage error found after CLI11 parsed the line (a malformed KEY=VALUE, a
/// missing id): reported like CLI11's own, with the command's usage.

/// What one command was given on the line.
struct PublishArgs {
  std::string queue;
  std::string body;
  bool has_body = false;
  std::vector<std::string> headers;
  std::uint64_t count = 1;
  bool quiet = false;
};

int publish(Connection& conn, const PublishArgs& args, bool json) {
  std::mutex m;
  std::optional<sluice::client::Error> first_error;
  std::vector<std::uint64_t> ids;
  sluice::client::Message message;
  for (const auto& h : args.headers) message.headers.push_back(split_pair(h, "--header"));
  auto publish_one = [&](std::string payload) {
    message.payload = std::move(payload);
    conn.publish_async(args.queue, message, [&](const sluice::client::Error& e, std::uint64_t id) {
      std::lock_guard lk(m);
      if (e && !first_error) first_error = e;
      if (!e) ids.push_back(id);
    });
  };
  if (args.has_body) {
    for (std::uint64_t n = 0; n < args.count; ++n) publish_one(args.body);
  } else {
    std::string line;
    while (std::getline(std::cin, line)) publish_one(line);
  }
  if (!conn.wait_confirms(std::chrono::minutes(5))) {
    std::fprintf(stderr, "sluicectl: timed out waiting for confirms\n");
    return 1;
  }
  std::lock_guard lk(m);
  if (json)
    sluicectl::print_json({{"queue", args.queue}, {"ids", ids}});
  else if (!args.quiet)
    for (auto id : ids) std::printf("%llu\n", static_cast<unsigned long long>(id));
  if (first_error) return broker_error(*first_error);
  return 0;
}

struct ConsumeArgs {
  std::string queue;
  std::uint64_t count = 0;  // 0: no limit
  std::uint64_t max_in_flight = 16;
  double rate = 0;
  double timeout_seconds = 0;  // 0: wait forever
  bool nack = false;
  bool show_headers = false;
};

int consume(Connection& conn, const ConsumeArgs& args, bool json) {
  const std::uint64_t count = args.count;
  const std::chrono::milliseconds timeout(
      static_cast<std::int64_t>(args.timeout_seconds * 1000 + 0.5));
  std::mutex m;
  std::condition_variable cv;
  std::uint64_t received = 0;
  nlohmann::json messages = nlohmann::json::array();  // --json: printed at the end
  auto last = std::chrono::steady_clock::now();
  sluice::client::SubscribeOptions options;
  options.max_in_flight = static_cast<std::uint32_t>(
      count > 0 && args.max_in_flight > count ? count : args.max_in_flight);
  options.rate = args.rate;
  auto sub = conn.subscribe(args.queue, options, [&](const sluice::client::Delivery& d) {
    std::lock_guard lk(m);
    if (count > 0 && received >= count)
      return Disposition::nack;  // beyond what was asked: give back
    ++received;
    last = std::chrono::steady_clock::now();
    if (json) {
      nlohmann::json m = {
          {"id", d.message_id}, {"attempt", d.attempt}, {"publish_time_us", d.publish_time_us}};
      std::vector<std::pair<std::string, std::string>> headers(d.headers.begin(), d.headers.end());
      sluicectl::describe(d.payload, headers, m);
      messages.push_back(std::move(m));
      cv.notify_all();
      return args.nack ? Disposition::nack : Disposition::ack;
    }
    std::string line = std::to_string(d.message_id) + " " + std::to_string(d.attempt) + " ";
    line.append(d.payload);
    if (args.show_headers)
      for (const auto& [k, v] : d.headers) line.append(" ").append(k).append("=").append(v);
    std::puts(line.c_str());
    std::fflush(stdout);
    cv.notify_all();
    return args.nack ? Disposition::nack : Disposition::ack;
  });
  if (!sub) return broker_error(sub.error());
  std::unique_lock lk(m);
  for (;;) {
    if (count > 0 && received >= count) break;
    if (conn.state() == sluice::client::ConnectionState::closed) {
      // What was received (and acked) is printed before the error.
      if (json) sluicectl::print_json({{"queue", args.queue}, {"messages", messages}});
      lk.unlock();
      return broker_error(conn.last_error());
    }
    cv.wait_for(lk, std::chrono::milliseconds(100));
    if (timeout.count() > 0 && std::chrono::steady_clock::now() - last > timeout) break;
  }
  lk.unlock();
  // Let the last acks reach the broker before the connection closes.
  conn.unsubscribe(*sub);
  conn.ping();
  if (json) {
    std::lock_guard done(m);
    sluicectl::print_json({{"queue", args.queue}, {"messages", messages}});
  }
  return 0;
}

int stats(Connection& conn, const std::string& queue, bool json) {
  auto result = conn.stats(queue);
  if (!result) return broker_error(result.error());
  if (!queue.empty() && result->empty()) {
    std::fprintf(stderr, "sluicectl: no queue named %s\n", queue.c_str());
    return 3;
  }
  std::optional<sluice::client::StorageStats> storage;
  if (queue.empty()) {
    auto got = conn.storage_stats();
    if (!got) return broker_error(got.error());
    storage = *got;
  }
  if (json) {
    nlohmann::json queues = nlohmann::json::array();
    for (const auto& q : *result) queues.push_back(sluicectl::queue_json(q));
    nlohmann::json document = {{"queues", std::move(queues)}};
    if (queue.empty())
      document["storage"] = storage ? sluicectl::storage_json(*storage) : nlohmann::json(nullptr);
    sluicectl::print_json(document);
    return 0;
  }
  sluicectl::print_queue_stats(*result);
  if (storage) sluicectl::print_storage_stats(*storage);
  return 0;
}

int set(Connection& conn, const std::string& queue,
        const std::vector<std::pair<std::string, std::string>>& settings) {
  if (auto error = conn.configure(queue, settings)) return broker_error(error);
  return 0;
}

/// The [tokens.NAME] table for a token's hash.
void print_token_table(const std::string& name, const std::string& hash) {
  std::printf(
      "[tokens.%s]\nhash = \"%s\"\npublish = []   # queue-name patterns, e.g. [\"orders.*\"]\n"
      "consume = []\nadmin = []\n",
      name.c_str(), hash.c_str());
}

int new_token(const std::string& name, bool json) {
  const std::string token = sluice::security::generate_token();
  if (json) {
    sluicectl::print_json(
        {{"name", name}, {"token", token}, {"hash", sluice::security::hash_token(token)}});
    return 0;
  }
  std::printf("%s\n\n", token.c_str());
  print_token_table(name, sluice::security::hash_token(token));
  return 0;
}

int hash_token(const std::string& name, bool json) {
  std::string token;
  std::getline(std::cin, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.size() < sluice::security::kMinTokenLength) {
    std::fprintf(stderr,
                 "sluicectl: a token needs at least %zu characters to be safe with a fast "
                 "hash; `sluicectl new-token` makes one\n",
                 sluice::security::kMinTokenLength);
    return 2;
  }
  if (json)
    sluicectl::print_json({{"name", name}, {"hash", sluice::security::hash_token(token)}});
  else
    print_token_table(name, sluice::security::hash_token(token));
  return 0;
}

/// The connection options from the line and the environment; throws UsageError.
struct ConnectionArgs {
  std::string broker;
  std::string token_file;
  bool tls = false;
  std::string ca_file;
  std::string server_name;

  sluice::client::Options options() const {
    sluice::client::Options options;
    // The token comes from a file or the environment, never the command line (ps shows that).
    if (const char* token = std::getenv("SLUICE_TOKEN")) options.token = token;
    if (!token_file.empty()) {
      std::ifstream file(token_file);
      if (!file || !std::getline(file, options.token))
        throw UsageError{"cannot read a token from " + token_file};
      while (!options.token.empty() &&
             (options.token.back() == '\r' || options.token.back() == ' '))
        options.token.pop_back();
    }
    options.tls = tls || !ca_file.empty();
    options.ca_file = ca_file;
    options.server_name = server_name;
    const auto colon = broker.rfind(':');
    std::uint64_t port = 0;
    if (colon == std::string::npos || !parse_u64(broker.substr(colon + 1), port) || port == 0 ||
        port > 65535)
      throw UsageError{"--broker needs HOST:PORT, got " + broker};
    options.host = broker.substr(0, colon);
    if (options.host.size() > 2 && options.host.front() == '[')
      options.host = options.host.substr(1, options.host.size() - 2);
    options.port = static_cast<std::uint16_t>(port);
    options.client_name = "sluicectl";
    return options;
  }
};

/// A check that a value is a number from `lo` to `hi`; `allowed` says so in words.
CLI::Validator number_in(double lo, double hi, const std::string& allowed) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0' || !(value >= lo && value <= hi))
          return "needs " + allowed + ", got " + text;
        return {};
      },
      "");
}

/// A subcommand whose --help prints `usage`, word for word.
CLI::App* command(CLI::App& app, const char* name, const char* usage) {
  CLI::App* sub = app.add_subcommand(name);
  sub->formatter_fn(
      [usage](const CLI::App*, std::string, CLI::AppFormatMode) { return std::string(usage); });
  return sub;
}

/// What a usage error prints: the message, then the usage of the command it is about.
int usage_error(std::string message, const CLI::App& app) {
  // CLI11 says "--body: 1 required TEXT missing"; say what is missing in words.
  if (const auto at = message.find(": 1 required ");
      at != std::string::npos && message.ends_with(" missing") && message.starts_with("-"))
    message = message.substr(0, at) + " needs a value";
  std::fprintf(stderr, "sluicectl: %s\n\n%s", message.c_str(), app.help().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("sluicectl");
  app.formatter_fn([](const CLI::App*, std::string, CLI::AppFormatMode) { return kUsage; });
  app.set_version_flag("--version", "sluicectl " SLUICE_VERSION);
  // Connection options may come before or after the command (fallthrough).
  app.fallthrough();
  // An option given twice takes its last value, so an alias can be overridden.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  ConnectionArgs connection;
  connection.broker =
      std::getenv("SLUICE_BROKER") ? std::getenv("SLUICE_BROKER") : "127.0.0.1:7450";
  app.add_option("--broker", connection.broker);
  app.add_option("--token-file", connection.token_file);
  app.add_flag("--tls", connection.tls);
  app.add_option("--ca-file", connection.ca_file);
  app.add_option("--server-name", connection.server_name);
  bool json = false;
  app.add_flag("--json", json);
  app.require_subcommand(0, 1);

  const CLI::Validator kPositive = number_in(1, 1.8e19, "a positive whole number");
  const CLI::Validator kRate = number_in(0.1, 1e6, "0.1 to 1000000 messages per second");

  PublishArgs publish_args;
  CLI::App* publish_cmd = command(app, "publish", kPublishUsage);
  publish_cmd->add_option("QUEUE", publish_args.queue)->required();
  publish_cmd->add_option("--body", publish_args.body);
  publish_cmd->add_option("--header", publish_args.headers);
  publish_cmd->add_option("--count", publish_args.count)->check(kPositive);
  publish_cmd->add_flag("--quiet", publish_args.quiet);

  ConsumeArgs consume_args;
  CLI::App* consume_cmd = command(app, "consume", kConsumeUsage);
  consume_cmd->add_option("QUEUE", consume_args.queue)->required();
  consume_cmd->add_option("--count", consume_args.count)->check(kPositive);
  consume_cmd->add_option("--max-in-flight", consume_args.max_in_flight)
      ->check(number_in(1, 1e6, "a number from 1 to 1000000"));
  consume_cmd->add_option("--timeout", consume_args.timeout_seconds)
      ->check(number_in(0.001, 86400.0 * 365, "a positive number of seconds, e.g. 2.5"));
  consume_cmd->add_option("--rate", consume_args.rate)->check(kRate);
  consume_cmd->add_flag("--nack", consume_args.nack);
  consume_cmd->add_flag("--headers", consume_args.show_headers);

  std::string stats_queue;
  CLI::App* stats_cmd = command(app, "stats", kStatsUsage);
  stats_cmd->add_option("QUEUE", stats_queue);

  std::string set_queue;
  std::vector<std::string> set_pairs;
  CLI::App* set_cmd = command(app, "set", kSetUsage);
  set_cmd->add_option("QUEUE", set_queue)->required();
  set_cmd->add_option("NAME=VALUE", set_pairs)->required();

  DlqArgs dlq_args;
  CLI::App* dlq_cmd = command(app, "dlq", sluicectl::kDlqUsage);
  dlq_cmd->add_option("OP", dlq_args.op)
      ->required()
      ->check(CLI::IsMember({"list", "show", "redrive", "delete", "purge"}));
  dlq_cmd->add_option("QUEUE", dlq_args.query.queue)->required();
  dlq_cmd->add_option("ID", dlq_args.query.ids);
  dlq_cmd->add_flag("--newest", dlq_args.query.newest_first);
  dlq_cmd->add_flag("--all", dlq_args.all);
  dlq_cmd->add_option("--limit", dlq_args.query.limit)->check(number_in(1, 1000, "1 to 1000"));
  dlq_cmd->add_option("--after", dlq_args.query.after);
  dlq_cmd->add_option("--min-age", dlq_args.min_age);
  dlq_cmd->add_option("--max-age", dlq_args.max_age);
  dlq_cmd->add_option("--reason", dlq_args.query.reason);
  dlq_cmd->add_option("--rate", dlq_args.query.rate)->check(kRate);

  TriggersArgs triggers_args;
  CLI::App* triggers_cmd = command(app, "triggers", sluicectl::kTriggersUsage);
  triggers_cmd->add_option("OP", triggers_args.op)
      ->check(CLI::IsMember({"list", "pause", "resume", "invoke"}));
  triggers_cmd->add_option("NAME", triggers_args.name);
  triggers_cmd->add_option("--body", triggers_args.body);
  triggers_cmd->add_option("--file", triggers_args.file);

  QueuesArgs queues_args;
  CLI::App* queues_cmd = command(app, "queues", sluicectl::kQueuesUsage);
  queues_cmd->add_option("OP", queues_args.op)
      ->check(CLI::IsMember({"list", "create", "delete", "purge"}));
  queues_cmd->add_option("QUEUE", queues_args.queue);
  queues_cmd->add_option("NAME=VALUE", queues_args.pairs);
  queues_cmd->add_flag("--force", queues_args.force);

  std::string token_name = "NAME";
  CLI::App* new_token_cmd = command(app, "new-token", kTokenUsage);
  new_token_cmd->add_option("--name", token_name);
  CLI::App* hash_token_cmd = command(app, "hash-token", kTokenUsage);
  hash_token_cmd->add_option("--name", token_name);

  // Extras fall through to here and are reported with the usage of their command.
  app.allow_extras();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::CallForVersion& version) {
    std::puts(version.what());
    return 0;
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what(), app);
  }
  const auto chosen = app.get_subcommands();
  if (!app.remaining().empty()) {
    const std::string first = app.remaining().front();
    if (chosen.empty() && !first.starts_with("-"))
      return usage_error("unknown command " + first, app);
    return usage_error("unexpected argument " + first, app);
  }
  if (chosen.empty()) return usage_error("missing COMMAND", app);
  const CLI::App* cmd = chosen.front();
  if (cmd == new_token_cmd) return new_token(token_name, json);
  if (cmd == hash_token_cmd) return hash_token(token_name, json);

  // Everything is checked before connecting.
  std::function<int(Connection&)> run;
  sluice::client::Options options;
  try {
    options = connection.options();
    // A one-shot command fails at once when the broker goes away; consume waits
    // for it to come back and carries on.
    options.reconnect.enabled = cmd == consume_cmd;
    if (cmd == consume_cmd)
      options.on_state = [](sluice::client::ConnectionState state,
                            const sluice::client::Error& why) {
        if (state == sluice::client::ConnectionState::connected)
          std::fputs("sluicectl: connected again\n", stderr);
        else if (state == sluice::client::ConnectionState::reconnecting)
          std::fprintf(stderr, "sluicectl: reconnecting (%s)\n", why.to_string().c_str());
      };
    if (cmd == publish_cmd) {
      publish_args.has_body = publish_cmd->count("--body") > 0;
      for (const auto& h : publish_args.headers) split_pair(h, "--header");
      run = [&](Connection& conn) { return publish(conn, publish_args, json); };
    } else if (cmd == consume_cmd) {
      run = [&](Connection& conn) { return consume(conn, consume_args, json); };
    } else if (cmd == stats_cmd) {
      run = [&](Connection& conn) { return stats(conn, stats_queue, json); };
    } else if (cmd == set_cmd) {
      std::vector<std::pair<std::string, std::string>> settings;
      for (const auto& pair : set_pairs) settings.push_back(split_pair(pair, "a setting"));
      run = [&, settings](Connection& conn) { return set(conn, set_queue, settings); };
    } else if (cmd == queues_cmd) {
      auto command = sluicectl::queues_command(queues_args);
      run = [command, json](Connection& conn) { return sluicectl::queues(conn, command, json); };
    } else if (cmd == triggers_cmd) {
      triggers_args.has_body = triggers_cmd->count("--body") > 0;
      auto command = sluicectl::triggers_command(triggers_args);
      run = [command, json](Connection& conn) { return sluicectl::triggers(conn, command, json); };
    } else {
      auto query = sluicectl::dlq_query(dlq_args);
      run = [query, json](Connection& conn) { return sluicectl::dlq(conn, query, json); };
    }
  } catch (const UsageError& e) {
    return usage_error(e.message, app);
  }
  auto conn = Connection::connect(options);
  if (!conn) return broker_error(conn.error());
  return run(**conn);
}
