// Triggers against a real HTTP function: tests/integration/function_server.py,
// its own process on a loopback socket, told how to behave and asked what it saw.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "function_server.hpp"
#include "http_client.hpp"
#include "test_broker.hpp"

using json = nlohmann::json;
using sluice::test::eventually;
using sluice::test::FunctionServer;
using sluice::test::http_request;
using sluice::test::kSecret;
using sluice::test::TestBroker;

namespace {

/// Polls every 100 ms: the function answers the polls too.
template <class F>
bool soon(F condition, std::chrono::seconds timeout = std::chrono::seconds(20)) {
  return eventually(condition, timeout, std::chrono::milliseconds(100));
}

/// sluiced flags for a trigger named `fn` on queue `queue`, plus `extra` settings.
std::vector<std::string> trigger_flags(const FunctionServer& f, const std::filesystem::path& secret,
                                       const std::string& queue,
                                       std::vector<std::pair<std::string, std::string>> extra) {
  std::vector<std::string> args = {"--set", "triggers.fn.queue=" + queue,
                                   "--set", "triggers.fn.url=" + f.url(),
                                   "--set", "triggers.fn.signing_secret_file=" + secret.string()};
  for (const auto& [k, v] : extra) {
    args.push_back("--set");
    args.push_back(k + "=" + v);
  }
  return args;
}

std::filesystem::path write_secret(const std::string& secret) {
  const auto dir = sluice::test::make_temp_dir("sluice-secret");
  std::ofstream(dir / "secret") << secret;
  return dir / "secret";
}

std::uint64_t ready_and_in_flight(sluice::client::Connection& c, const std::string& queue) {
  auto stats = c.stats(queue);
  REQUIRE(stats.ok());
  if (stats->empty()) return 0;
  return stats->front().ready + stats->front().in_flight + stats->front().delayed;
}

}  // namespace

TEST_CASE("trigger: 10,000 messages at max_concurrency 8: never more than 8 at once, all acked") {
  FunctionServer function;
  function.control({{"sleep_ms", 5}});
  const auto secret = write_secret(kSecret);
  TestBroker broker(
      trigger_flags(function, secret, "jobs", {{"triggers.fn.max_concurrency", "8"}}));
  auto producer = broker.connect("producer");
  constexpr int kMessages = 10'000;
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < kMessages; ++i) {
    batch.push_back({"job-" + std::to_string(i), {}});
    if (batch.size() == 500) {
      REQUIRE(producer->publish_batch("jobs", batch).ok());
      batch.clear();
    }
  }
  REQUIRE(soon([&] { return function.seen().size() == kMessages; }, std::chrono::seconds(90)));
  CHECK(eventually([&] { return ready_and_in_flight(*producer, "jobs") == 0; }));
  const json stats = function.stats();
  CHECK(stats["most"].get<int>() <= 8);
  CHECK(stats["bad_signatures"].get<int>() == 0);
  // No failure was injected: every message exactly once.
  int twice = 0;
  for (const auto& [id, n] : function.seen()) twice += n > 1;
  CHECK(twice == 0);
  // "Sees 8 most of the run": the time-weighted number of requests held at once.
  double busy = 0, first = 1e300, last = 0;
  for (const auto& r : stats["requests"]) {
    busy += r["end"].get<double>() - r["start"].get<double>();
    first = std::min(first, r["start"].get<double>());
    last = std::max(last, r["end"].get<double>());
  }
  const double mean = busy / (last - first);
  MESSAGE("mean requests at once: " << mean);
  CHECK(mean > 5.0);
}

