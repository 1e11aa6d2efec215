#include "stream.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

namespace sluice::bench::peers {

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

Socket Socket::connect(const std::string& host, std::uint16_t port, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    error = host + ": " + ::gai_strerror(rc);
    return {};
  }
  error = "no address for " + host;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype, a->ai_protocol));
    if (!s.open()) continue;
    if (::connect(s.fd_, a->ai_addr, a->ai_addrlen) == 0) {
      int one = 1;
      ::setsockopt(s.fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::freeaddrinfo(found);
      error.clear();
      return s;
    }
    error = host + ":" + service + ": " + std::strerror(errno);
  }
  ::freeaddrinfo(found);
  return {};
}

bool Socket::write_all(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

long Socket::read_some(char* into, std::size_t capacity, bool wait) {
  for (;;) {
    const ssize_t n = ::recv(fd_, into, capacity, wait ? 0 : MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    return static_cast<long>(n);
  }
}

void Socket::shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

bool InputBuffer::fill(Socket& socket) {
  return read(socket, true);
}

bool InputBuffer::fill_ready(Socket& socket) {
  return read(socket, false);
}

bool InputBuffer::read(Socket& socket, bool wait) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (end_ == bytes_.size()) {
    if (begin_ > 0) {
      std::memmove(bytes_.data(), bytes_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    } else {
      bytes_.resize(bytes_.size() * 2);
    }
  }
  const long n = socket.read_some(bytes_.data() + end_, bytes_.size() - end_, wait);
  if (n <= 0) return false;
  end_ += static_cast<std::size_t>(n);
  return true;
}

bool read_line(Socket& socket, InputBuffer& in, std::string& line) {
  for (;;) {
    const std::string_view have(in.data(), in.size());
    if (const auto eol = have.find("\r\n"); eol != std::string_view::npos) {
      line.assign(have.substr(0, eol));
      in.consume(eol + 2);
      return true;
    }
    if (!in.fill(socket)) return false;
  }
}

// ---- StreamProducer ----

StreamProducer::StreamProducer(Socket socket, InputBuffer leftover, std::uint32_t window)
    : socket_(std::move(socket)), in_(std::move(leftover)), window_(window) {
  out_.reserve(1 << 17);
}

StreamProducer::~StreamProducer() {
  stop_reader();
}

void StreamProducer::stop_reader() {
  socket_.shutdown();
  if (reader_.joinable()) reader_.join();
}

void StreamProducer::start_reader() {
  reader_ = std::thread([this] { read_loop(); });
}

void StreamProducer::read_loop() {
  std::string error;
  for (;;) {
    std::uint64_t confirmed = 0, failed = 0;
    const std::size_t used = parse_confirms(in_.data(), in_.size(), confirmed, failed, error);
    if (used == kProtocolError) {
      std::fprintf(stderr, "sluice-compare: producer: %s\n", error.c_str());
      break;
    }
    in_.consume(used);
    if (confirmed + failed != 0) {
      failed_.fetch_add(failed, std::memory_order_relaxed);
      settled_.fetch_add(confirmed + failed, std::memory_order_release);
      { std::lock_guard lock(settled_mutex_); }
      settled_cv_.notify_all();
    }
    if (!in_.fill(socket_)) break;
  }
  broken_.store(true);
  { std::lock_guard lock(settled_mutex_); }
  settled_cv_.notify_all();
}

void StreamProducer::publish(std::string_view payload) {
  encode_publish(out_, payload);
  ++sent_;
  if (out_.size() >= (1u << 16)) flush();
  while (sent_ - settled_.load(std::memory_order_acquire) >= window_ && !broken_.load()) {
    flush();
    std::unique_lock lock(settled_mutex_);
    settled_cv_.wait(lock, [this] {
      return sent_ - settled_.load(std::memory_order_acquire) < window_ || broken_.load();
    });
  }
}

void StreamProducer::flush() {
  if (out_.empty()) return;
  if (!socket_.write_all(out_)) broken_.store(true);
  out_.clear();
}

bool StreamProducer::wait_confirms(std::chrono::seconds timeout) {
  flush();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (settled_.load(std::memory_order_acquire) < sent_) {
    if (broken_.load() || std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// ---- StreamConsumer ----

StreamConsumer::StreamConsumer(Socket socket, InputBuffer leftover)
    : socket_(std::move(socket)), in_(std::move(leftover)) {}

StreamConsumer::~StreamConsumer() {
  stop();
}

void StreamConsumer::start(Handler handler) {
  thread_ = std::thread([this, h = std::move(handler)]() mutable { loop(std::move(h)); });
}

void StreamConsumer::stop() {
  stopping_.store(true);
  socket_.shutdown();
  if (thread_.joinable()) thread_.join();
}

std::string StreamConsumer::error() const {
  std::lock_guard lock(error_mutex_);
  return error_;
}

void StreamConsumer::loop(Handler handler) {
  std::string out, error;
  out.reserve(1 << 16);
  begin(out);
  bool ok = socket_.write_all(out);
  out.clear();
  while (ok) {
    const std::size_t used = parse(in_.data(), in_.size(), out, handler, error);
    if (used == kProtocolError) break;
    in_.consume(used);
    // Servers that write each delivery on its own (beanstalkd, Redis) are
    // read a few hundred bytes at a time: read what else has arrived before
    // writing, so that acks go out in batches rather than one write each.
    if (out.size() < (1u << 15) && in_.fill_ready(socket_)) continue;
    if (!out.empty()) {
      if (!socket_.write_all(out)) break;
      out.clear();
    }
    if (!in_.fill(socket_)) {
      if (error.empty() && !stopping_.load()) error = "the broker closed the connection";
      break;
    }
  }
  if (stopping_.load()) return;
  if (error.empty()) error = "the connection failed";
  std::lock_guard lock(error_mutex_);
  error_ = error;
}

}  // namespace sluice::bench::peers
