// The HTTP API against the real sluiced, spoken by a plain HTTP client: the
// whole pull cycle (post, receive, nack, receive after the backoff, ack),
// 429 with Retry-After from a full reject queue, 413 and 400; HTTP consumers
// held to the queue's concurrency cap together with protocol consumers; a
// correlation id followed into the delivery, the dead-letter entry and the
// log; and a real Prometheus server scraping /metrics.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <regex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "http_client.hpp"
#include "test_broker.hpp"

using json = nlohmann::json;
using sluice::test::http_request;
using sluice::test::HttpResult;

namespace {

json body_of(const HttpResult& r) {
  INFO("status " << r.status << " body: " << r.body);
  json j = json::parse(r.body, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

HttpResult post(const TestBroker& b, const std::string& target, const std::string& body,
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return http_request(b.http_port(), "POST", target, body, headers);
}

/// POST /receive; the messages it returned.
json receive(const TestBroker& b, const std::string& queue, int max_messages, int wait_ms) {
  const auto r = post(b, "/v1/queues/" + queue + "/receive",
                      json{{"max_messages", max_messages}, {"wait_ms", wait_ms}}.dump());
  REQUIRE(r.status == 200);
  return body_of(r)["messages"];
}

std::string error_code(const HttpResult& r) {
  const json j = body_of(r);
  return j.contains("error") ? j["error"].value("code", "") : "";
}

}  // namespace

TEST_CASE(
    "http: the pull cycle - post then receive then nack then receive after the backoff then ack") {
  TestBroker broker(
      {"--set", "queues.jobs.retry_backoff=400ms", "--set", "queues.jobs.retry_jitter=none"});
  CHECK(http_request(broker.http_port(), "GET", "/healthz").status == 200);
  CHECK(http_request(broker.http_port(), "GET", "/readyz").status == 200);

  const auto posted = post(broker, "/v1/queues/jobs/messages", "resize image 42",
                           {{"Content-Type", "text/plain"}, {"Sluice-Key", "tenant-a"}});
  REQUIRE(posted.status == 202);
  const std::uint64_t id = body_of(posted)["id"];
  CHECK(id > 0);

  json got = receive(broker, "jobs", 10, 2000);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["id"] == id);
  CHECK(got[0]["payload"] == "resize image 42");
  CHECK(got[0]["attempt"] == 1);
  CHECK(got[0]["headers"]["content-type"] == "text/plain");
  CHECK(got[0]["headers"]["sluice-key"] == "tenant-a");
  const std::string receipt = got[0]["receipt"];

  const auto nacked_at = std::chrono::steady_clock::now();
  const auto nack = post(broker, "/v1/queues/jobs/nack",
                         json{{"receipt", receipt}, {"reason", "downstream 503"}}.dump());
  REQUIRE(nack.status == 200);
  CHECK(body_of(nack)["succeeded"] == 1);
  // Waiting out its backoff: nothing to receive yet.
  CHECK(receive(broker, "jobs", 10, 0).empty());

  got = receive(broker, "jobs", 10, 5000);
  const auto waited = std::chrono::steady_clock::now() - nacked_at;
  REQUIRE(got.size() == 1);
  CHECK(got[0]["id"] == id);
  CHECK(got[0]["attempt"] == 2);
  CHECK(waited >= 390ms);
  CHECK(waited < 3000ms);

  const std::string second = got[0]["receipt"];
  CHECK(second != receipt);
  // A receipt is its receive's: with the right message and lease but another
  // secret, it settles nothing.
  std::string forged = second;
  const auto secret_at = forged.find('.', forged.find('.') + 1) - 1;  // its last digit
  forged[secret_at] = forged[secret_at] == '1' ? '2' : '1';
  const auto refused = post(broker, "/v1/queues/jobs/ack", json{{"receipt", forged}}.dump());
  CHECK(refused.status == 409);
  CHECK(body_of(refused)["failed"][0]["code"] == "stale_lease");
  // The first lease is gone: its receipt is refused, typed.
  const auto stale = post(broker, "/v1/queues/jobs/ack", json{{"receipt", receipt}}.dump());
  CHECK(stale.status == 409);
  CHECK(body_of(stale)["failed"][0]["code"] == "stale_lease");
  const auto ack = post(broker, "/v1/queues/jobs/ack", json{{"receipts", {second}}}.dump());
  CHECK(ack.status == 200);
  CHECK(body_of(ack)["succeeded"] == 1);

  const auto stats = http_request(broker.http_port(), "GET", "/v1/queues/jobs");
  REQUIRE(stats.status == 200);
  const json q = body_of(stats);
  CHECK(q["totals"]["acked"] == 1);
  CHECK(q["totals"]["nacked"] == 1);
  CHECK(q["totals"]["retried"] == 1);
  CHECK(q["messages"]["ready"] == 0);
  CHECK(q["messages"]["in_flight"] == 0);
  CHECK(q["settings"]["retry_backoff_ms"] == 400);
}

TEST_CASE("http: 429 with Retry-After from a full reject queue - then 413 and 400 for bad input") {
  TestBroker broker({"--set", "queues.small.max_messages=2", "--set",
                     "queues.small.overflow=reject", "--set", "limits.max_payload_bytes=1KiB",
                     "--set", "http.max_body_bytes=64KiB"});
  CHECK(post(broker, "/v1/queues/small/messages", "a").status == 202);
  CHECK(post(broker, "/v1/queues/small/messages", "b").status == 202);
  const auto full = post(broker, "/v1/queues/small/messages", "c");
  CHECK(full.status == 429);
  CHECK(error_code(full) == "queue_full");
  CHECK(std::stoi(full.header("retry-after")) >= 1);
  CHECK(body_of(full)["error"]["retry_after_ms"].get<int>() > 0);

  SUBCASE("413 - a payload over limits.max_payload_bytes or a body over http.max_body_bytes") {
    const auto big = post(broker, "/v1/queues/other/messages", std::string(2048, 'x'));
    CHECK(big.status == 413);
    CHECK(error_code(big) == "payload_too_large");
    const auto huge = post(broker, "/v1/queues/other/messages", std::string(100 * 1024, 'x'));
    CHECK(huge.status == 413);
    CHECK(error_code(huge) == "payload_too_large");
  }
  SUBCASE("400 - bad JSON or numbers or queue name or sluice header") {
    const auto bad_json = post(broker, "/v1/queues/small/receive", "{not json");
    CHECK(bad_json.status == 400);
    CHECK(error_code(bad_json) == "invalid_argument");
    const auto bad_count = post(broker, "/v1/queues/small/receive", R"({"max_messages": -3})");
    CHECK(bad_count.status == 400);
    const auto bad_name = post(broker, "/v1/queues/no%20spaces/messages", "x");
    CHECK(bad_name.status == 400);
    CHECK(error_code(bad_name) == "invalid_queue_name");
    const auto bad_delay =
        post(broker, "/v1/queues/other/messages", "x", {{"Sluice-Delay-Ms", "soon"}});
    CHECK(bad_delay.status == 400);
    CHECK(error_code(bad_delay) == "invalid_argument");
    const auto bad_batch =
        post(broker, "/v1/queues/other/messages/batch", R"({"messages":[{"payload":1.5}]})");
    CHECK(bad_batch.status == 400);
    const auto bad_receipt = post(broker, "/v1/queues/small/ack", R"({"receipt":"nonsense"})");
    CHECK(bad_receipt.status == 400);
    CHECK(http_request(broker.http_port(), "GET", "/v1/nowhere").status == 404);
    CHECK(http_request(broker.http_port(), "DELETE", "/v1/queues/small/messages").status == 405);
  }
  // Nothing the refusals did touched what was accepted.
  const json got = receive(broker, "small", 10, 0);
  CHECK(got.size() == 2);
}

TEST_CASE("http: batch publish is all or nothing and keeps order") {
  TestBroker broker;
  const auto bad = post(broker, "/v1/queues/b/messages/batch",
                        R"({"messages":[{"payload":"one"},{"payload":"two","delay_ms":"x"}]})");
  CHECK(bad.status == 400);
  const auto ok = post(
      broker, "/v1/queues/b/messages/batch",
      R"({"messages":[{"payload":"one"},{"payload_base64":"AP8="},{"payload":"three","headers":{"k":"v"}}]})");
  REQUIRE(ok.status == 202);
  CHECK(body_of(ok)["messages"].size() == 3);
  const json got = receive(broker, "b", 10, 1000);
  REQUIRE(got.size() == 3);
  CHECK(got[0]["payload"] == "one");
  CHECK(got[1]["payload_base64"] == "AP8=");
  CHECK(got[2]["headers"]["k"] == "v");
}

TEST_CASE("http: a 202 from a durable queue means on disk - it survives kill -9") {
  sluice::test::ScopedTempDir scratch("sluice-http-durable");
  const std::vector<std::string> args = {"--set",
                                         "storage.path=" + (scratch.path / "data").string(),
                                         "--set", "queues.d.durability=durable"};
  std::vector<std::uint64_t> ids;
  {
    TestBroker broker(args);
    for (int i = 0; i < 20; ++i) {
      const auto r = post(broker, "/v1/queues/d/messages", "m" + std::to_string(i));
      REQUIRE(r.status == 202);
      ids.push_back(body_of(r)["id"]);
    }
    const auto batch = post(broker, "/v1/queues/d/messages/batch",
                            R"({"messages":[{"payload":"b0"},{"payload":"b1"}]})");
    REQUIRE(batch.status == 202);
    const json confirmed = body_of(batch);
    for (const auto& m : confirmed["messages"]) ids.push_back(m["id"]);
    broker.kill9();
  }
  TestBroker restarted(args);
  const json got = receive(restarted, "d", 100, 2000);
  REQUIRE(got.size() == ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) CHECK(got[i]["id"] == ids[i]);
}

TEST_CASE("http: HTTP receives count against the queue's concurrency cap with protocol consumers") {
  TestBroker broker({"--set", "queues.capped.max_in_flight=3"});
  for (int i = 0; i < 10; ++i)
    REQUIRE(post(broker, "/v1/queues/capped/messages", "m").status == 202);
  const json first = receive(broker, "capped", 10, 0);
  CHECK(first.size() == 3);  // the cap, not the 10 asked for
  // A protocol consumer gets nothing while HTTP holds the cap.
  auto consumer = broker.connect("consumer");
  std::mutex mutex;
  std::vector<sluice::client::LeaseHandle> held;
  REQUIRE(consumer
              ->subscribe("capped", sluice::client::SubscribeOptions{.max_in_flight = 10},
                          [&](const sluice::client::Delivery& d) {
                            std::lock_guard lk(mutex);
                            held.push_back(sluice::client::handle(d));
                            return sluice::client::Disposition::manual;
                          })
              .ok());
  std::this_thread::sleep_for(200ms);
  {
    std::lock_guard lk(mutex);
    CHECK(held.empty());
  }
  CHECK(receive(broker, "capped", 10, 0).empty());
  // Acking one over HTTP frees one slot, which goes to someone: never more than 3 out.
  REQUIRE(
      post(broker, "/v1/queues/capped/ack", json{{"receipt", first[0]["receipt"]}}.dump()).status ==
      200);
  CHECK(eventually([&] {
    std::lock_guard lk(mutex);
    return held.size() == 1;
  }));
  const auto stats = body_of(http_request(broker.http_port(), "GET", "/v1/queues/capped"));
  CHECK(stats["messages"]["in_flight"] == 3);
}

TEST_CASE("http: a correlation id travels to the delivery and the dead-letter entry and the log") {
  TestBroker broker({"--log-level", "debug", "--set", "queues.pay.max_attempts=2", "--set",
                     "queues.pay.retry_backoff=100ms"});
  const std::string cid = "order-7781-checkout";
  const auto posted =
      post(broker, "/v1/queues/pay/messages", "charge", {{"X-Correlation-Id", cid}});
  REQUIRE(posted.status == 202);
  CHECK(body_of(posted)["correlation_id"] == cid);
  const std::uint64_t id = body_of(posted)["id"];

  for (int attempt = 1; attempt <= 2; ++attempt) {
    const json got = receive(broker, "pay", 1, 5000);
    REQUIRE(got.size() == 1);
    CHECK(got[0]["correlation_id"] == cid);
    CHECK(got[0]["headers"]["sluice-correlation-id"] == cid);
    REQUIRE(post(broker, "/v1/queues/pay/nack",
                 json{{"receipt", got[0]["receipt"]}, {"reason", "card declined"}}.dump())
                .status == 200);
  }
  json entries;
  REQUIRE(eventually([&] {
    entries = body_of(http_request(broker.http_port(), "GET", "/v1/queues/pay/dlq"))["entries"];
    return entries.size() == 1;
  }));
  CHECK(entries[0]["message_id"] == id);
  CHECK(entries[0]["correlation_id"] == cid);
  CHECK(entries[0]["reason"] == "card declined");
  CHECK(entries[0]["attempts"] == 2);

  // A message published without one gets one, generated, in the answer and the delivery.
  const auto plain = post(broker, "/v1/queues/pay/messages", "no id");
  const std::string generated = body_of(plain)["correlation_id"];
  CHECK(generated.size() == 16);
  CHECK(receive(broker, "pay", 1, 2000)[0]["correlation_id"] == generated);

  // Every log line about the message names it by its correlation id.
  const std::string needle = "\"message_id\":" + std::to_string(id) + ",";
  std::istringstream log(broker.log());
  std::vector<std::string> events;
  for (std::string line; std::getline(log, line);) {
    if (line.find(needle) == std::string::npos) continue;
    INFO(line);
    CHECK(line.find("\"correlation_id\":\"" + cid + "\"") != std::string::npos);
    events.push_back(json::parse(line)["event"]);
  }
  const auto seen = [&](const std::string& e) {
    return std::find(events.begin(), events.end(), e) != events.end();
  };
  CHECK(seen("published"));
  CHECK(seen("attempt_failed"));
  CHECK(seen("dead_lettered"));

  // And a redrive says so too.
  REQUIRE(post(broker, "/v1/queues/pay/dlq/redrive", R"({"all":true})").status == 202);
  CHECK(eventually([&] {
    std::istringstream lines(broker.log());
    for (std::string line; std::getline(lines, line);)
      if (line.find("\"event\":\"redriven\"") != std::string::npos &&
          line.find("\"correlation_id\":\"" + cid + "\"") != std::string::npos)
        return true;
    return false;
  }));
}

namespace {

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// A real Prometheus server (Debian's `prometheus`) on loopback, scraping one target.
class PrometheusServer {
 public:
  PrometheusServer(std::uint16_t target_port, const std::filesystem::path& dir)
      : port_(free_port()) {
    const auto config = dir / "prometheus.yml";
    std::ofstream(config) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                          << "scrape_configs:\n  - job_name: sluiced\n    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(port_);
    const std::string storage = "--storage.tsdb.path=" + (dir / "tsdb").string();
    const std::string config_flag = "--config.file=" + config.string();
    const std::string log = (dir / "prometheus.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      std::freopen(log.c_str(), "w", stderr);
      std::freopen("/dev/null", "w", stdout);
      ::execlp("prometheus", "prometheus", config_flag.c_str(), storage.c_str(), listen.c_str(),
               "--web.enable-lifecycle", static_cast<char*>(nullptr));
      std::_Exit(127);
    }
  }
  ~PrometheusServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  PrometheusServer(const PrometheusServer&) = delete;
  PrometheusServer& operator=(const PrometheusServer&) = delete;

