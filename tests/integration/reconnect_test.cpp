// The client library across a dropped connection, against the real sluiced: a
// broker restart (kill -9, same port and data) under a producer and a consumer,
// a network blip (a TCP proxy in the test cuts the link while it holds the
// broker's answers back), resending with dedup ids, giving up, and the pull API.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <sstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_broker.hpp"

using sluice::errc;
using sluice::client::ConnectionState;
using sluice::client::Disposition;
using namespace std::chrono_literals;

namespace {

/// A TCP proxy on 127.0.0.1 in front of a broker port. `hold_answers` keeps
/// what the broker sends from reaching the client, `hold_requests` what the
/// client sends from reaching the broker (either is dropped at the cut);
/// `cut` closes every proxied connection, as a network blip would.
class Proxy {
 public:
  explicit Proxy(std::uint16_t target) : target_(target) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    REQUIRE(::listen(listener_, 16) == 0);
    thread_ = std::thread([this] { run(); });
  }
  ~Proxy() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
    cut();
  }
  std::uint16_t port() const { return port_; }
  void hold_answers(bool hold) { hold_ = hold; }
  void hold_requests(bool hold) { hold_requests_ = hold; }
  /// While set, new connections are closed at once (the broker looks down).
  void refuse(bool refuse) { refuse_ = refuse; }
  void cut() {
    std::lock_guard lk(mutex_);
    for (auto [client, broker] : pairs_) {
      ::shutdown(client, SHUT_RDWR);
      ::shutdown(broker, SHUT_RDWR);
    }
  }
  int connections() const { return accepted_; }

 private:
  void run() {
    std::vector<std::thread> pumps;
    while (!stop_) {
      pollfd p{listener_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) continue;
      if (refuse_) {
        ::close(client);
        continue;
      }
      const int broker = sluice::test::connect_loopback(target_);
      ++accepted_;
      {
        std::lock_guard lk(mutex_);
        pairs_.emplace_back(client, broker);
      }
      pumps.emplace_back([this, client, broker] { pump(client, broker); });
    }
    for (auto& t : pumps) t.join();
  }
  /// Both directions of one connection, until either side closes or the cut.
  void pump(int client, int broker) {
    char buf[65536];
    for (;;) {
      pollfd fds[2] = {{client, hold_requests_ ? short(0) : short(POLLIN), 0},
                       {broker, hold_ ? short(0) : short(POLLIN), 0}};
      if (::poll(fds, 2, 50) < 0 || stop_) break;
      auto move = [&](int from, int to) {
        const ssize_t n = ::read(from, buf, sizeof buf);
        if (n <= 0) return false;
        for (ssize_t off = 0; off < n;) {
          const ssize_t w =
              ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);  // no SIGPIPE
          if (w <= 0) return false;
          off += w;
        }
        return true;
      };
      if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && !move(client, broker)) break;
      if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) && !move(broker, client)) break;
    }
    std::lock_guard lk(mutex_);
    std::erase(pairs_, std::pair{client, broker});
    ::close(client);
    ::close(broker);
  }

  std::uint16_t target_;
  std::uint16_t port_ = 0;
  int listener_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<bool> hold_{false};
  std::atomic<bool> hold_requests_{false};
  std::atomic<bool> refuse_{false};
  std::atomic<int> accepted_{0};
  std::mutex mutex_;
  std::vector<std::pair<int, int>> pairs_;
  std::thread thread_;
};

/// The states a connection went through, from Options::on_state.
struct StateLog {
  std::mutex mutex;
  std::vector<ConnectionState> states;
  std::vector<std::string> reasons;
  void attach(sluice::client::Options& o) {
    o.on_state = [this](ConnectionState s, const sluice::client::Error& why) {
      std::lock_guard lk(mutex);
      states.push_back(s);
      reasons.push_back(why.to_string());
    };
  }
  int count(ConnectionState s) {
    std::lock_guard lk(mutex);
    return static_cast<int>(std::count(states.begin(), states.end(), s));
  }
};

