// sluicectl against the real broker: publish, consume, stats and --help, as a person would.
#include <doctest/doctest.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "test_broker.hpp"

using sluice::test::run_command;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("sluicectl --help, on every subcommand") {
  auto r = run_command(std::string(SLUICECTL_PATH) + " --help");
  CHECK(r.status == 0);
  CHECK(contains(r.out, "publish"));
  CHECK(contains(r.out, "consume"));
  CHECK(contains(r.out, "stats"));
  CHECK(contains(r.out, "set"));
  CHECK(contains(r.out, "triggers"));
  CHECK(contains(r.out, "queues"));
  for (std::string command : {"publish", "consume", "stats", "set", "dlq", "triggers", "queues"}) {
    CAPTURE(command);
    r = run_command(std::string(SLUICECTL_PATH) + " " + command + " --help");
    CHECK(r.status == 0);
    CHECK(contains(r.out, "usage: sluicectl " + command));
  }
  r = run_command(std::string(SLUICECTL_PATH) + " frobnicate 2>&1");
  CHECK(r.status == 2);
  CHECK(contains(r.out, "unknown command"));
}

TEST_CASE("usage errors exit 2 before any connection, --version, options anywhere") {
  // Nothing listens on port 9 (discard) here: a connection attempt would exit 1.
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker 127.0.0.1:9";
  struct Case {
    std::string args;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"publish", "QUEUE is required"},
           {"publish q --count 0", "--count: needs a positive whole number"},
           {"publish q --header nope", "--header needs KEY=VALUE"},
           {"publish q stray", "unexpected argument stray"},
           {"consume q --max-in-flight 0", "--max-in-flight: needs a number from 1 to 1000000"},
           {"consume q --timeout soon", "--timeout: needs a positive number of seconds"},
           {"set q", "NAME=VALUE is required"},
           {"set q nope", "a setting needs KEY=VALUE, got nope"},
           {"dlq frob q", "OP: frob not in"},
           {"dlq show q", "dlq show needs exactly one ID"},
           {"dlq redrive q", "dlq redrive needs IDs, --all or a filter"},
           {"dlq list q --min-age soon", "--min-age needs a duration"},
           {"publish q --body", "--body needs a value"},
           {"triggers frob", "OP: frob not in"},
           {"triggers pause", "triggers pause needs NAME"},
           {"triggers invoke", "triggers invoke needs NAME"},
           {"triggers list fn --body x", "--body and --file go with triggers invoke"},
           {"triggers invoke fn --body x --file y", "--body or --file, not both"},
           {"triggers invoke fn --file /nonexistent/x", "cannot read /nonexistent/x"},
           {"stats --broker nohost", "--broker needs HOST:PORT, got nohost"},
           {"stats --bogus", "unexpected argument --bogus"},
       }) {
    CAPTURE(c.args);
    auto r = run_command(ctl + " " + c.args + " 2>&1 </dev/null");
    CHECK(r.status == 2);
    CHECK(contains(r.out, "sluicectl: " + c.says));
    CHECK(contains(r.out, "usage: sluicectl"));
    CHECK(!contains(r.out, "connection_lost"));
  }
  auto r = run_command(std::string(SLUICECTL_PATH) + " --version");
  CHECK(r.status == 0);
  CHECK(r.out == "sluicectl " SLUICE_VERSION "\n");
  r = run_command(std::string(SLUICED_PATH) + " --version");
  CHECK(r.status == 0);
  CHECK(r.out == "sluiced " SLUICE_VERSION "\n");
  r = run_command(std::string(SLUICED_PATH) + " --check --frobnicate 2>&1");
  CHECK(r.status == 2);
  CHECK(contains(r.out, "--frobnicate"));
  r = run_command(std::string(SLUICED_PATH) + " --set nope --check 2>&1");
  CHECK(r.status == 2);
  CHECK(contains(r.out, "--set: needs NAME=VALUE"));

  // Connection options after the command, and the command's options before its queue.
  TestBroker broker;
  const std::string bare = SLUICECTL_PATH;
  r = run_command(bare + " publish --count 2 anywhere --body x --broker " + broker.address());
  REQUIRE(r.status == 0);
  CHECK(lines(r.out).size() == 2);
  r = run_command(bare + " stats anywhere --broker " + broker.address());
  REQUIRE(r.status == 0);
  REQUIRE(lines(r.out).size() == 2);
  CHECK(contains(lines(r.out)[1], "anywhere"));
}

