// TestBroker: runs the real sluiced binary on a free port for one test, waits
// until it is listening, and stops it when the test ends. Tests talk to it
// through the client library, sluicectl or raw sockets, and read its log.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <thread>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/client/client.hpp"

namespace sluice::test {

class TestBroker {
 public:
  /// Starts sluiced with `extra_args` after the test defaults (port 0, a port
  /// file and a log file in a fresh temp directory). Fails the test if it is
  /// not listening within 10 s.
  explicit TestBroker(std::vector<std::string> extra_args = {});
  /// Stops the broker (SIGTERM, then SIGKILL after 10 s) if still running.
  ~TestBroker();
  TestBroker(const TestBroker&) = delete;
  TestBroker& operator=(const TestBroker&) = delete;

  std::uint16_t port() const noexcept { return port_; }
  /// The HTTP API's port (0 when started with http.enabled=off).
  std::uint16_t http_port() const noexcept { return http_port_; }
  pid_t pid() const noexcept { return pid_; }
  /// "127.0.0.1:<port>"
  std::string address() const;
  /// Client options pointing at this broker.
  client::Options options() const;
  /// A connected client; fails the test if it cannot connect.
  std::unique_ptr<client::Connection> connect(std::string name = "test") const;

  /// Sends SIGTERM and waits; returns the exit status (or -1 on timeout).
  int stop(std::chrono::seconds timeout = std::chrono::seconds(10));
  /// Sends SIGKILL and reaps the process.
  void kill9();
  /// Everything sluiced wrote to stderr so far.
  std::string log() const;
  const std::filesystem::path& dir() const noexcept { return dir_; }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t http_port_ = 0;
};

/// A consumer in a process of its own (this test binary run as --hold-consumer):
/// it takes `credit` messages of `queue`, never settles them, and can be killed
/// with SIGKILL like a crashing function. The constructor returns once it holds
/// them all.
class HoldingConsumer {
 public:
  HoldingConsumer(const TestBroker& broker, const std::string& queue, std::uint32_t credit);
  ~HoldingConsumer();
  HoldingConsumer(const HoldingConsumer&) = delete;
  HoldingConsumer& operator=(const HoldingConsumer&) = delete;
  /// SIGKILL, then reap.
  void kill9();

 private:
  pid_t pid_ = -1;
};

/// A TCP connection to 127.0.0.1:`port` as a raw descriptor (the caller closes
/// it), for sending what no client library would; fails the test if refused.
/// Starts `args` (argv[0] a path) as a child with `fd` (stdout or stderr) sent to `output`,
/// in the working directory `cwd` (empty: this one).
pid_t spawn(std::vector<std::string> args, const std::filesystem::path& output, int fd,
            const std::filesystem::path& cwd = {});

int connect_loopback(std::uint16_t port);

/// A message with `payload` and no headers.
client::Message text_message(std::string payload);

/// Creates a fresh directory under the system temp directory (the caller removes it).
std::filesystem::path make_temp_dir(const std::string& prefix);

/// A fresh temporary directory, removed with everything in it at the end of the scope.
struct ScopedTempDir {
  explicit ScopedTempDir(const std::string& prefix) : path(make_temp_dir(prefix)) {}
  ~ScopedTempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  std::filesystem::path path;
};

/// Runs a command with /bin/sh, feeding `input` on stdin; returns exit status and stdout.
struct CommandResult {
  int status = -1;
  std::string out;
};
CommandResult run_command(const std::string& command, const std::string& input = "");

/// Polls `condition` every `poll` until true or `timeout`; returns its last value.
template <typename F>
bool eventually(F condition, std::chrono::milliseconds timeout = std::chrono::milliseconds(10000),
                std::chrono::milliseconds poll = std::chrono::milliseconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(poll);
  }
  return condition();
}

/// A line of /proc/PID/status in KiB: "VmRSS:" (resident now), "VmHWM:" (peak).
std::uint64_t proc_status_kib(pid_t pid, std::string_view field);

}  // namespace sluice::test

// The names the integration tests share, brought in once (test files only).
using namespace std::chrono_literals;
using sluice::errc;
using sluice::client::Delivery;
using sluice::client::Disposition;
using sluice::client::LeaseHandle;
using sluice::client::SubscribeOptions;
using sluice::test::eventually;
using sluice::test::TestBroker;