sluice::client::Options fast_reconnect(sluice::client::Options o) {
  o.reconnect.initial_delay = 20ms;
  o.reconnect.max_delay = 200ms;
  return o;
}

/// A connection to `broker` through `proxy`, reconnecting fast; `tweak` adjusts its options.
std::unique_ptr<sluice::client::Connection> through(
    const Proxy& proxy, const TestBroker& broker,
    const std::function<void(sluice::client::Options&)>& tweak = {}) {
  auto o = fast_reconnect(broker.options());
  o.port = proxy.port();
  if (tweak) tweak(o);
  auto conn = sluice::client::Connection::connect(o);
  REQUIRE(conn);
  return std::move(conn).value();
}

/// Once queue q holds `ready` messages (seen by `direct`), cuts the proxied links
/// and lets answers through again.
void blip_after(Proxy& proxy, sluice::client::Connection& direct, std::uint64_t ready) {
  REQUIRE(eventually([&] {
    auto s = direct.stats("q");
    return s && !s->empty() && s->front().ready == ready;
  }));
  proxy.cut();
  proxy.hold_answers(false);
}

/// Publishes "m0".."m<n-1>" to q, counting each outcome.
void publish_counted(sluice::client::Connection& conn, int n, std::atomic<int>& ok,
                     std::atomic<int>& failed) {
  for (int i = 0; i < n; ++i)
    conn.publish_async("q", "m" + std::to_string(i),
                       [&](const sluice::client::Error& e, std::uint64_t) { e ? ++failed : ++ok; });
}

}  // namespace

TEST_CASE(
    "reconnect: kill -9 and a restart under a producer and a consumer lose no confirmed message") {
  sluice::test::ScopedTempDir data("sluice-reconnect");
  const std::vector<std::string> durable = {"--set", "storage.path=" + (data.path / "d").string(),
                                            "--set", "queues.d.durability=durable"};
  auto broker = std::make_unique<TestBroker>(durable);
  const std::uint16_t port = broker->port();

  StateLog producer_states, consumer_states;
  auto po = fast_reconnect(broker->options());
  producer_states.attach(po);
  auto co = fast_reconnect(broker->options());
  consumer_states.attach(co);
  auto producer = sluice::client::Connection::connect(po);
  auto consumer = sluice::client::Connection::connect(co);
  REQUIRE(producer);
  REQUIRE(consumer);

  std::mutex mutex;
  std::set<std::string> confirmed, received;
  std::atomic<int> unknown{0};
  sluice::client::SubscribeOptions so;
  so.max_in_flight = 32;
  auto sub = (*consumer)->subscribe("d", so, [&](const sluice::client::Delivery& d) {
    std::lock_guard lk(mutex);
    received.emplace(d.payload);
    return Disposition::ack;
  });
  REQUIRE(sub);

  // The application only publishes: through the restart, on the same connection.
  std::atomic<bool> stop{false};
  std::thread publishing([&] {
    for (int i = 0; !stop; ++i) {
      const std::string payload = "m" + std::to_string(i);
      (*producer)->publish_async("d", payload,
                                 [&, payload](const sluice::client::Error& e, std::uint64_t) {
                                   if (e.code == errc::outcome_unknown) ++unknown;
                                   if (e) return;
                                   std::lock_guard lk(mutex);
                                   confirmed.insert(payload);
                                 });
      if (i % 50 == 49) std::this_thread::sleep_for(2ms);
    }
    (*producer)->wait_confirms(20s);
  });
  auto confirmed_count = [&] {
    std::lock_guard lk(mutex);
    return confirmed.size();
  };
  REQUIRE(eventually([&] { return confirmed_count() > 500; }));
  broker->kill9();
  CHECK(eventually([&] { return !(*consumer)->connected() && !(*producer)->connected(); }));
  const std::size_t before_restart = confirmed_count();
  std::this_thread::sleep_for(300ms);  // a few failed attempts
  std::vector<std::string> again = durable;
  again.insert(again.end(), {"--listen", "127.0.0.1:" + std::to_string(port)});
  broker = std::make_unique<TestBroker>(again);
  REQUIRE(broker->port() == port);

  CHECK(eventually([&] { return (*consumer)->connected() && (*producer)->connected(); }));
  CHECK(eventually([&] { return confirmed_count() > before_restart + 500; }));
  stop = true;
  publishing.join();

  // Every confirmed message is delivered, without the application doing anything.
  CHECK(eventually(
      [&] {
        std::lock_guard lk(mutex);
        return std::includes(received.begin(), received.end(), confirmed.begin(), confirmed.end());
      },
      20s));
  std::size_t missing = 0;
  {
    std::lock_guard lk(mutex);
    for (const auto& p : confirmed) missing += received.count(p) == 0;
    MESSAGE(confirmed.size() << " confirmed, " << received.size() << " received, " << unknown.load()
                             << " outcome_unknown");
  }
  CHECK(missing == 0);
  CHECK(consumer_states.count(ConnectionState::reconnecting) >= 1);
  CHECK(consumer_states.count(ConnectionState::connected) == 1);
  CHECK(producer_states.count(ConnectionState::connected) == 1);
  CHECK(consumer_states.count(ConnectionState::closed) == 0);
  CHECK((*consumer)->state() == ConnectionState::connected);
  CHECK((*consumer)->subscription_stats(*sub).peak_held <= 32);
  // The broker sees one consumer again, with the credit it asked for.
  auto stats = (*producer)->stats("d");
  REQUIRE(stats);
  REQUIRE(stats->size() == 1);
  CHECK(stats->front().consumers == 1);
}

