// sluicectl: the broker's command line for people. publish, consume, stats.
// Arguments and commands are here; output.cpp prints the broker's answers.
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

#include "output.hpp"
#include "sluice/client/client.hpp"
#include "sluice/security/token.hpp"

namespace {

using sluice::client::Connection;
using sluice::client::Disposition;

constexpr const char* kUsage = R"(usage: sluicectl [connection options] COMMAND [options]

Talks to a Sluice broker (default 127.0.0.1:7450, or $SLUICE_BROKER).

commands:
  publish QUEUE     publish messages (from --body, or one per line of stdin)
  consume QUEUE     receive messages, print them, ack them
  stats [QUEUE]     queue depths, consumers and counters
  set QUEUE N=V...  change a queue's settings in the running broker
  dlq OP QUEUE ...  dead letters: list, show, redrive, delete, purge
  new-token         make a random token; print it and the hash for the config
  hash-token        read a token on stdin; print the hash for the config

connection options:
  --broker HOST:PORT    the broker (default $SLUICE_BROKER or 127.0.0.1:7450)
  --token-file FILE     read the access token from FILE (default: $SLUICE_TOKEN)
  --tls                 speak TLS and verify the broker's certificate
  --ca-file FILE        trust this CA (PEM) instead of the system's roots; implies --tls
  --server-name NAME    the name the certificate must carry (default: the broker's host)

'sluicectl COMMAND --help' explains each command.
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

int usage_error(const std::string& message, const char* usage) {
  std::fprintf(stderr, "sluicectl: %s\n\n%s", message.c_str(), usage);
  return 2;
}

int broker_error(const sluice::client::Error& e) {
  std::fprintf(stderr, "sluicectl: %s\n", e.to_string().c_str());
  return 1;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::string copy(s);
  out = std::strtoull(copy.c_str(), &end, 10);
  return end && *end == '\0' && copy[0] != '-';
}

struct Args {
  std::vector<std::string_view> items;
  std::size_t i = 0;
  bool more() const { return i < items.size(); }
  std::string_view next() { return items[i++]; }
};

int publish(Connection& conn, Args& args) {
  std::string queue;
  std::optional<std::string> body;
  sluice::client::Message message;
  std::uint64_t count = 1;
  bool quiet = false;
  while (args.more()) {
    auto a = args.next();
    if (a == "--help" || a == "-h") {
      std::fputs(kPublishUsage, stdout);
      return 0;
    } else if (a == "--body" && args.more()) {
      body = std::string(args.next());
    } else if (a == "--header" && args.more()) {
      auto kv = args.next();
      auto eq = kv.find('=');
      if (eq == std::string_view::npos || eq == 0)
        return usage_error("--header needs KEY=VALUE", kPublishUsage);
      message.headers.emplace_back(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    } else if (a == "--count" && args.more()) {
      if (!parse_u64(args.next(), count) || count == 0)
        return usage_error("--count needs a positive number", kPublishUsage);
    } else if (a == "--quiet") {
      quiet = true;
    } else if (!a.starts_with("-") && queue.empty()) {
      queue = a;
    } else {
      return usage_error("unexpected argument " + std::string(a), kPublishUsage);
    }
  }
  if (queue.empty()) return usage_error("publish needs a QUEUE", kPublishUsage);

  std::mutex m;
  std::optional<sluice::client::Error> first_error;
  std::vector<std::uint64_t> ids;
  auto publish_one = [&](std::string payload) {
    message.payload = std::move(payload);
    conn.publish_async(queue, message, [&](const sluice::client::Error& e, std::uint64_t id) {
      std::lock_guard lk(m);
      if (e && !first_error) first_error = e;
      if (!e) ids.push_back(id);
    });
  };
  if (body) {
    for (std::uint64_t n = 0; n < count; ++n) publish_one(*body);
  } else {
    std::string line;
    while (std::getline(std::cin, line)) publish_one(line);
  }
  if (!conn.wait_confirms(std::chrono::minutes(5))) {
    std::fprintf(stderr, "sluicectl: timed out waiting for confirms\n");
    return 1;
  }
  std::lock_guard lk(m);
  if (!quiet)
    for (auto id : ids) std::printf("%llu\n", static_cast<unsigned long long>(id));
  if (first_error) return broker_error(*first_error);
  return 0;
}

int consume(Connection& conn, Args& args) {
  std::string queue;
  std::uint64_t count = 0, max_in_flight = 16;
  double rate = 0;
  std::chrono::milliseconds timeout{0};  // 0: wait forever
  bool nack = false, show_headers = false;
  while (args.more()) {
    auto a = args.next();
    if (a == "--help" || a == "-h") {
      std::fputs(kConsumeUsage, stdout);
      return 0;
    } else if (a == "--count" && args.more()) {
      if (!parse_u64(args.next(), count) || count == 0)
        return usage_error("--count needs a positive number", kConsumeUsage);
    } else if (a == "--max-in-flight" && args.more()) {
      if (!parse_u64(args.next(), max_in_flight) || max_in_flight == 0 || max_in_flight > 1000000)
        return usage_error("--max-in-flight needs a number from 1 to 1000000", kConsumeUsage);
    } else if (a == "--timeout" && args.more()) {
      const std::string text(args.next());
      char* end = nullptr;
      const double seconds = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !(seconds > 0) || seconds > 86400 * 365)
        return usage_error("--timeout needs a positive number of seconds, e.g. 2.5", kConsumeUsage);
      timeout = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000 + 0.5));
    } else if (a == "--rate" && args.more()) {
      const std::string text(args.next());
      char* end = nullptr;
      rate = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !(rate >= 0.1 && rate <= 1e6))
        return usage_error("--rate needs 0.1 to 1000000 messages per second", kConsumeUsage);
    } else if (a == "--nack") {
      nack = true;
    } else if (a == "--headers") {
      show_headers = true;
    } else if (!a.starts_with("-") && queue.empty()) {
      queue = a;
    } else {
      return usage_error("unexpected argument " + std::string(a), kConsumeUsage);
    }
  }
  if (queue.empty()) return usage_error("consume needs a QUEUE", kConsumeUsage);
  if (count > 0 && max_in_flight > count) max_in_flight = count;

  std::mutex m;
  std::condition_variable cv;
  std::uint64_t received = 0;
  auto last = std::chrono::steady_clock::now();
  sluice::client::SubscribeOptions options;
  options.max_in_flight = static_cast<std::uint32_t>(max_in_flight);
  options.rate = rate;
  auto sub = conn.subscribe(queue, options, [&](const sluice::client::Delivery& d) {
    std::lock_guard lk(m);
    if (count > 0 && received >= count)
      return Disposition::nack;  // beyond what was asked: give back
    ++received;
    last = std::chrono::steady_clock::now();
    std::string line = std::to_string(d.message_id) + " " + std::to_string(d.attempt) + " ";
    line.append(d.payload);
    if (show_headers)
      for (const auto& [k, v] : d.headers) line.append(" ").append(k).append("=").append(v);
    std::puts(line.c_str());
    std::fflush(stdout);
    cv.notify_all();
    return nack ? Disposition::nack : Disposition::ack;
  });
  if (!sub) return broker_error(sub.error());
  std::unique_lock lk(m);
  for (;;) {
    if (count > 0 && received >= count) break;
    if (!conn.connected()) {
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
  return 0;
}

int stats(Connection& conn, Args& args) {
  std::string queue;
  while (args.more()) {
    auto a = args.next();
    if (a == "--help" || a == "-h") {
      std::fputs(kStatsUsage, stdout);
      return 0;
    } else if (!a.starts_with("-") && queue.empty()) {
      queue = a;
    } else {
      return usage_error("unexpected argument " + std::string(a), kStatsUsage);
    }
  }
  auto result = conn.stats(queue);
  if (!result) return broker_error(result.error());
  if (!queue.empty() && result->empty()) {
    std::fprintf(stderr, "sluicectl: no queue named %s\n", queue.c_str());
    return 1;
  }
  sluicectl::print_queue_stats(*result);
  if (!queue.empty()) return 0;
  auto storage = conn.storage_stats();
  if (!storage) return broker_error(storage.error());
  if (!storage->has_value()) return 0;
  sluicectl::print_storage_stats(**storage);
  return 0;
}

constexpr const char* kDlqUsage =
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

/// "90s", "5m", "2h", "1d", "250ms" or plain seconds; false if malformed.
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

int dlq(Connection& conn, Args& args) {
  using Op = sluice::client::DeadLetterQuery::Op;
  if (!args.more()) return usage_error("dlq needs an operation", kDlqUsage);
  const std::string_view op = args.next();
  sluice::client::DeadLetterQuery q;
  if (op == "list") {
    q.op = Op::list;
  } else if (op == "show") {
    q.op = Op::show;
  } else if (op == "redrive") {
    q.op = Op::redrive;
  } else if (op == "delete") {
    q.op = Op::remove;
  } else if (op == "purge") {
    q.op = Op::purge;
  } else {
    return usage_error("unknown dlq operation " + std::string(op), kDlqUsage);
  }
  bool all = false;
  while (args.more()) {
    auto a = args.next();
    std::uint64_t n = 0;
    if (a == "--newest") {
      q.newest_first = true;
    } else if (a == "--all") {
      all = true;
    } else if (a == "--limit" && args.more()) {
      if (!parse_u64(args.next(), n) || n == 0 || n > 1000)
        return usage_error("--limit needs 1 to 1000", kDlqUsage);
      q.limit = static_cast<std::uint32_t>(n);
    } else if (a == "--after" && args.more()) {
      if (!parse_u64(args.next(), q.after)) return usage_error("--after needs an id", kDlqUsage);
    } else if ((a == "--min-age" || a == "--max-age") && args.more()) {
      if (!parse_age(args.next(), a == "--min-age" ? q.min_age : q.max_age))
        return usage_error(std::string(a) + " needs a duration like 90s, 5m, 2h or 1d", kDlqUsage);
    } else if (a == "--reason" && args.more()) {
      q.reason = args.next();
    } else if (a == "--rate" && args.more()) {
      const std::string text(args.next());
      char* end = nullptr;
      q.rate = std::strtod(text.c_str(), &end);
      if (end == text.c_str() || *end != '\0' || !(q.rate >= 0.1 && q.rate <= 1e6))
        return usage_error("--rate needs 0.1 to 1000000", kDlqUsage);
    } else if (!a.starts_with("-") && q.queue.empty()) {
      q.queue = a;
    } else if (!a.starts_with("-") && parse_u64(a, n)) {
      q.ids.push_back(n);
    } else {
      return usage_error("unexpected argument " + std::string(a), kDlqUsage);
    }
  }
  if (q.queue.empty()) return usage_error("dlq needs a QUEUE", kDlqUsage);
  const bool filtered = q.min_age.count() != 0 || q.max_age.count() != 0 || !q.reason.empty();
  if (q.op == Op::show && q.ids.size() != 1)
    return usage_error("dlq show needs exactly one ID", kDlqUsage);
  if (q.op == Op::remove && q.ids.empty())
    return usage_error("dlq delete needs at least one ID (purge removes all)", kDlqUsage);
  if (q.op == Op::redrive && q.ids.empty() && !all && !filtered)
    return usage_error("dlq redrive needs IDs, --all or a filter", kDlqUsage);
  auto result = conn.dead_letters(q);
  if (!result) return broker_error(result.error());
  sluicectl::print_dead_letters(q, *result);
  return 0;
}

int set(Connection& conn, Args& args) {
  std::string queue;
  std::vector<std::pair<std::string, std::string>> settings;
  while (args.more()) {
    auto a = args.next();
    if (a == "--help" || a == "-h") {
      std::fputs(kSetUsage, stdout);
      return 0;
    } else if (!a.starts_with("-") && queue.empty()) {
      queue = a;
    } else if (const auto eq = a.find('='); eq != std::string_view::npos && eq > 0) {
      settings.emplace_back(a.substr(0, eq), a.substr(eq + 1));
    } else {
      return usage_error("expected NAME=VALUE, got " + std::string(a), kSetUsage);
    }
  }
  if (queue.empty() || settings.empty())
    return usage_error("set needs a QUEUE and at least one NAME=VALUE", kSetUsage);
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

int token_command(std::string_view command, Args& args) {
  std::string name = "NAME";
  while (args.more()) {
    auto a = args.next();
    if (a == "--name" && args.more()) {
      name = args.next();
    } else {
      return usage_error("unexpected " + std::string(a), kTokenUsage);
    }
  }
  if (command == "new-token") {
    const std::string token = sluice::security::generate_token();
    std::printf("%s\n\n", token.c_str());
    print_token_table(name, sluice::security::hash_token(token));
    return 0;
  }
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
  print_token_table(name, sluice::security::hash_token(token));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) args.items.emplace_back(argv[i]);
  std::string broker =
      std::getenv("SLUICE_BROKER") ? std::getenv("SLUICE_BROKER") : "127.0.0.1:7450";
  sluice::client::Options options;
  // The token comes from a file or the environment, never the command line (ps shows that).
  if (const char* token = std::getenv("SLUICE_TOKEN")) options.token = token;
  while (args.more() && args.items[args.i].starts_with("-")) {
    auto a = args.next();
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--broker" && args.more()) {
      broker = args.next();
    } else if (a == "--token-file" && args.more()) {
      const std::string path(args.next());
      std::ifstream file(path);
      if (!file || !std::getline(file, options.token)) {
        std::fprintf(stderr, "sluicectl: cannot read a token from %s\n", path.c_str());
        return 2;
      }
      while (!options.token.empty() &&
             (options.token.back() == '\r' || options.token.back() == ' '))
        options.token.pop_back();
    } else if (a == "--tls") {
      options.tls = true;
    } else if (a == "--ca-file" && args.more()) {
      options.tls = true;
      options.ca_file = args.next();
    } else if (a == "--server-name" && args.more()) {
      options.server_name = args.next();
    } else {
      return usage_error("unknown option " + std::string(a), kUsage);
    }
  }
  if (!args.more()) return usage_error("missing COMMAND", kUsage);
  const std::string_view command = args.next();
  if (command == "new-token" || command == "hash-token") {
    for (std::size_t j = args.i; j < args.items.size(); ++j) {
      if (args.items[j] == "--help" || args.items[j] == "-h") {
        std::fputs(kTokenUsage, stdout);
        return 0;
      }
    }
    return token_command(command, args);
  }
  using Fn = int (*)(Connection&, Args&);
  Fn fn = command == "publish"   ? publish
          : command == "consume" ? consume
          : command == "stats"   ? stats
          : command == "set"     ? set
          : command == "dlq"     ? dlq
                                 : nullptr;
  if (!fn) return usage_error("unknown command " + std::string(command), kUsage);
  // --help must work without a broker.
  for (std::size_t j = args.i; j < args.items.size(); ++j) {
    if (args.items[j] == "--help" || args.items[j] == "-h") {
      std::fputs(command == "publish"   ? kPublishUsage
                 : command == "consume" ? kConsumeUsage
                 : command == "set"     ? kSetUsage
                 : command == "dlq"     ? kDlqUsage
                                        : kStatsUsage,
                 stdout);
      return 0;
    }
  }

  const auto colon = broker.rfind(':');
  std::uint64_t port = 0;
  if (colon == std::string::npos || !parse_u64(broker.substr(colon + 1), port) || port == 0 ||
      port > 65535)
    return usage_error("--broker needs HOST:PORT, got " + broker, kUsage);
  options.host = broker.substr(0, colon);
  if (options.host.size() > 2 && options.host.front() == '[')
    options.host = options.host.substr(1, options.host.size() - 2);
  options.port = static_cast<std::uint16_t>(port);
  options.client_name = "sluicectl";
  auto conn = Connection::connect(options);
  if (!conn) return broker_error(conn.error());
  return fn(**conn, args);
}