TEST_CASE("trigger: 429 with Retry-After: nothing is sent for that long, and no attempt is used") {
  FunctionServer function;
  function.control({{"mode", "throttle"}, {"retry_after", 2}});
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "slow", {}));
  auto producer = broker.connect("producer");
  REQUIRE(producer->publish("slow", {"first", {}}).ok());
  REQUIRE(soon([&] { return function.requests() >= 1; }));
  function.control({{"mode", "ok"}});
  REQUIRE(soon([&] { return function.requests() >= 2; }, std::chrono::seconds(10)));
  const json requests = function.stats()["requests"];
  const double gap = requests[1]["start"].get<double>() - requests[0]["end"].get<double>();
  CHECK(gap >= 1.9);
  CHECK(requests[0]["attempts"][0] == 1);
  CHECK(requests[1]["attempts"][0] == 1);  // the throttled delivery did not count
  CHECK(requests[1]["ids"] == requests[0]["ids"]);
  CHECK(eventually([&] { return ready_and_in_flight(*producer, "slow") == 0; }));
}

TEST_CASE("trigger: batches of at most 10, a partial failure retries exactly the listed ids") {
  FunctionServer function;
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "bulk",
                                  {{"triggers.fn.batch_size", "10"},
                                   {"triggers.fn.batch_window", "50ms"},
                                   {"triggers.fn.body", "json"},
                                   {"queues.bulk.retry_backoff", "10ms"}}));
  // Two of them fail on their first attempt.
  function.control({{"fail_first_marked", "FAIL-ONCE"}});
  auto producer = broker.connect("producer");
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < 95; ++i)
    batch.push_back({(i == 3 || i == 60 ? "FAIL-ONCE m" : "m") + std::to_string(i), {}});
  auto published = producer->publish_batch("bulk", batch);
  REQUIRE(published.ok());
  const auto& ids = *published;
  const std::string a = std::to_string(ids[3]), b = std::to_string(ids[60]);
  REQUIRE(soon([&] { return function.seen().size() == 95; }, std::chrono::seconds(30)));
  CHECK(eventually([&] { return ready_and_in_flight(*producer, "bulk") == 0; }));
  const auto stats = function.stats();  // kept: a range-for over stats()["requests"] would dangle
  for (const auto& r : stats["requests"]) {
    CHECK(r["ids"].size() <= 10);
    CHECK(r["signed"] == true);
  }
  for (const auto& [id, n] : function.seen()) {
    CAPTURE(id);
    CHECK(n == ((id == a || id == b) ? 2 : 1));
  }
}

TEST_CASE("trigger: key order holds at the function, one invocation per key, across retries") {
  FunctionServer function;
  function.control({{"sleep_ms", 3}});
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "ordered",
                                  {{"triggers.fn.max_concurrency", "8"},
                                   {"queues.ordered.ordering", "key"},
                                   {"queues.ordered.retry_backoff", "20ms"}}));
  auto producer = broker.connect("producer");
  constexpr int kKeys = 5, kPerKey = 40;
  // Every 7th message fails its first attempt.
  function.control({{"fail_first_marked", "FAIL-ONCE"}});
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < kPerKey; ++i)
    for (int k = 0; k < kKeys; ++k)
      batch.push_back({(batch.size() % 7 == 0 ? "FAIL-ONCE k" : "k") + std::to_string(k) + "-" +
                           std::to_string(i),
                       {{"sluice-key", "k" + std::to_string(k)}}});
  auto published = producer->publish_batch("ordered", batch);
  REQUIRE(published.ok());
  REQUIRE(
      soon([&] { return function.seen().size() == kKeys * kPerKey; }, std::chrono::seconds(60)));
  // Every request answered (each has its end time) once the queue is drained.
  REQUIRE(eventually([&] { return ready_and_in_flight(*producer, "ordered") == 0; }));
  const json requests = function.stats()["requests"];
  std::map<std::string, std::vector<std::uint64_t>> order;             // ids per key, as sent
  std::map<std::string, std::vector<std::pair<double, double>>> busy;  // per key
  for (const auto& r : requests) {
    const std::string key = r["keys"][0].get<std::string>();
    order[key].push_back(std::stoull(r["ids"][0].get<std::string>()));
    busy[key].push_back({r["start"].get<double>(), r["end"].get<double>()});
  }
  CHECK(order.size() == kKeys);
  for (auto& [key, ids] : order) {
    CAPTURE(key);
    // A retry repeats its id at once; otherwise ids only grow (publish order).
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    CHECK(std::is_sorted(ids.begin(), ids.end()));
    CHECK(ids.size() == kPerKey);
    auto& spans = busy[key];
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i) CHECK(spans[i].first >= spans[i - 1].second);
  }
}