TEST_CASE("reconnect: sluicectl consume carries on across a broker restart") {
  sluice::test::ScopedTempDir data("sluice-reconnect");
  const std::vector<std::string> durable = {"--set", "storage.path=" + (data.path / "d").string(),
                                            "--set", "queues.d.durability=durable"};
  auto broker = std::make_unique<TestBroker>(durable);
  const std::uint16_t port = broker->port();
  {
    auto c = broker->connect();
    for (int i = 0; i < 5; ++i)
      REQUIRE(c->publish("d", sluice::test::text_message("a" + std::to_string(i))).ok());
  }
  const auto out = data.path / "out", err = data.path / "err";
  const pid_t pid =
      sluice::test::spawn({"/bin/sh", "-c",
                           std::string(SLUICECTL_PATH) + " --broker " + broker->address() +
                               " consume d --count 10 2>" + err.string()},
                          out, STDOUT_FILENO);
  auto read = [](const std::filesystem::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  auto lines = [&] {
    const std::string text = read(out);
    return static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  };
  REQUIRE(eventually([&] { return lines() == 5; }));
  // Acked before the kill, so none of them comes again.
  REQUIRE(eventually([&] {
    auto c = broker->connect();
    auto s = c->stats("d");
    return s && !s->empty() && s->front().acked_total == 5;
  }));
  broker->kill9();
  std::vector<std::string> again = durable;
  again.insert(again.end(), {"--listen", "127.0.0.1:" + std::to_string(port)});
  broker = std::make_unique<TestBroker>(again);
  {
    auto c = broker->connect();
    for (int i = 0; i < 5; ++i)
      REQUIRE(c->publish("d", sluice::test::text_message("b" + std::to_string(i))).ok());
  }
  int status = -1;
  CHECK(eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 20s));
  if (status == -1) ::kill(pid, SIGKILL);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const std::string printed = read(out);
  INFO(printed);
  INFO(read(err));
  CHECK(lines() == 10);
  for (const char* p : {" a0\n", " a4\n", " b0\n", " b4\n"})
    CHECK(printed.find(p) != std::string::npos);
  CHECK(read(err).find("sluicectl: reconnecting (") != std::string::npos);
  CHECK(read(err).find("sluicectl: connected again") != std::string::npos);
}