  /// The value of an instant query returning one sample, or -1.
  double query(const std::string& promql) const {
    const json j = answer(promql);
    if (j.is_discarded() || j.value("status", "") != "success") return -1;
    const auto& result = j["data"]["result"];
    if (result.size() != 1) return -1;
    return std::stod(result[0]["value"][1].get<std::string>());
  }
  /// Prometheus's answer to an instant query: {"status": "success", ...} or an error.
  json answer(const std::string& promql) const {
    std::string encoded;
    for (unsigned char c : promql) {
      if (std::isalnum(c) || c == '_' || c == '.')
        encoded += static_cast<char>(c);
      else {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", c);
        encoded += buf;
      }
    }
    const auto r = http_request(port_, "GET", "/api/v1/query?query=" + encoded);
    return json::parse(r.body, nullptr, false);
  }

 private:
  std::uint16_t port_;
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("metrics: a real Prometheus server scrapes sluiced and sees the counts") {
  // A trigger too, so its metrics exist (its function is nowhere: port 9 refuses).
  TestBroker broker({"--set", "queues.orders.max_attempts=1", "--set", "triggers.probe.queue=probe",
                     "--set", "triggers.probe.url=http://127.0.0.1:9/"});
  // Publish 10; ack 7; fail 3, which (one attempt each) go to the DLQ.
  for (int i = 0; i < 10; ++i)
    REQUIRE(post(broker, "/v1/queues/orders/messages", "o" + std::to_string(i)).status == 202);
  const json got = receive(broker, "orders", 10, 1000);
  REQUIRE(got.size() == 10);
  std::vector<std::string> ack, nack;
  for (std::size_t i = 0; i < got.size(); ++i) (i < 7 ? ack : nack).push_back(got[i]["receipt"]);
  REQUIRE(post(broker, "/v1/queues/orders/ack", json{{"receipts", ack}}.dump()).status == 200);
  REQUIRE(post(broker, "/v1/queues/orders/nack", json{{"receipts", nack}, {"reason", "bad"}}.dump())
              .status == 200);

  // The exposition itself parses (promtool is Prometheus's own checker).
  const auto metrics = http_request(broker.http_port(), "GET", "/metrics");
  REQUIRE(metrics.status == 200);
  CHECK(metrics.header("content-type").find("text/plain; version=0.0.4") == 0);
  const auto check = sluice::test::run_command("promtool check metrics 2>&1", metrics.body);
  INFO(check.out);
  CHECK(check.status == 0);

  // Every metric the alert rules, the dashboard and the docs name exists.
  for (const char* file :
       {"/ops/sluice.rules.yml", "/ops/grafana-dashboard.json", "/docs/http-api.md"}) {
    std::ifstream in(std::string(SLUICE_SOURCE_DIR) + file);
    REQUIRE(in);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::regex name("sluice_[a-z_]+[a-z]");
    int names = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), name);
         it != std::sregex_iterator(); ++it, ++names) {
      INFO(file << " names " << it->str());
      CHECK(metrics.body.find("\n" + it->str()) != std::string::npos);
    }
    CHECK(names > 5);
  }