TEST_CASE("trigger: requests are signed, a function with another secret rejects them all") {
  FunctionServer function;
  const auto wrong = write_secret("not-the-secret-the-function-has");
  TestBroker broker(
      trigger_flags(function, wrong, "signed", {{"queues.signed.max_attempts", "1"}}));
  auto producer = broker.connect("producer");
  REQUIRE(producer->publish("signed", {"x", {}}).ok());
  REQUIRE(soon([&] { return function.requests() >= 1; }));
  CHECK(function.stats()["bad_signatures"].get<int>() >= 1);
  CHECK(function.stats()["requests"][0]["signed"] == false);
}

TEST_CASE("trigger: bad settings stop the start with the setting and what is allowed") {
  auto r = sluice::test::run_command(std::string(SLUICED_PATH) +
                                     " --set triggers.fn.queue=q --set triggers.fn.url=ftp://x "
                                     "--check 2>&1");
  CHECK(r.status == 2);
  CHECK(r.out.find("triggers.fn.url") != std::string::npos);
  CHECK(r.out.find("http") != std::string::npos);
  r = sluice::test::run_command(std::string(SLUICED_PATH) +
                                " --set triggers.fn.queue=q --set triggers.fn.url=http://h/ "
                                "--set triggers.fn.batch_size=10 --check 2>&1");
  CHECK(r.status == 2);
  CHECK(r.out.find("body = \"json\"") != std::string::npos);
  r = sluice::test::run_command(std::string(SLUICED_PATH) +
                                " --set triggers.fn.url=http://h/ --check 2>&1");
  CHECK(r.status == 2);
  CHECK(r.out.find("triggers.fn.queue: missing") != std::string::npos);
}

TEST_CASE("trigger: SIGHUP adds a trigger, and removing it gives back what it holds at once") {
  FunctionServer function;
  const auto secret = write_secret(kSecret);
  const auto dir = sluice::test::make_temp_dir("sluice-trigger-reload");
  const auto config = dir / "sluiced.toml";
  std::ofstream(config) << "[queues.later]\nlease_timeout = \"10m\"\n";
  TestBroker broker({"--config", config.string()});
  auto producer = broker.connect("producer");
  for (int i = 0; i < 3; ++i)
    REQUIRE(producer->publish("later", {"m" + std::to_string(i), {}}).ok());

  std::ofstream(config) << "[queues.later]\nlease_timeout = \"10m\"\n\n[triggers.fn]\nqueue = "
                           "\"later\"\nurl = \""
                        << function.url() << "\"\nsigning_secret_file = \"" << secret.string()
                        << "\"\ntimeout = \"10m\"\n";
  ::kill(broker.pid(), SIGHUP);
  REQUIRE(soon([&] { return function.seen().size() == 3; }));
  CHECK(eventually([&] { return ready_and_in_flight(*producer, "later") == 0; }));

  // The function hangs: two invocations are held; then the trigger goes away.
  function.control({{"mode", "hang"}});
  REQUIRE(producer->publish("later", {"held-1", {}}).ok());
  REQUIRE(producer->publish("later", {"held-2", {}}).ok());
  REQUIRE(soon([&] { return function.seen().size() == 5; }));
  auto stats = producer->stats("later");
  REQUIRE(stats.ok());
  CHECK(stats->front().in_flight == 2);
  // A test invocation waits on the hung function too; removing the trigger answers it.
  sluice::test::CommandResult invoked;
  std::thread invoke([&] {
    invoked = sluice::test::run_command(std::string(SLUICECTL_PATH) + " --broker " +
                                        broker.address() + " triggers invoke fn 2>&1");
  });
  REQUIRE(soon([&] { return function.requests() == 6; }));
  const auto removed_at = std::chrono::steady_clock::now();
  std::ofstream(config) << "[queues.later]\nlease_timeout = \"10m\"\n";
  ::kill(broker.pid(), SIGHUP);
  invoke.join();
  CHECK(std::chrono::steady_clock::now() - removed_at < std::chrono::seconds(10));
  CHECK(invoked.status == 1);
  CHECK(invoked.out.starts_with("broken 0 "));
  CHECK(invoked.out.find("the trigger stopped before the function answered") != std::string::npos);
  // Back in the queue at once, not after the 10-minute lease.
  CHECK(eventually([&] {
    auto s = producer->stats("later");
    return s.ok() && s->front().in_flight == 0 && s->front().ready == 2 &&
           s->front().consumers == 0;
  }));
  function.control({{"mode", "ok"}});
}