TEST_CASE("reconnect: a blip with answers held back fails those publishes as outcome_unknown") {
  TestBroker broker;
  Proxy proxy(broker.port());
  StateLog states;
  auto conn = through(proxy, broker, [&](sluice::client::Options& o) { states.attach(o); });
  REQUIRE(conn->publish("q", sluice::test::text_message("before")).ok());

  proxy.hold_answers(true);
  std::atomic<int> unknown{0}, ok{0}, other{0};
  for (int i = 0; i < 20; ++i)
    conn->publish_async("q", "held-" + std::to_string(i),
                        [&](const sluice::client::Error& e, std::uint64_t) {
                          if (!e)
                            ++ok;
                          else if (e.code == errc::outcome_unknown)
                            ++unknown;
                          else
                            ++other;
                        });
  auto direct = broker.connect();
  // The broker took all 20; their confirms are held in the proxy.
  blip_after(proxy, *direct, 21);
  CHECK(eventually([&] { return unknown + ok + other == 20; }));
  CHECK(unknown == 20);
  CHECK(other == 0);
  CHECK(eventually([&] { return conn->connected(); }));
  CHECK(proxy.connections() == 2);
  // A blocking request made after the blip goes out on the new link.
  CHECK(conn->publish("q", sluice::test::text_message("after")).ok());
  CHECK(states.count(ConnectionState::reconnecting) >= 1);
  CHECK(states.count(ConnectionState::connected) == 1);
  CHECK(conn->last_error().code == errc::connection_lost);
}

TEST_CASE("reconnect: resend_unconfirmed publishes again with dedup ids, so nothing doubles") {
  TestBroker broker;
  Proxy proxy(broker.port());
  auto conn =
      through(proxy, broker, [&](sluice::client::Options& o) { o.resend_unconfirmed = true; });

  proxy.hold_answers(true);
  std::atomic<int> ok{0}, failed{0}, duplicates{0};
  publish_counted(*conn, 20, ok, failed);
  // A blocking one too, with the application's own dedup id.
  std::thread blocking([&] {
    sluice::client::Message m{"own", {{"sluice-dedup-id", "mine-1"}}};
    auto r = conn->publish_checked("q", m);
    CHECK(r.ok());
    if (r && r->duplicate) ++duplicates;
  });
  auto direct = broker.connect();
  blip_after(proxy, *direct, 21);
  blocking.join();
  CHECK(eventually([&] { return ok + failed == 20; }));
  CHECK(ok == 20);
  CHECK(failed == 0);
  CHECK(duplicates == 1);  // the broker had it: the resend's answer says so
  // Each message once: the resends were recognised as duplicates.
  auto s = direct->stats("q");
  REQUIRE(s);
  CHECK(s->front().ready == 21);
  CHECK(s->front().duplicates_total == 21);
  std::multiset<std::string> got;
  auto batch = direct->fetch("q", 100, 300ms);
  REQUIRE(batch);
  for (const auto& f : *batch) got.insert(f.message.payload);
  CHECK(got.size() == 21);
  CHECK(got.count("m7") == 1);
  CHECK(got.count("own") == 1);
  // The library's dedup id on its own messages, the application's kept on its own.
  for (const auto& f : *batch)
    if (f.message.payload == "own")
      CHECK(f.header("sluice-dedup-id") == "mine-1");
    else
      CHECK(f.header("sluice-dedup-id").starts_with("c"));
}