  PrometheusServer prometheus(broker.http_port(), broker.dir());
  const auto value = [&](const std::string& q) { return prometheus.query(q); };
  CHECK(eventually([&] { return value("up{job=\"sluiced\"}") == 1; }, 60s));
  CHECK(eventually([&] { return value("sluice_queue_published_total{queue=\"orders\"}") == 10; },
                   30s));
  CHECK(eventually([&] { return value("sluice_queue_acked_total{queue=\"orders\"}") == 7; }, 30s));
  CHECK(eventually([&] { return value("sluice_queue_dead_letters{queue=\"orders\"}") == 3; }, 30s));
  CHECK(eventually(
      [&] { return value("sluice_queue_processing_seconds_count{queue=\"orders\"}") == 7; }, 30s));
  CHECK(value("sluice_ready") == 1);

  // Every query of the dashboard is PromQL this Prometheus takes, and has data
  // (Grafana's variables as "match anything", its rate interval as 1m).
  std::ifstream in(std::string(SLUICE_SOURCE_DIR) + "/ops/grafana-dashboard.json");
  const json dashboard = json::parse(in);
  int queries = 0;
  for (const auto& panel : dashboard["panels"]) {
    if (!panel.contains("targets")) continue;
    for (const auto& target : panel["targets"]) {
      std::string expr = target["expr"].get<std::string>();
      for (const auto& [from, to] :
           std::vector<std::pair<std::string, std::string>>{{"$__rate_interval", "1m"},
                                                            {"$queue", ".*"},
                                                            {"$instance", ".*"},
                                                            {"$trigger", ".*"}})
        for (auto at = expr.find(from); at != std::string::npos; at = expr.find(from))
          expr.replace(at, from.size(), to);
      INFO(panel["title"].get<std::string>() << ": " << expr);
      ++queries;
      CHECK(eventually(
          [&] {
            const json a = prometheus.answer(expr);
            return a.value("status", "") == "success" && !a["data"]["result"].empty();
          },
          30s));
    }
  }
  CHECK(queries > 20);
}