TEST_CASE("trigger: the breaker opens on an outage, lets only probes through, uses no attempts") {
  // The outage lasts 3 s in the suite; SLUICE_TRIGGER_OUTAGE_S=30 runs the 30 s.
  const char* long_outage = std::getenv("SLUICE_TRIGGER_OUTAGE_S");
  const double outage_s = long_outage != nullptr ? std::atof(long_outage) : 3.0;
  REQUIRE(outage_s >= 1);
  FunctionServer function;
  function.control({{"mode", "fail"}, {"status", 500}});
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "flaky",
                                  {{"triggers.fn.max_concurrency", "4"},
                                   {"triggers.fn.breaker_window", "10"},
                                   {"triggers.fn.breaker_min_calls", "5"},
                                   {"triggers.fn.breaker_failure_ratio", "0.5"},
                                   {"triggers.fn.breaker_open_for", "300ms"},
                                   {"triggers.fn.breaker_open_max", "1s"},
                                   {"queues.flaky.max_attempts", "5"},
                                   {"queues.flaky.retry_backoff", "10ms"}}));
  auto producer = broker.connect("producer");
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < 20; ++i) batch.push_back({"m" + std::to_string(i), {}});
  REQUIRE(producer->publish_batch("flaky", batch).ok());
  // Without the breaker, 20 messages x 5 attempts 10 ms apart would be dead letters in well
  // under a second. With it: a few failures open it, then one probe per open period, the
  // period doubling from 300 ms to 1 s.
  std::this_thread::sleep_for(std::chrono::duration<double>(outage_s));
  const int failures = function.stats()["statuses"].value("500", 0);
  int probes = 1;
  for (double open = 0.3, t = 0; t + open <= outage_s; t += open, open = std::min(2 * open, 1.0))
    ++probes;
  MESSAGE("requests answered 500 during a " << outage_s << " s outage: " << failures << " (at most "
                                            << 5 + 4 + probes << ")");
  CHECK(failures >= 5);
  CHECK(failures <= 5 + 4 + probes);  // min_calls, those in flight, and the probes
  auto stats = producer->stats("flaky");
  REQUIRE(stats.ok());
  CHECK(stats->front().dead_lettered_total == 0);
  CHECK(stats->front().ready + stats->front().delayed + stats->front().in_flight == 20);
  const std::string metrics = http_request(broker.http_port(), "GET", "/metrics").body;
  CHECK(metrics.find("sluice_trigger_breaker_transitions_total{trigger=\"fn\",to=\"open\"}") !=
        std::string::npos);

  function.control({{"mode", "ok"}});
  REQUIRE(soon([&] {
    const json s = function.stats();
    return s["statuses"].value("200", 0) >= 20;
  }));
  CHECK(eventually([&] { return ready_and_in_flight(*producer, "flaky") == 0; }));
  stats = producer->stats("flaky");
  REQUIRE(stats.ok());
  CHECK(stats->front().dead_lettered_total == 0);
  CHECK(stats->front().acked_total == 20);
  const std::string after = http_request(broker.http_port(), "GET", "/metrics").body;
  CHECK(after.find("sluice_trigger_breaker_state{trigger=\"fn\"} 0") != std::string::npos);
}