TEST_CASE("reconnect: publishes lost with the link are resent in the order they were sent") {
  // Some of these the caller writes itself (the connection is idle at first),
  // the rest the I/O thread batches; none reaches the broker before the drop,
  // so the resend alone decides the queue's order.
  TestBroker broker;
  Proxy proxy(broker.port());
  auto conn =
      through(proxy, broker, [&](sluice::client::Options& o) { o.resend_unconfirmed = true; });
  proxy.hold_requests(true);
  std::atomic<int> ok{0}, failed{0};
  publish_counted(*conn, 30, ok, failed);
  CHECK(conn->direct_publishes() > 0);
  std::this_thread::sleep_for(200ms);  // the batched ones are written too
  proxy.cut();
  proxy.hold_requests(false);
  REQUIRE(conn->wait_confirms(20s));
  CHECK(ok == 30);
  CHECK(failed == 0);
  auto direct = broker.connect();
  auto batch = direct->fetch("q", 100, 300ms);
  REQUIRE(batch);
  std::vector<std::string> order;
  for (const auto& f : *batch) order.emplace_back(f.message.payload);
  std::vector<std::string> expected;
  for (int i = 0; i < 30; ++i) expected.push_back("m" + std::to_string(i));
  CHECK(order == expected);
}

TEST_CASE(
    "reconnect: a subscription comes back with its credit, and leases of the old link are stale") {
  TestBroker broker;
  Proxy proxy(broker.port());
  auto conn = through(proxy, broker);
  auto direct = broker.connect();
  for (int i = 0; i < 10; ++i) REQUIRE(direct->publish("q", sluice::test::text_message("x")).ok());

  std::mutex mutex;
  std::vector<sluice::client::LeaseHandle> held;
  sluice::client::SubscribeOptions so;
  so.max_in_flight = 3;
  auto sub = conn->subscribe("q", so, [&](const sluice::client::Delivery& d) {
    std::lock_guard lk(mutex);
    held.push_back(sluice::client::handle(d));
    return Disposition::manual;
  });
  REQUIRE(sub);
  auto held_count = [&] {
    std::lock_guard lk(mutex);
    return held.size();
  };
  REQUIRE(eventually([&] { return held_count() == 3; }));
  const auto old_lease = held.front();
  proxy.cut();
  // Back with credit 3: three more arrive (the first three are the broker's again).
  CHECK(eventually([&] { return held_count() == 6; }));
  std::this_thread::sleep_for(200ms);
  CHECK(held_count() == 6);
  CHECK(conn->ack(old_lease).code == errc::stale_lease);
  std::vector<sluice::client::LeaseHandle> now;
  {
    std::lock_guard lk(mutex);
    now.assign(held.begin() + 3, held.end());
  }
  for (const auto& l : now) CHECK_FALSE(conn->ack(l));
  CHECK(eventually([&] { return held_count() == 9; }));
  auto s = direct->stats("q");
  REQUIRE(s);
  CHECK(s->front().consumers == 1);
  CHECK(s->front().acked_total == 3);
  CHECK(conn->subscription_stats(*sub).peak_held <= 3);
}

TEST_CASE("reconnect: while down, a fetch ends and old leases are stale at once") {
  TestBroker broker;
  Proxy proxy(broker.port());
  auto conn = through(proxy, broker);
  REQUIRE(conn->publish("q", sluice::test::text_message("x")).ok());
  auto got = conn->fetch("q", 1, 5s);
  REQUIRE(got);
  REQUIRE(got->size() == 1);

  std::atomic<bool> fetch_done{false};
  sluice::client::Error fetch_error;
  std::thread fetching([&] {
    auto r = conn->fetch("empty", 10, 30s);
    fetch_error = r.error();
    fetch_done = true;
  });
  std::this_thread::sleep_for(200ms);  // the fetch is waiting
  proxy.refuse(true);
  proxy.cut();
  CHECK(eventually([&] { return fetch_done.load(); }, 5s));
  fetching.join();
  CHECK(fetch_error.code == errc::connection_lost);
  CHECK(conn->state() == ConnectionState::reconnecting);
  // The broker took the lease back when the link dropped: stale, without waiting.
  const auto start = std::chrono::steady_clock::now();
  CHECK(conn->ack(got->front().lease).code == errc::stale_lease);
  CHECK(std::chrono::steady_clock::now() - start < 1s);
  proxy.refuse(false);
  CHECK(eventually([&] { return conn->connected(); }));
  auto again = conn->fetch("q", 1, 5s);
  REQUIRE(again);
  REQUIRE(again->size() == 1);
  CHECK(again->front().attempt == 2);
  CHECK_FALSE(conn->ack(again->front().lease));
}