TEST_CASE("sluicectl publishes, shows stats and consumes") {
  TestBroker broker;
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address();

  auto r = run_command(
      ctl + " publish greetings --body hello --header lang=en --header tier=gold --count 3");
  REQUIRE(r.status == 0);
  CHECK(lines(r.out).size() == 3);  // one id per message

  r = run_command(ctl + " publish greetings", "from stdin 1\nfrom stdin 2\n");
  REQUIRE(r.status == 0);
  CHECK(lines(r.out).size() == 2);

  r = run_command(ctl + " stats");
  REQUIRE(r.status == 0);
  auto table = lines(r.out);
  REQUIRE(table.size() == 4);  // heading, the queue, a blank line, the storage line
  CHECK(contains(table[3], "STORAGE"));
  CHECK(contains(table[0], "READY"));
  CHECK(contains(table[0], "CONSUMERS"));
  std::istringstream row(table[1]);
  std::string name;
  int ready = -1;
  row >> name >> ready;
  CHECK(name == "greetings");
  CHECK(ready == 5);

  r = run_command(ctl + " consume greetings --count 5 --headers");
  REQUIRE(r.status == 0);
  auto got = lines(r.out);
  REQUIRE(got.size() == 5);
  CHECK(contains(got[0], " 1 hello"));  // "<id> <attempt> <payload>"
  CHECK(contains(got[0], "lang=en"));
  CHECK(contains(got[0], "tier=gold"));  // a repeated option keeps every value
  CHECK(contains(got[4], "from stdin 2"));

  r = run_command(ctl + " stats greetings");
  REQUIRE(r.status == 0);
  table = lines(r.out);
  REQUIRE(table.size() == 2);
  std::istringstream after(table[1]);
  after >> name >> ready;
  CHECK(ready == 0);

  SUBCASE("consume --timeout ends when nothing arrives") {
    r = run_command(ctl + " consume greetings --timeout 0.3");
    CHECK(r.status == 0);
    CHECK(r.out.empty());
  }
  SUBCASE("a broker that is not there is a clear error") {
    r = run_command(std::string(SLUICECTL_PATH) + " --broker 127.0.0.1:1 stats 2>&1");
    CHECK(r.status == 1);
    CHECK(contains(r.out, "connection_lost"));
  }
  SUBCASE("a bad queue name is refused with its rule") {
    r = run_command(ctl + " publish 'no spaces' --body x 2>&1");
    CHECK(r.status == 1);
    CHECK(contains(r.out, "invalid_queue_name"));
  }
}

TEST_CASE("sluicectl --json: one JSON document from every data command, and the exit codes") {
  TestBroker broker({"--set", "queues.q.max_attempts=1"});
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address();
  // Exit 0 and one JSON document on standard output.
  const auto valid_json = [&](const std::string& args) {
    const auto r = run_command(ctl + " " + args);
    return r.status == 0 && nlohmann::json::accept(r.out);
  };
  // And as the README says to use it: `{ ...; }` so json.tool reads the pipe, not run_command's
  // input.
  CHECK(run_command("{ " + ctl + " stats --json | python3 -m json.tool >/dev/null; }").status == 0);
  auto r = run_command(ctl + " --json publish q --body hi --count 2");
  REQUIRE(r.status == 0);
  const auto published = nlohmann::json::parse(r.out);
  CHECK(published["ids"].size() == 2);
  r = run_command(ctl + " consume q --count 2 --nack --timeout 5 --json");
  REQUIRE(r.status == 0);
  const auto consumed = nlohmann::json::parse(r.out);
  REQUIRE(consumed["messages"].size() == 2);
  CHECK(consumed["messages"][0]["payload"] == "hi");
  CHECK(consumed["messages"][0]["attempt"] == 1);
  // Both nacked with one attempt allowed: two dead letters.
  REQUIRE(eventually([&] {
    auto page = run_command(ctl + " dlq list q --json");
    return page.status == 0 && nlohmann::json::parse(page.out)["entries"].size() == 2;
  }));
  const auto page = nlohmann::json::parse(run_command(ctl + " dlq list q --json").out);
  const std::string entry = std::to_string(page["entries"][0]["entry_id"].get<std::uint64_t>());
  for (const std::string& args : std::vector<std::string>{
           "stats --json", "stats q --json", "dlq list q --json", "dlq show q " + entry + " --json",
           "triggers --json", "--json new-token --name x", "queues --json", "queues list q --json",
           "queues create made --json", "queues purge made --json", "queues delete made --json",
           "consume q --count 1 --timeout 0.2 --json"}) {
    CAPTURE(args);
    CHECK(valid_json(args));
  }
  const auto stats = nlohmann::json::parse(run_command(ctl + " stats --json").out);
  CHECK(stats["queues"][0]["name"] == "q");
  CHECK(stats["queues"][0]["dead_lettered_total"] == 2);
  CHECK(stats.contains("storage"));
  CHECK(valid_json("dlq redrive q --all --json"));
  CHECK(valid_json("dlq purge q --json"));

  // Exit codes: 3 when what was named does not exist, 1 for other refusals, 2 for usage.
  CHECK(run_command(ctl + " stats nope 2>/dev/null").status == 3);
  CHECK(run_command(ctl + " dlq show q 999999 2>/dev/null").status == 3);
  CHECK(run_command(ctl + " triggers pause nope 2>/dev/null").status == 3);
  CHECK(run_command(ctl + " set q max_messages=0 2>/dev/null").status == 1);
  CHECK(run_command(ctl + " publish 2>/dev/null").status == 2);
  r = run_command(std::string(SLUICECTL_PATH) + " --help");
  CHECK(contains(r.out, "3  what was named does not exist"));
  CHECK(contains(r.out, "--json"));
}