namespace {

/// A function that serves at most 6 at once (more wait inside it, so latency
/// grows), fed for 10 s: the trigger's concurrency limit at the end, and the
/// messages per second the function finished over the last 5 s.
std::pair<double, double> limited_function_run(bool adaptive) {
  FunctionServer function;
  function.control({{"sleep_ms", 20}, {"max_parallel", 6}});
  const auto secret = write_secret(kSecret);
  std::vector<std::pair<std::string, std::string>> settings = {
      {"triggers.fn.max_concurrency", adaptive ? "50" : "6"}};
  if (adaptive) settings.push_back({"triggers.fn.concurrency", "adaptive"});
  TestBroker broker(trigger_flags(function, secret, "work", settings));
  auto producer = broker.connect("producer");
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < 500; ++i) batch.push_back({"w", {}});
  for (int i = 0; i < 10; ++i) REQUIRE(producer->publish_batch("work", batch).ok());
  const auto started = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(10));
  const std::string metrics = http_request(broker.http_port(), "GET", "/metrics").body;
  const json stats = function.stats();
  const std::string gauge = "sluice_trigger_concurrency_limit{trigger=\"fn\"} ";
  const auto at = metrics.find(gauge);
  REQUIRE(at != std::string::npos);
  const double limit = std::stod(metrics.substr(at + gauge.size()));
  double last_end = 0;
  for (const auto& r : stats["requests"])
    if (r.contains("end")) last_end = std::max(last_end, r["end"].get<double>());
  int done = 0;
  for (const auto& r : stats["requests"])
    if (r.contains("end") && r["end"].get<double>() > last_end - 5) ++done;
  (void)started;
  return {limit, done / 5.0};
}

}  // namespace

TEST_CASE("trigger: the adaptive limit settles near what the function can serve") {
  const auto [fixed_limit, fixed_rate] = limited_function_run(false);
  const auto [limit, rate] = limited_function_run(true);
  MESSAGE("fixed 6: " << fixed_rate << "/s; adaptive: limit " << limit << ", " << rate << "/s");
  CHECK(fixed_limit == 6);
  CHECK(limit >= 4);
  CHECK(limit <= 10);
  CHECK(rate >= 0.9 * fixed_rate);
}

TEST_CASE("trigger: a durable queue's messages all reach the function across a kill -9") {
  FunctionServer function;
  function.control({{"sleep_ms", 2}});
  const auto secret = write_secret(kSecret);
  sluice::test::ScopedTempDir scratch{"sluice-trigger-durable"};
  const auto flags = trigger_flags(function, secret, "durable-jobs",
                                   {{"storage.path", (scratch.path / "data").string()},
                                    {"queues.durable-jobs.durability", "durable"},
                                    {"triggers.fn.max_concurrency", "4"}});
  constexpr int kMessages = 2000;
  std::set<std::string> confirmed;
  {
    TestBroker broker(flags);
    auto producer = broker.connect("producer");
    std::vector<sluice::client::Message> batch;
    for (int i = 0; i < kMessages; ++i) batch.push_back({"d" + std::to_string(i), {}});
    auto ids = producer->publish_batch("durable-jobs", batch);  // confirmed: on disk
    REQUIRE(ids.ok());
    for (auto id : *ids) confirmed.insert(std::to_string(id));
    // Killed mid-run: some delivered and acked, some out, most still waiting.
    REQUIRE(soon([&] { return function.seen().size() >= kMessages / 10; }));
    broker.kill9();
  }
  const auto before = function.seen().size();
  CHECK(before < static_cast<std::size_t>(kMessages));
  TestBroker broker(flags);
  auto producer = broker.connect("producer");
  REQUIRE(soon([&] { return function.seen().size() == kMessages; }, std::chrono::seconds(60)));
  for (const auto& [id, n] : function.seen()) CHECK(confirmed.count(id) == 1);
  CHECK(eventually([&] { return ready_and_in_flight(*producer, "durable-jobs") == 0; }));
}