TEST_CASE("metrics: 1,000 queues scrape clean, and gzip when the scraper asks") {
  TestBroker broker;
  for (int i = 0; i < 1000; ++i)
    REQUIRE(post(broker, "/v1/queues/q" + std::to_string(i) + "/messages", "m").status == 202);
  const std::string url = "http://127.0.0.1:" + std::to_string(broker.http_port()) + "/metrics";
  // curl --compressed asks for gzip and unpacks it; -D - shows the headers too.
  const auto packed = sluice::test::run_command("curl -sS --compressed -D " +
                                                broker.dir().string() + "/headers " + url);
  REQUIRE(packed.status == 0);
  std::ifstream headers(broker.dir() / "headers");
  const std::string head((std::istreambuf_iterator<char>(headers)),
                         std::istreambuf_iterator<char>());
  CHECK(head.find("Content-Encoding: gzip") != std::string::npos);
  CHECK(packed.out.find("sluice_queue_published_total{queue=\"q999\"} 1") != std::string::npos);
  // Without asking, plain text, and the same exposition.
  const auto plain = http_request(broker.http_port(), "GET", "/metrics");
  CHECK(plain.header("content-encoding").empty());
  CHECK(plain.body.find("sluice_queue_published_total{queue=\"q999\"} 1") != std::string::npos);
  // The bytes on the wire when asked for gzip (curl does not unpack without --compressed).
  const auto raw = sluice::test::run_command(
      "curl -sS -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' " + url);
  REQUIRE(raw.status == 0);
  const auto wire = std::stoul(raw.out);
  MESSAGE("a scrape of 1,000 queues: " << plain.body.size() << " bytes, gzip " << wire << " bytes");
  CHECK(wire > 1000);
  CHECK(wire * 5 < plain.body.size());
  const auto check = sluice::test::run_command("promtool check metrics 2>&1", plain.body);
  INFO(check.out);
  CHECK(check.status == 0);
}

