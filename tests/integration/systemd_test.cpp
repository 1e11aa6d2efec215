// sluiced under systemd: the unit file passes systemd-analyze verify, and the
// sd_notify protocol (READY=1 after recovery and listening, WATCHDOG=1,
// STOPPING=1) reaches a notify socket the test owns, as systemd's would.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "test_broker.hpp"

namespace {

/// A datagram socket where sluiced sends its notifications.
class NotifySocket {
 public:
  explicit NotifySocket(const std::filesystem::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un at{};
    at.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof at.sun_path);
    std::strcpy(at.sun_path, path.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
  }
  ~NotifySocket() { ::close(fd_); }
  /// The next notification, or "" after `timeout`.
  std::string next(std::chrono::milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("systemd: packaging/sluiced.service passes systemd-analyze verify") {
  // The unit names /usr/bin/sluiced; verify checks that the binary exists, so the copy
  // checked points at this build's.
  sluice::test::ScopedTempDir dir("sluice-unit");
  std::string unit = read_file(SLUICE_SOURCE_DIR "/packaging/sluiced.service");
  for (auto at = unit.find("/usr/bin/sluiced"); at != std::string::npos;
       at = unit.find("/usr/bin/sluiced", at + 1))
    unit.replace(at, std::strlen("/usr/bin/sluiced"), SLUICED_PATH);
  std::ofstream(dir.path / "sluiced.service") << unit;
  const auto r = sluice::test::run_command("systemd-analyze verify " +
                                           (dir.path / "sluiced.service").string() + " 2>&1");
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK(r.out.empty());
  // What the unit promises, spelled as systemd reads it.
  for (const char* line :
       {"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=sluice",
        "ConfigurationDirectory=sluice", "DynamicUser=yes", "ProtectSystem=strict",
        "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
        "LimitNOFILE=", "WatchdogSec=", "ExecStartPre=" SLUICED_PATH " --check"}) {
    CAPTURE(line);
    CHECK(unit.find(line) != std::string::npos);
  }
}

TEST_CASE("systemd: READY=1 comes only after recovery and listening, then watchdog and STOPPING") {
  sluice::test::ScopedTempDir dir("sluice-notify");
  const auto data = dir.path / "data";
  constexpr int kMessages = 20'000;
  {
    // A data directory with messages to recover.
    sluice::test::TestBroker first(
        {"--set", "storage.path=" + data.string(), "--set", "queues.d.durability=durable"});
    auto producer = first.connect("producer");
    std::vector<sluice::client::Message> batch(1000, sluice::test::text_message("keep me"));
    for (int i = 0; i < kMessages / 1000; ++i) REQUIRE(producer->publish_batch("d", batch).ok());
  }
  NotifySocket notify(dir.path / "notify");
  ::setenv("NOTIFY_SOCKET", (dir.path / "notify").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "200000", 1);  // 200 ms: a WATCHDOG=1 every 100 ms
  const auto port_file = dir.path / "port";
  const auto log = dir.path / "sluiced.log";
  const pid_t pid =
      sluice::test::spawn({SLUICED_PATH, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                           "--port-file", port_file.string(), "--set",
                           "storage.path=" + data.string(), "--set", "queues.d.durability=durable"},
                          log, STDERR_FILENO, dir.path);
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");

  const std::string ready = notify.next(std::chrono::seconds(30));
  // At the moment READY=1 arrives, recovery is done and both ports take connections.
  const std::string log_then = read_file(log);
  REQUIRE(ready.starts_with("READY=1\n"));
  CHECK(ready.find("STATUS=listening on protocol port ") != std::string::npos);
  CHECK(log_then.find("\"event\":\"recovered\"") != std::string::npos);
  CHECK(log_then.find("\"messages\":" + std::to_string(kMessages)) != std::string::npos);
  std::ifstream ports(port_file);
  std::uint16_t port = 0, http_port = 0;
  REQUIRE(static_cast<bool>(ports >> port >> http_port));
  sluice::client::Options o;
  o.port = port;
  auto conn = sluice::client::Connection::connect(o);
  REQUIRE(conn.ok());
  auto stats = (*conn)->stats("d");
  REQUIRE(stats.ok());
  CHECK(stats->front().ready == kMessages);

  // The watchdog: a few WATCHDOG=1 in half a second.
  int pets = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (std::chrono::steady_clock::now() < until)
    pets += notify.next(std::chrono::milliseconds(200)) == "WATCHDOG=1";
  CHECK(pets >= 2);

  ::kill(pid, SIGTERM);
  std::string last;
  for (std::string n = notify.next(std::chrono::seconds(10)); !n.empty();
       n = notify.next(std::chrono::seconds(10))) {
    last = n;
    if (n == "STOPPING=1") break;
  }
  CHECK(last == "STOPPING=1");
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
}