TEST_CASE("trigger: dead_letter_on and the sluice-dead-letter header dead-letter at once") {
  FunctionServer function;
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(
      function, secret, "poison",
      {{"triggers.fn.dead_letter_on", "400,422"}, {"queues.poison.max_attempts", "10"}}));
  auto producer = broker.connect("producer");
  function.control({{"mode", "fail"}, {"status", 422}});
  REQUIRE(producer->publish("poison", {"unprocessable", {}}).ok());
  const auto dead = [&](std::uint64_t n) {
    auto s = producer->stats("poison");
    return s.ok() && !s->empty() && s->front().dead_lettered_total == n;
  };
  REQUIRE(eventually([&] { return dead(1); }, std::chrono::seconds(10)));
  function.control({{"mode", "ok"}, {"dead_letter", "schema v1 is gone"}});
  REQUIRE(producer->publish("poison", {"old schema", {}}).ok());
  REQUIRE(eventually([&] { return dead(2); }, std::chrono::seconds(10)));
  CHECK(function.requests() == 2);  // one attempt each, not ten
  sluice::client::DeadLetterQuery q;
  q.queue = "poison";
  auto entries = producer->dead_letters(q);
  REQUIRE(entries.ok());
  REQUIRE(entries->entries.size() == 2);
  CHECK(entries->entries[0].reason == "the function answered 422");
  CHECK(entries->entries[1].reason == "schema v1 is gone");
}

TEST_CASE("trigger: HTTP lists, pauses, resumes and test-invokes a trigger") {
  FunctionServer function;
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "ctl", {}));
  const auto port = broker.http_port();
  auto r = http_request(port, "GET", "/v1/triggers");
  REQUIRE(r.status == 200);
  json list = json::parse(r.body)["triggers"];
  REQUIRE(list.size() == 1);
  CHECK(list[0]["name"] == "fn");
  CHECK(list[0]["queue"] == "ctl");
  CHECK(list[0]["state"] == "running");
  CHECK(list[0]["breaker"] == "closed");

  // Paused: messages wait in the queue; resumed: they go.
  r = http_request(port, "POST", "/v1/triggers/fn/pause");
  REQUIRE(r.status == 200);
  CHECK(json::parse(r.body)["state"] == "paused");
  auto producer = broker.connect("producer");
  for (int i = 0; i < 3; ++i) REQUIRE(producer->publish("ctl", {"p" + std::to_string(i), {}}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(function.requests() == 0);
  auto stats = producer->stats("ctl");
  REQUIRE(stats.ok());
  CHECK(stats->front().ready == 3);
  r = http_request(port, "POST", "/v1/triggers/fn/resume");
  REQUIRE(r.status == 200);
  REQUIRE(soon([&] { return function.seen().size() == 3; }));

  // A test invocation reaches the function signed, outside the queue.
  r = http_request(port, "POST", "/v1/triggers/fn/invoke", "hello function");
  REQUIRE(r.status == 200);
  const json answer = json::parse(r.body);
  CHECK(answer["outcome"] == "answered");
  CHECK(answer["status"] == 200);
  const json last = function.stats()["requests"].back();
  CHECK(last["signed"] == true);
  CHECK(last["ids"][0] == "0");

  CHECK(http_request(port, "POST", "/v1/triggers/nope/pause").status == 404);
  CHECK(http_request(port, "DELETE", "/v1/triggers/fn").status == 404);
}

TEST_CASE("trigger: sluicectl lists, pauses, resumes and test-invokes a trigger") {
  FunctionServer function;
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "ctl", {}));
  const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address();
  const auto rows = [](const std::string& text) {
    std::vector<std::vector<std::string>> out;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream words(line);
      out.emplace_back(std::istream_iterator<std::string>(words),
                       std::istream_iterator<std::string>());
    }
    return out;
  };
  auto r = sluice::test::run_command(ctl + " triggers");
  REQUIRE(r.status == 0);
  auto table = rows(r.out);
  REQUIRE(table.size() == 2);
  CHECK(table[0][0] == "TRIGGER");
  // name queue state breaker limit in_flight sent ok failed url
  CHECK(table[1] == std::vector<std::string>{"fn", "ctl", "running", "closed", "10", "0", "0", "0",
                                             "0", function.url()});

  r = sluice::test::run_command(ctl + " triggers pause fn");
  REQUIRE(r.status == 0);
  CHECK(rows(r.out).at(1).at(2) == "paused");
  auto producer = broker.connect("producer");
  for (int i = 0; i < 3; ++i) REQUIRE(producer->publish("ctl", {"p" + std::to_string(i), {}}).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(function.requests() == 0);
  r = sluice::test::run_command(ctl + " triggers resume fn");
  REQUIRE(r.status == 0);
  CHECK(rows(r.out).at(1).at(2) == "running");
  REQUIRE(soon([&] { return function.seen().size() == 3; }));
  r = sluice::test::run_command(ctl + " triggers list fn");
  REQUIRE(r.status == 0);
  CHECK(rows(r.out).at(1).at(6) == "3");  // sent
  CHECK(rows(r.out).at(1).at(7) == "3");  // ok

  // A test invocation: the function's answer, and exit 0 only for a 2xx.
  r = sluice::test::run_command(ctl + " triggers invoke fn --body 'hello function'");
  CHECK(r.status == 0);
  CHECK(r.out.starts_with("answered 200 "));
  const json last = function.stats()["requests"].back();
  CHECK(last["signed"] == true);
  function.control({{"mode", "fail"}, {"status", 502}});
  r = sluice::test::run_command(ctl + " triggers invoke fn");
  CHECK(r.status == 1);
  CHECK(r.out.starts_with("answered 502 "));
  function.control({{"mode", "ok"}});

  r = sluice::test::run_command(ctl + " triggers pause nope 2>&1");
  CHECK(r.status == 3);  // what was named does not exist
  CHECK(r.out.find("not_found: no trigger named nope") != std::string::npos);
}

