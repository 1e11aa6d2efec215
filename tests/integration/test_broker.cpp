#include "test_broker.hpp"

#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace sluice::test {

std::filesystem::path make_temp_dir(const std::string& prefix) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  return dir;
}

pid_t spawn(std::vector<std::string> args, const std::filesystem::path& output, int fd,
            const std::filesystem::path& cwd) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) std::_Exit(126);
    const int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out >= 0) {
      ::dup2(out, fd);
      ::close(out);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  return pid;
}

TestBroker::TestBroker(std::vector<std::string> extra_args) : dir_(make_temp_dir("sluice-test")) {
  const auto port_file = dir_ / "port";
  const auto log_file = dir_ / "sluiced.log";
  std::vector<std::string> args = {SLUICED_PATH,  "--listen",    "127.0.0.1:0",     "--http-listen",
                                   "127.0.0.1:0", "--port-file", port_file.string()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());

  // In its own directory: a bare sluiced keeps its data in ./sluice-data.
  pid_ = spawn(args, log_file, STDERR_FILENO, dir_);
  const bool listening = eventually(
      [&] {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;  // it exited: the log says why
          return true;
        }
        // The protocol port, then the HTTP port (0 when HTTP is off).
        std::ifstream f(port_file);
        int port = 0, http_port = 0;
        if (f >> port >> http_port && port > 0) {
          port_ = static_cast<std::uint16_t>(port);
          http_port_ = static_cast<std::uint16_t>(http_port);
          return true;
        }
        return false;
      },
      std::chrono::seconds(10));
  INFO("sluiced log:\n" << log());
  REQUIRE(listening);
  REQUIRE(pid_ > 0);
}

TestBroker::~TestBroker() {
  if (pid_ > 0) {
    if (stop() == -1) kill9();
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string TestBroker::address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

client::Options TestBroker::options() const {
  client::Options o;
  o.host = "127.0.0.1";
  o.port = port_;
  o.request_timeout = std::chrono::seconds(10);
  return o;
}

std::unique_ptr<client::Connection> TestBroker::connect(std::string name) const {
  auto o = options();
  o.client_name = std::move(name);
  auto c = client::Connection::connect(o);
  INFO("connect: " << c.error().to_string());
  REQUIRE(c.ok());
  return std::move(c).value();
}

int TestBroker::stop(std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  const bool exited = eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; },
                                 std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  if (!exited) return -1;
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void TestBroker::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string TestBroker::log() const {
  std::ifstream f(dir_ / "sluiced.log");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

HoldingConsumer::HoldingConsumer(const TestBroker& broker, const std::string& queue,
                                 std::uint32_t credit) {
  const auto out_file = broker.dir() / ("holding-" + queue);
  std::vector<std::string> args = {"/proc/self/exe", "--hold-consumer",
                                   std::to_string(broker.port()), queue, std::to_string(credit)};
  pid_ = spawn(args, out_file, STDOUT_FILENO);
  const std::string expected = "holding " + std::to_string(credit);
  const bool holding = eventually([&] {
    std::ifstream f(out_file);
    std::string line;
    return std::getline(f, line) && line == expected;
  });
  REQUIRE(holding);
}

HoldingConsumer::~HoldingConsumer() {
  kill9();
}

void HoldingConsumer::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

client::Message text_message(std::string payload) {
  client::Message m;
  m.payload = std::move(payload);
  return m;
}

std::uint64_t proc_status_kib(pid_t pid, std::string_view field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with(field)) return std::stoull(line.substr(field.size()));
  return 0;
}

CommandResult run_command(const std::string& command, const std::string& input) {
  auto dir = make_temp_dir("sluice-cmd");
  const auto in_path = dir / "stdin";
  {
    std::ofstream f(in_path);
    f << input;
  }
  CommandResult result;
  FILE* p = ::popen((command + " < " + in_path.string()).c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) result.out.append(buf, n);
  const int status = ::pclose(p);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return result;
}

}  // namespace sluice::test