namespace {
/// The value of the series `series` (name and labels, as exposed), or -1.
double series_value(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}
/// Series that carry queue="NAME".
std::size_t series_of(const std::string& text, const std::string& queue) {
  std::size_t n = 0;
  for (auto at = text.find("queue=\"" + queue + "\""); at != std::string::npos;
       at = text.find("queue=\"" + queue + "\"", at + 1))
    ++n;
  return n;
}
}  // namespace

TEST_CASE("metrics: per_queue shows chosen queues and sums the rest under _other") {
  TestBroker all;
  TestBroker some({"--set", "metrics.per_queue=orders.*"});
  for (TestBroker* b : {&all, &some})
    for (const char* q : {"orders.eu", "orders.us", "mail", "jobs", "jobs"})
      REQUIRE(post(*b, std::string("/v1/queues/") + q + "/messages", "m").status == 202);
  // Deliveries from both hidden queues: their latency histograms add up in _other.
  REQUIRE(receive(some, "mail", 1, 1000).size() == 1);
  REQUIRE(receive(some, "jobs", 2, 1000).size() == 2);
  const std::string every = http_request(all.http_port(), "GET", "/metrics").body;
  const std::string chosen = http_request(some.http_port(), "GET", "/metrics").body;
  // What docs/http-api.md says a queue costs in series.
  CHECK(series_of(every, "mail") == 73);
  CHECK(series_of(chosen, "orders.eu") == 73);
  CHECK(series_of(chosen, "mail") == 0);
  CHECK(series_of(chosen, "_other") == 73);  // mail and jobs, as one
  // 4 queues: 4 x 73 series with "all", (2 shown + _other) x 73 with "orders.*".
  std::size_t queue_series_all = 0, queue_series_chosen = 0;
  for (const char* q : {"orders.eu", "orders.us", "mail", "jobs", "_other"}) {
    queue_series_all += series_of(every, q);
    queue_series_chosen += series_of(chosen, q);
  }
  CHECK(queue_series_all == 4 * 73);
  CHECK(queue_series_chosen == 3 * 73);
  CHECK(series_value(chosen, "sluice_queue_published_total{queue=\"_other\"}") == 3);
  CHECK(series_value(chosen, "sluice_queue_messages{queue=\"_other\",state=\"ready\"}") == 0);
  CHECK(series_value(chosen, "sluice_queue_delivery_latency_seconds_count{queue=\"_other\"}") == 3);
  CHECK(series_value(
            chosen, "sluice_queue_delivery_latency_seconds_bucket{queue=\"_other\",le=\"+Inf\"}") ==
        3);
  CHECK(series_value(chosen, "sluice_queue_messages{queue=\"_other\",state=\"in_flight\"}") == 3);
  CHECK(series_value(chosen, "sluice_queue_published_total{queue=\"orders.us\"}") == 1);
  const auto check = sluice::test::run_command("promtool check metrics 2>&1", chosen);
  INFO(check.out);
  CHECK(check.status == 0);
  // "none": every queue under _other.
  TestBroker none({"--set", "metrics.per_queue=none"});
  REQUIRE(post(none, "/v1/queues/a/messages", "m").status == 202);
  const std::string hidden = http_request(none.http_port(), "GET", "/metrics").body;
  CHECK(series_of(hidden, "a") == 0);
  CHECK(series_value(hidden, "sluice_queue_published_total{queue=\"_other\"}") == 1);
}

