#include "http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

namespace sluice::test {

namespace {
/// A TCP connection to 127.0.0.1:`port`, or -1.
int connect_to(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
}  // namespace

std::string HttpResult::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return "";
}

HttpResult http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body,
                        const std::vector<std::pair<std::string, std::string>>& headers) {
  HttpResult result;
  const int fd = connect_to(port);
  if (fd < 0) return result;
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& [k, v] : headers) request += k + ": " + v + "\r\n";
  request += "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  request += body;
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) before reading it all
    sent += static_cast<std::size_t>(n);
  }
  std::string raw;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) return result;
  result.status = std::atoi(raw.c_str() + 9);
  std::size_t line = raw.find("\r\n") + 2;
  while (line < head_end) {
    const auto end = raw.find("\r\n", line);
    const auto colon = raw.find(':', line);
    if (colon != std::string::npos && colon < end) {
      std::string name = raw.substr(line, colon - line);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = raw.substr(colon + 1, end - colon - 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      result.headers.emplace_back(std::move(name), std::move(value));
    }
    line = end + 2;
  }
  result.body = raw.substr(head_end + 4);
  return result;
}

std::size_t RawHttpExchange::responses() const {
  std::size_t n = 0;
  for (std::size_t at = received.find("HTTP/1.1 "); at != std::string::npos;
       at = received.find("HTTP/1.1 ", at + 1))
    if (at == 0 || received[at - 1] == '\n') ++n;
  return n;
}

int RawHttpExchange::first_status() const {
  return received.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(received.c_str() + 9) : 0;
}

RawHttpExchange http_raw(std::uint16_t port, const std::string& bytes,
                         std::chrono::milliseconds timeout, bool one_byte_per_segment) {
  RawHttpExchange result;
  const int fd = connect_to(port);
  if (fd < 0) return result;
  if (one_byte_per_segment) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  for (std::size_t sent = 0; sent < bytes.size();) {
    const std::size_t chunk = one_byte_per_segment ? 1 : bytes.size() - sent;
    const ssize_t n = ::send(fd, bytes.data() + sent, chunk, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
    if (one_byte_per_segment) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) break;  // quiet: still open
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      result.closed = true;
      break;
    }
    result.received.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return result;
}

}  // namespace sluice::test
