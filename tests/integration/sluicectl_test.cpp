// sluicectl against the real broker: publish, consume, stats and --help, as a person would.
#include <doctest/doctest.h>

#include <sstream>

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
  for (std::string command : {"publish", "consume", "stats", "set"}) {
    CAPTURE(command);
    r = run_command(std::string(SLUICECTL_PATH) + " " + command + " --help");
    CHECK(r.status == 0);
    CHECK(contains(r.out, "usage: sluicectl " + command));
  }
  r = run_command(std::string(SLUICECTL_PATH) + " frobnicate 2>&1");
  CHECK(r.status == 2);
  CHECK(contains(r.out, "unknown command"));
}

TEST_CASE("sluicectl publishes, shows stats and consumes") {
  TestBroker broker;
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address();

  auto r = run_command(ctl + " publish greetings --body hello --header lang=en --count 3");
  REQUIRE(r.status == 0);
  CHECK(lines(r.out).size() == 3);  // one id per message

  r = run_command(ctl + " publish greetings", "from stdin 1\nfrom stdin 2\n");
  REQUIRE(r.status == 0);
  CHECK(lines(r.out).size() == 2);

  r = run_command(ctl + " stats");
  REQUIRE(r.status == 0);
  auto table = lines(r.out);
  REQUIRE(table.size() == 2);
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