TEST_CASE("metrics: process_*, HTTP requests by route and status class") {
  TestBroker broker;
  for (int i = 0; i < 3; ++i) REQUIRE(post(broker, "/v1/queues/q/messages", "m").status == 202);
  CHECK(http_request(broker.http_port(), "GET", "/v1/queues/nope/dlq/x").status == 404);
  const std::string text = http_request(broker.http_port(), "GET", "/metrics").body;
  CHECK(series_value(text,
                     "sluice_http_requests_total{route=\"/v1/queues/{queue}/messages\","
                     "code=\"2xx\"}") == 3);
  CHECK(series_value(text,
                     "sluice_http_requests_total{route=\"/v1/queues/{queue}/dlq\","
                     "code=\"4xx\"}") == 1);
  CHECK(series_value(text, "process_open_fds") > 3);
  CHECK(series_value(text, "process_max_fds") >= series_value(text, "process_open_fds"));
  CHECK(series_value(text, "process_resident_memory_bytes") > 1e6);
  CHECK(series_value(text, "process_virtual_memory_bytes") >
        series_value(text, "process_resident_memory_bytes"));
  CHECK(series_value(text, "process_cpu_seconds_total") >= 0);
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const double started = series_value(text, "process_start_time_seconds");
  CHECK(started <= now + 1);
  CHECK(started > now - 120);
}

TEST_CASE("trace context: a traceparent travels to consumers and dead letters, its id into logs") {
  TestBroker broker({"--set", "queues.t.max_attempts=1"});
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  const std::string parent = "00-" + trace + "-00f067aa0ba902b7-01";
  // One publish with the header, one batch inheriting it, one with a malformed header.
  auto r = http_request(broker.http_port(), "POST", "/v1/queues/t/messages", "one",
                        {{"traceparent", parent}, {"tracestate", "vendor=x"}});
  REQUIRE(r.status == 202);
  r = http_request(broker.http_port(), "POST", "/v1/queues/t/messages/batch",
                   R"({"messages":[{"payload":"two"}]})", {{"traceparent", parent}});
  REQUIRE(r.status == 202);
  r = http_request(broker.http_port(), "POST", "/v1/queues/t/messages", "three",
                   {{"traceparent", "00-not-a-trace-01"}});
  REQUIRE(r.status == 202);
  const json got = receive(broker, "t", 3, 1000);
  REQUIRE(got.size() == 3);
  std::map<std::string, json> by_payload;
  for (const auto& m : got) by_payload[m["payload"].get<std::string>()] = m;
  CHECK(by_payload["one"]["headers"]["traceparent"] == parent);
  CHECK(by_payload["one"]["headers"]["tracestate"] == "vendor=x");
  CHECK(by_payload["two"]["headers"]["traceparent"] == parent);
  CHECK_FALSE(by_payload["three"]["headers"].contains("traceparent"));
  // Dead-lettered: the entry keeps the header, and the log line names the trace.
  REQUIRE(post(broker, "/v1/queues/t/nack",
               json{{"receipt", by_payload["one"]["receipt"]},
                    {"dead_letter", true},
                    {"reason", "poison"}}
                   .dump())
              .status == 200);
  json entries;
  REQUIRE(eventually([&] {  // the dead letter is written to storage first
    const auto dlq = http_request(broker.http_port(), "GET", "/v1/queues/t/dlq");
    entries = json::parse(dlq.body)["entries"];
    return dlq.status == 200 && entries.size() == 1;
  }));
  CHECK(entries[0]["headers"]["traceparent"] == parent);
  CHECK(eventually([&] {
    const std::string log = broker.log();
    const auto at = log.find("\"event\":\"dead_lettered\"");
    return at != std::string::npos &&
           log.find("\"trace_id\":\"" + trace + "\"", at) != std::string::npos;
  }));
}