TEST_CASE("trigger: rate and burst bound the messages pushed to the function") {
  FunctionServer function;
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "paced",
                                  {{"triggers.fn.rate", "20"}, {"triggers.fn.burst", "5"}}));
  auto producer = broker.connect("producer");
  std::vector<sluice::client::Message> batch;
  for (int i = 0; i < 200; ++i) batch.push_back({"r" + std::to_string(i), {}});
  const auto started = std::chrono::steady_clock::now();
  REQUIRE(producer->publish_batch("paced", batch).ok());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const std::size_t seen = function.seen().size();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  MESSAGE(seen << " messages in " << elapsed << " s at rate 20, burst 5");
  // A token bucket never lets more through than its burst plus the rate times the time.
  CHECK(seen <= static_cast<std::size_t>(5 + 20 * elapsed));
  CHECK(seen >= 10);  // and it does let them through
  // The rest wait in the queue, ready.
  auto stats = producer->stats("paced");
  REQUIRE(stats.ok());
  const double later =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  CHECK(static_cast<double>(stats->front().ready) >= 200 - 5 - 20 * later);
}

TEST_CASE("trigger: a hang past the timeout and a reset are failed attempts, with their reasons") {
  FunctionServer function;
  function.control({{"mode", "hang"}});
  const auto secret = write_secret(kSecret);
  TestBroker broker(
      trigger_flags(function, secret, "fragile",
                    {{"triggers.fn.timeout", "300ms"}, {"queues.fragile.max_attempts", "1"}}));
  auto producer = broker.connect("producer");
  // The correlation id and a W3C traceparent travel with the message to the function.
  const std::string traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  REQUIRE(
      producer
          ->publish("fragile",
                    {"slow", {{"sluice-correlation-id", "order-7"}, {"traceparent", traceparent}}})
          .ok());
  const auto dead_letters = [&] {
    sluice::client::DeadLetterQuery q;
    q.queue = "fragile";
    auto r = producer->dead_letters(q);
    REQUIRE(r.ok());
    return r->entries;
  };
  // One attempt: the timeout dead-letters it, with the timeout as the reason.
  REQUIRE(soon([&] { return dead_letters().size() == 1; }));
  CHECK(dead_letters()[0].reason == "no answer within 300 ms");
  const json first = function.stats()["requests"][0];
  CHECK(first["headers"]["sluice-correlation-id"] == "order-7");
  CHECK(first["headers"]["traceparent"] == traceparent);

  // A connection reset: the socket's error is the reason.
  function.control({{"mode", "reset"}});
  REQUIRE(producer->publish("fragile", {"reset", {}}).ok());
  REQUIRE(soon([&] { return dead_letters().size() == 2; }));
  const std::string reason = dead_letters()[1].reason;
  MESSAGE("a reset is recorded as: " << reason);
  CHECK(!reason.empty());
  CHECK(reason.find("answered") == std::string::npos);  // not mistaken for a status
  const std::string metrics = http_request(broker.http_port(), "GET", "/metrics").body;
  CHECK(metrics.find("sluice_trigger_invocations_total{trigger=\"fn\",outcome=\"timeout\"} 1") !=
        std::string::npos);
  CHECK(metrics.find(
            "sluice_trigger_invocations_total{trigger=\"fn\",outcome=\"connect_error\"} 1") !=
        std::string::npos);
  function.control({{"mode", "ok"}});
}

