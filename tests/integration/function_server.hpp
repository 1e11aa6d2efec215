// The HTTP function the trigger tests push into: tests/integration/function_server.py,
// its own process on a loopback socket (HTTP, or HTTPS with a certificate),
// told how to behave and asked what it saw.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "http_client.hpp"
#include "test_broker.hpp"

namespace sluice::test {

inline constexpr const char* kSecret = "a-signing-secret-of-sufficient-length";

/// The function: a Python HTTP server in its own process.
class FunctionServer {
 public:
  /// With `cert` and `key` (PEM files) it speaks HTTPS.
  explicit FunctionServer(const std::string& cert = {}, const std::string& key = {})
      : dir_(make_temp_dir("sluice-function")), tls_(!cert.empty()) {
    std::ofstream(dir_ / "secret") << kSecret << "\n";
    const auto port_file = dir_ / "port";
    std::vector<std::string> args = {
        "/usr/bin/python3", SLUICE_SOURCE_DIR "/tests/integration/function_server.py",
        "--port-file",      port_file.string(),
        "--secret-file",    (dir_ / "secret").string()};
    if (tls_) args.insert(args.end(), {"--cert", cert, "--key", key});
    pid_ = spawn(args, dir_ / "function.log", STDERR_FILENO);
    // "PORT", or with HTTPS "PORT CONTROL_PORT": the test talks to it in plain HTTP.
    REQUIRE(eventually([&] {
      std::ifstream f(port_file);
      if (!(f >> port_)) return false;
      if (!(f >> control_port_)) control_port_ = port_;
      return true;
    }));
  }
  ~FunctionServer() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string url() const {
    return (tls_ ? "https://localhost:" : "http://127.0.0.1:") + std::to_string(port_) + "/fn";
  }
  void control(const nlohmann::json& what) const {
    REQUIRE(http_request(control_port_, "POST", "/_control", what.dump()).status == 204);
  }
  nlohmann::json stats() const {
    auto r = http_request(control_port_, "GET", "/_stats");
    REQUIRE(r.status == 200);
    return nlohmann::json::parse(r.body);
  }
  /// Every message id the function was sent, with how many times.
  std::map<std::string, int> seen() const {
    auto r = http_request(control_port_, "GET", "/_seen");
    REQUIRE(r.status == 200);
    std::map<std::string, int> out;
    const nlohmann::json answer = nlohmann::json::parse(r.body);
    for (const auto& [id, n] : answer["seen"].items()) out[id] = n.get<int>();
    return out;
  }
  std::size_t requests() const {
    auto r = http_request(control_port_, "GET", "/_seen");
    REQUIRE(r.status == 200);
    return nlohmann::json::parse(r.body)["requests"].get<std::size_t>();
  }

 private:
  std::filesystem::path dir_;
  bool tls_ = false;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t control_port_ = 0;
};

}  // namespace sluice::test