TEST_CASE("reconnect: give_up_after ends in closed, and with reconnect off a drop is final") {
  auto broker = std::make_unique<TestBroker>();
  auto o = fast_reconnect(broker->options());
  o.reconnect.give_up_after = 300ms;
  StateLog states;
  states.attach(o);
  auto conn = sluice::client::Connection::connect(o);
  REQUIRE(conn);
  broker->kill9();
  CHECK(eventually([&] { return (*conn)->state() == ConnectionState::closed; }));
  // on_state(closed) comes last in the I/O thread's close, after state() says so.
  CHECK(eventually([&] { return states.count(ConnectionState::closed) == 1; }));
  CHECK((*conn)->last_error().detail.find("gave up reconnecting") != std::string::npos);
  // Requests on a closed connection fail at once, with why.
  CHECK((*conn)->ping().code == errc::connection_lost);

  o.reconnect.enabled = false;
  broker = std::make_unique<TestBroker>();
  o.port = broker->port();
  auto off = sluice::client::Connection::connect(o);
  REQUIRE(off);
  broker->kill9();
  CHECK(eventually([&] { return (*off)->state() == ConnectionState::closed; }));
}

TEST_CASE("fetch: a batch of up to n within the wait, leased until acked") {
  TestBroker broker;
  auto conn = broker.connect();
  for (int i = 0; i < 5; ++i)
    REQUIRE(conn->publish("q", sluice::test::text_message("m" + std::to_string(i))).ok());

  // Three are there: back at once with three, the other two still ready.
  auto three = conn->fetch("q", 3, 10s);
  REQUIRE(three);
  REQUIRE(three->size() == 3);
  CHECK(three->at(0).message.payload == "m0");
  CHECK(three->at(2).message.payload == "m2");
  CHECK(three->at(0).attempt == 1);
  auto s = conn->stats("q");
  REQUIRE(s);
  CHECK(s->front().ready == 2);
  CHECK(s->front().in_flight == 3);

  // Asking for more than there is: what arrived within the wait.
  const auto start = std::chrono::steady_clock::now();
  auto rest = conn->fetch("q", 10, 300ms);
  REQUIRE(rest);
  CHECK(rest->size() == 2);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  auto none = conn->fetch("q", 10, 50ms);
  REQUIRE(none);
  CHECK(none->empty());

  for (const auto& f : *three) CHECK_FALSE(conn->ack(f.lease));
  CHECK_FALSE(conn->ack(rest->at(1).lease));
  CHECK_FALSE(conn->nack(rest->at(0).lease, 0ms));
  // Nacked, it comes again; fetched with a 200 ms lease and left unsettled, again.
  auto again = conn->fetch("q", 1, 10s, 200ms);
  REQUIRE(again);
  REQUIRE(again->size() == 1);
  CHECK(again->at(0).message.payload == rest->at(0).message.payload);
  CHECK(again->at(0).attempt == 2);
  auto expired = conn->fetch("q", 1, 10s);
  REQUIRE(expired);
  REQUIRE(expired->size() == 1);
  CHECK(expired->at(0).attempt == 3);
  CHECK(conn->ack(again->at(0).lease).code == errc::stale_lease);
  CHECK_FALSE(conn->ack(expired->at(0).lease));
  // Everything settled: the fetches' subscriptions are gone.
  s = conn->stats("q");
  REQUIRE(s);
  CHECK(s->front().consumers == 0);
  CHECK(s->front().in_flight == 0);
  CHECK(s->front().acked_total == 5);
  CHECK(conn->fetch("q", 0, 1s).error().code == errc::invalid_argument);
  CHECK(conn->fetch("no spaces", 1, 1s).error().code == errc::invalid_queue_name);
}