TEST_CASE("http: request bodies are strict - wrong type, unknown field, duplicate key, BOM") {
  TestBroker broker;
  struct Case {
    std::string target, body, names;  // names: text the message must contain
  };
  const std::vector<Case> cases = {
      {"/v1/queues/q/messages/batch", R"({"messages":[{"payload":1}]})",
       "payload must be a string"},
      {"/v1/queues/q/messages/batch", R"({"messages":[{"payload":"a","colour":"red"}]})",
       "unknown field \"colour\""},
      {"/v1/queues/q/messages/batch", R"({"messages":[{"payload":"a"}],"mesages":[]})",
       "unknown field \"mesages\""},
      {"/v1/queues/q/messages/batch", R"({"messages":[{"payload":"a","payload":"b"}]})",
       "\"payload\" appears twice"},
      {"/v1/queues/q/messages/batch", "\xEF\xBB\xBF{\"messages\":[{\"payload\":\"a\"}]}",
       "byte order mark"},
      {"/v1/queues/q/messages/batch", R"({"messages":[{"payload":"a","key":7}]})",
       "key must be a string"},
      {"/v1/queues/q/receive", R"({"max_messages":1,"wait":5})", "unknown field \"wait\""},
      {"/v1/queues/q/receive", R"({"max_messages":1,"max_messages":2})", "appears twice"},
      {"/v1/queues/q/ack", R"({"receipt":"1.2.3.4","delay_ms":5})", "unknown field \"delay_ms\""},
      {"/v1/queues/q/ack", R"({"receipt":5})", "receipt must be a string"},
      {"/v1/queues/q/nack", R"({"receipt":"1.2.3.4","dead_letter":"yes"})",
       "dead_letter must be true or false"},
      {"/v1/queues/q/extend", R"({"receipt":"1.2.3.4","lease":5})", "unknown field \"lease\""},
      {"/v1/queues/q/dlq/redrive", R"({"all":true,"speed":5})", "unknown field \"speed\""},
      {"/v1/queues/q/dlq/delete", R"({"ids":[1],"all":true})", "unknown field \"all\""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.target);
    CAPTURE(c.body);
    const auto r = post(broker, c.target, c.body, {{"Content-Type", "application/json"}});
    CHECK(r.status == 400);
    CHECK(error_code(r) == "invalid_argument");
    CHECK(body_of(r)["error"]["message"].get<std::string>().find(c.names) != std::string::npos);
  }
  // Numbers are fine where the field is a number; nothing above was published.
  const auto ok = post(broker, "/v1/queues/q/messages/batch",
                       R"({"messages":[{"payload":"a","delay_ms":0,"seq":1,"key":"k"}]})");
  CHECK(ok.status == 202);
  const auto q = body_of(http_request(broker.http_port(), "GET", "/v1/queues/q"));
  CHECK(q["totals"]["published"] == 1);
}

TEST_CASE(
    "http: settle and dead-letter refusals use the one error shape, a missing dead letter is 404") {
  TestBroker broker({"--set", "queues.pay.max_attempts=1"});
  REQUIRE(post(broker, "/v1/queues/pay/messages", "card").status == 202);
  json got = receive(broker, "pay", 1, 2000);
  REQUIRE(got.size() == 1);
  const std::string receipt = got[0]["receipt"];
  // One good receipt and one stale one: 409, the error shape, and what happened.
  const auto both = post(broker, "/v1/queues/pay/nack",
                         json{{"receipts", {receipt, "1.2.3.4"}}, {"reason", "declined"}}.dump());
  CHECK(both.status == 409);
  CHECK(error_code(both) == "stale_lease");
  CHECK(body_of(both)["succeeded"] == 1);
  CHECK(body_of(both)["failed"].size() == 1);
  std::uint64_t entry = 0;
  REQUIRE(eventually([&] {
    const auto list = http_request(broker.http_port(), "GET", "/v1/queues/pay/dlq");
    const json j = json::parse(list.body, nullptr, false);
    if (j.is_discarded() || !j.contains("entries") || j["entries"].empty()) return false;
    entry = j["entries"][0]["entry_id"];
    return true;
  }));
  const std::string missing = std::to_string(entry + 1000);
  const auto del = http_request(broker.http_port(), "DELETE", "/v1/queues/pay/dlq/" + missing);
  CHECK(del.status == 404);
  CHECK(error_code(del) == "not_found");
  // POST .../delete naming a missing id is 404 too, and deletes nothing (all or nothing).
  const auto post_del =
      post(broker, "/v1/queues/pay/dlq/delete", json{{"ids", {entry, entry + 1000}}}.dump());
  CHECK(post_del.status == 404);
  CHECK(error_code(post_del) == "not_found");
  CHECK(http_request(broker.http_port(), "GET", "/v1/queues/pay/dlq/" + std::to_string(entry))
            .status == 200);
  // sluicectl says so with exit status 3 (what was named does not exist).
  const auto ctl =
      sluice::test::run_command(std::string(SLUICECTL_PATH) + " --broker " + broker.address() +
                                " dlq delete pay " + missing + " 2>&1");
  CHECK(ctl.status == 3);
  CHECK(ctl.out.find("not_found") != std::string::npos);
  // The entry that is there goes; a second delete of it is 404.
  CHECK(post(broker, "/v1/queues/pay/dlq/delete", json{{"ids", {entry}}}.dump()).status == 200);
  CHECK(http_request(broker.http_port(), "DELETE", "/v1/queues/pay/dlq/" + std::to_string(entry))
            .status == 404);
}