TEST_CASE("trigger: a producer's headers cannot forge HTTP headers or the trigger's own") {
  FunctionServer function;
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "forge",
                                  {{"triggers.fn.headers", "Authorization: Bearer the-real-one"}}));
  auto producer = broker.connect("producer");
  REQUIRE(producer
              ->publish("forge", {"x",
                                  {{"x-note", "fine"},
                                   {"x-split", "a\r\nx-evil: 1"},
                                   {"authorization", "Bearer stolen"},
                                   {"sluice-message-id", "999"}}})
              .ok());
  REQUIRE(soon([&] { return function.requests() == 1; }));
  const json headers = function.stats()["requests"][0]["headers"];
  CHECK(headers["x-note"] == "fine");
  CHECK_FALSE(headers.contains("x-split"));
  CHECK_FALSE(headers.contains("x-evil"));
  CHECK(headers["authorization"] == "Bearer the-real-one");
  CHECK(headers["sluice-message-id"] != "999");
}

TEST_CASE("trigger: a probe answered 429 is sent again, and the breaker can still close") {
  FunctionServer function;
  function.control({{"mode", "fail"}, {"status", 500}});
  const auto secret = write_secret(kSecret);
  TestBroker broker(trigger_flags(function, secret, "wary",
                                  {{"triggers.fn.breaker_min_calls", "3"},
                                   {"triggers.fn.breaker_open_for", "300ms"},
                                   {"queues.wary.retry_backoff", "10ms"}}));
  auto producer = broker.connect("producer");
  for (int i = 0; i < 5; ++i)
    REQUIRE(producer->publish("wary", {"w" + std::to_string(i), {}}).ok());
  const auto metric = [&](const std::string& series) {
    return http_request(broker.http_port(), "GET", "/metrics").body.find(series) !=
           std::string::npos;
  };
  REQUIRE(eventually([&] {
    return metric("sluice_trigger_breaker_transitions_total{trigger=\"fn\",to=\"open\"} 1");
  }));
  // The first probe meets a throttling function...
  function.control({{"mode", "throttle"}, {"retry_after", 1}});
  REQUIRE(soon([&] { return function.stats()["statuses"].value("429", 0) >= 1; }));
  // ...and once it is well, a probe passes and the breaker closes.
  function.control({{"mode", "ok"}});
  REQUIRE(soon([&] { return function.stats()["statuses"].value("200", 0) >= 5; },
               std::chrono::seconds(15)));
  CHECK(metric("sluice_trigger_breaker_state{trigger=\"fn\"} 0"));
  auto stats = producer->stats("wary");
  REQUIRE(stats.ok());
  CHECK(stats->front().dead_lettered_total == 0);
}
