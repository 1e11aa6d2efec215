// Slowloris: a thousand connections that say nothing, or drip a byte now and
// then, do not keep a normal client from publishing and consuming, and each is
// closed once its timeout passes (handshake and frame timeouts on the
// protocol port, the idle timeout on the HTTP port).
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "http_client.hpp"
#include "sluice/protocol/codec.hpp"
#include "test_broker.hpp"

using sluice::test::http_request;

namespace {

using sluice::test::connect_loopback;

/// True once the broker has closed `fd`: reading gives end of stream or an
/// error (what it sent first, such as a timed_out ERROR, is read and dropped).
bool closed_by_peer(int fd, std::string* received = nullptr) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;
    if (received) received->append(buf, static_cast<std::size_t>(n));
  }
}

/// The value of `sluice_connections{listener="<listener>"}` in /metrics.
double connections(std::uint16_t http_port, const std::string& listener) {
  const auto r = http_request(http_port, "GET", "/metrics");
  const std::string key = "sluice_connections{listener=\"" + listener + "\"} ";
  const auto at = r.body.find(key);
  if (at == std::string::npos) return -1;
  return std::stod(r.body.substr(at + key.size()));
}

}  // namespace

TEST_CASE("1,000 idle or slow-drip connections: a normal client still works, and they are closed") {
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &limit) == 0);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  REQUIRE(limit.rlim_cur >= 2200);  // our 1,000 plus the normal client's, with room

  TestBroker broker({"--set", "limits.handshake_timeout=2s", "--set", "limits.frame_timeout=2s",
                     "--set", "http.idle_timeout=2s", "--set",
                     "server.max_connections_per_source=2000", "--set",
                     "http.max_connections_per_source=2000", "--set", "http.max_connections=2000"});
  constexpr int kIdleProtocol = 400, kDripProtocol = 100, kIdleHttp = 400, kDripHttp = 100;
  std::vector<int> idle, drip_protocol, drip_http;
  for (int i = 0; i < kIdleProtocol; ++i) idle.push_back(connect_loopback(broker.port()));
  for (int i = 0; i < kIdleHttp; ++i) idle.push_back(connect_loopback(broker.http_port()));
  for (int i = 0; i < kDripProtocol; ++i) drip_protocol.push_back(connect_loopback(broker.port()));
  for (int i = 0; i < kDripHttp; ++i) drip_http.push_back(connect_loopback(broker.http_port()));
  const auto opened = std::chrono::steady_clock::now();

  // The drip: one more byte of a HELLO, or of a request line, every 200 ms,
  // for far longer than the timeouts; each would finish in about 3 s.
  std::string hello;
  sluice::protocol::encode_hello(hello, {1, 1, "slow-client-name", ""});
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  std::atomic<bool> stop{false};
  std::thread dripper([&] {
    for (std::size_t step = 0; !stop.load() && step < 40; ++step) {
      for (int fd : drip_protocol)
        if (step < hello.size()) ::send(fd, &hello[step], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      for (int fd : drip_http)
        if (step < request.size()) ::send(fd, &request[step], 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      std::this_thread::sleep_for(200ms);
    }
  });

  // The broker holds them all...
  CHECK(eventually(
      [&] { return connections(broker.http_port(), "protocol") >= kIdleProtocol + kDripProtocol; },
      5s));
  CHECK(connections(broker.http_port(), "http") >= kIdleHttp + kDripHttp);

  // ... and a normal client publishes and consumes meanwhile, on both ports.
  auto conn = broker.connect("normal");
  std::atomic<int> got{0};
  auto sub = conn->subscribe("work", {.max_in_flight = 64}, [&](const sluice::client::Delivery&) {
    got.fetch_add(1);
    return sluice::client::Disposition::ack;
  });
  REQUIRE(sub.ok());
  for (int i = 0; i < 1000; ++i) conn->publish_async("work", "m", nullptr);
  REQUIRE(conn->wait_confirms(10s));
  CHECK(eventually([&] { return got.load() == 1000; }));
  CHECK(http_request(broker.http_port(), "POST", "/v1/queues/web/messages", "m").status == 202);
  const auto received =
      http_request(broker.http_port(), "POST", "/v1/queues/web/receive", R"({"max_messages":1})");
  CHECK(received.status == 200);
  CHECK(received.body.find("receipt") != std::string::npos);
  // All of that happened while the flood was still open.
  CHECK(std::chrono::steady_clock::now() - opened < 2s);

  // After the timeouts every one of them is closed by the broker, long before
  // a drip could finish (a HELLO takes 6 s at this pace, the request 7 s).
  std::string http_answers;
  auto all_closed = [&](const std::vector<int>& fds) {
    return std::all_of(fds.begin(), fds.end(), [&](int fd) {
      return closed_by_peer(fd, fds == drip_http ? &http_answers : nullptr);
    });
  };
  CHECK(eventually([&] { return all_closed(idle); }, 10s));
  CHECK(eventually([&] { return all_closed(drip_protocol); }, 10s));
  CHECK(eventually([&] { return all_closed(drip_http); }, 10s));
  const auto took = std::chrono::steady_clock::now() - opened;
  CHECK(took < 4500ms);
  CHECK(http_answers.empty());  // no slow request was ever answered
  stop = true;
  dripper.join();
  CHECK(eventually([&] { return connections(broker.http_port(), "protocol") == 1; }));
  CHECK(conn->connected());
  CHECK(conn->publish("work", sluice::test::text_message("after")).ok());
  for (auto* fds : {&idle, &drip_protocol, &drip_http})
    for (int fd : *fds) ::close(fd);
}

TEST_CASE("per-source connection caps on both ports") {
  TestBroker broker({"--set", "server.max_connections_per_source=5", "--set",
                     "http.max_connections_per_source=5"});
  for (const std::uint16_t port : {broker.port(), broker.http_port()}) {
    CAPTURE(port);
    std::vector<int> held;
    for (int i = 0; i < 5; ++i) held.push_back(connect_loopback(port));
    // Let the broker accept them before the sixth arrives (no /metrics here:
    // on the HTTP port that request would be the sixth).
    std::this_thread::sleep_for(300ms);
    const int sixth = connect_loopback(port);
    CHECK(eventually([&] { return closed_by_peer(sixth); }, 3s));
    ::close(sixth);
    for (int fd : held) CHECK_FALSE(closed_by_peer(fd));
    for (int fd : held) ::close(fd);
  }
  CHECK(broker.log().find("max_connections_per_source") != std::string::npos);
}

TEST_CASE("limits.max_pending_publishes paces a producer of a durable queue and loses nothing") {
  sluice::test::ScopedTempDir data("sluice-pending");
  TestBroker broker({"--set", "storage.path=" + data.path.string(), "--set",
                     "queue_defaults.durability=durable", "--set",
                     "limits.max_pending_publishes=1"});
  auto conn = broker.connect("producer");
  std::atomic<int> confirmed{0};
  for (int i = 0; i < 3000; ++i)
    conn->publish_async("paced", "m", [&](const sluice::client::Error& e, std::uint64_t) {
      if (!e) confirmed.fetch_add(1);
    });
  // With at most one message awaiting its commit the broker reads one frame at
  // a time; every publish still gets its confirm.
  REQUIRE(conn->wait_confirms(30s));
  INFO(broker.log());
  INFO(conn->last_error().to_string());
  CHECK(confirmed.load() == 3000);
  auto stats = conn->stats("paced");
  REQUIRE(stats.ok());
  CHECK(stats->front().ready == 3000);
}