namespace {

/// sluice_connections_closed_total for one listener and reason, as scraped now.
double closed_total(const TestBroker& broker, const std::string& listener,
                    const std::string& reason) {
  const std::string body = http_request(broker.http_port(), "GET", "/metrics").body;
  const std::string series =
      "sluice_connections_closed_total{listener=\"" + listener + "\",reason=\"" + reason + "\"} ";
  const auto at = body.find(series);
  if (at == std::string::npos) return -1;
  return std::stod(body.substr(at + series.size()));
}

/// True once the broker has closed `fd` (EOF or reset) within `within`.
bool closed_by_broker(int fd, std::chrono::milliseconds within) {
  pollfd p{fd, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + within;
  char byte[512];
  while (std::chrono::steady_clock::now() < deadline) {
    if (::poll(&p, 1, 50) == 1) {
      const auto n = ::read(fd, byte, sizeof byte);
      if (n <= 0) return true;  // answers (an ERROR frame, a 400) are read past
    }
  }
  return false;
}

}  // namespace

TEST_CASE("metrics: connections closed are counted by listener and reason") {
  SUBCASE("protocol: peer, timeout, protocol_error") {
    TestBroker broker({"--set", "limits.handshake_timeout=300ms"});
    broker.connect("goes-away").reset();                               // the client closes: peer
    const int silent = sluice::test::connect_loopback(broker.port());  // no HELLO: timeout
    CHECK(closed_by_broker(silent, std::chrono::seconds(10)));
    ::close(silent);
    const int garbled = sluice::test::connect_loopback(broker.port());
    const std::string http = "GET / HTTP/1.1\r\n\r\n";  // a length prefix far over the limit
    REQUIRE(::write(garbled, http.data(), http.size()) == static_cast<ssize_t>(http.size()));
    CHECK(closed_by_broker(garbled, std::chrono::seconds(10)));
    ::close(garbled);
    CHECK(eventually([&] {
      return closed_total(broker, "protocol", "peer") == 1 &&
             closed_total(broker, "protocol", "timeout") == 1 &&
             closed_total(broker, "protocol", "protocol_error") == 1;
    }));
    CHECK(closed_total(broker, "protocol", "refused") == 0);
  }
  SUBCASE("http: refused, protocol_error, peer") {
    TestBroker broker({"--set", "http.max_connections=2"});
    // Two idle connections fill the cap; the next one is refused (closed at once).
    std::vector<int> held = {sluice::test::connect_loopback(broker.http_port()),
                             sluice::test::connect_loopback(broker.http_port())};
    CHECK(eventually([&] {
      const int extra = sluice::test::connect_loopback(broker.http_port());
      const bool refused = closed_by_broker(extra, std::chrono::milliseconds(200));
      if (!refused)
        held.push_back(extra);  // accepted before the first two: it holds a place
      else
        ::close(extra);
      return refused;
    }));
    for (int fd : held) ::close(fd);
    // Once the broker has seen them go, a malformed request is answered and closed.
    sluice::test::RawHttpExchange bad;
    CHECK(eventually([&] {
      bad = sluice::test::http_raw(broker.http_port(), "NOT HTTP\r\n\r\n");
      return bad.first_status() != 0;
    }));
    CHECK(bad.first_status() == 400);
    CHECK(bad.closed);
    CHECK(eventually([&] {
      return closed_total(broker, "http", "refused") >= 1 &&
             closed_total(broker, "http", "protocol_error") == 1 &&
             closed_total(broker, "http", "peer") >= 2;  // the idle ones, and scrapes
    }));
    CHECK(closed_total(broker, "http", "timeout") == 0);
  }
  SUBCASE("http: an idle connection times out") {
    TestBroker broker({"--set", "http.idle_timeout=300ms"});
    const int idle = sluice::test::connect_loopback(broker.http_port());
    CHECK(closed_by_broker(idle, std::chrono::seconds(10)));
    ::close(idle);
    CHECK(eventually([&] { return closed_total(broker, "http", "timeout") >= 1; }));
  }
}
