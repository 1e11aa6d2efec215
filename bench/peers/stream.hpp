// Blocking TCP plumbing shared by the peers that sluice-compare speaks to over
// their own wire protocols: a socket, a buffered reader for handshakes, and
// the two pipelined loops (a producer whose confirms are read by a thread of
// its own; a consumer that parses deliveries and writes acks in batches).
// A peer only encodes and parses; the loops, buffers and threads are here.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "peer.hpp"

namespace sluice::bench::peers {

/// A connected TCP socket (TCP_NODELAY), closed on destruction.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Socket& operator=(Socket&& other) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();

  /// An open socket, or one that is not open() after setting `error`.
  static Socket connect(const std::string& host, std::uint16_t port, std::string& error);
  bool open() const { return fd_ >= 0; }
  bool write_all(std::string_view bytes);
  /// Bytes read (> 0), or <= 0 when the peer closed or the socket failed;
  /// with `wait` false, -1 at once when nothing is there to read.
  long read_some(char* into, std::size_t capacity, bool wait = true);
  /// Wakes a thread blocked in read_some() (it then returns 0).
  void shutdown();

 private:
  int fd_ = -1;
};

/// Bytes read from a socket and not consumed yet.
class InputBuffer {
 public:
  const char* data() const { return bytes_.data() + begin_; }
  std::size_t size() const { return end_ - begin_; }
  void consume(std::size_t n) { begin_ += n; }
  /// Reads once more from `socket` (growing the buffer if it is full);
  /// false when the socket closed or failed.
  bool fill(Socket& socket);
  /// Reads what is there without waiting; false when nothing was.
  bool fill_ready(Socket& socket);

 private:
  bool read(Socket& socket, bool wait);

  std::vector<char> bytes_ = std::vector<char>(1 << 16);
  std::size_t begin_ = 0, end_ = 0;
};

/// Reads from `socket` into `in` until a "\r\n"-terminated line is there;
/// sets `line` to it without the terminator and consumes it; false when the
/// socket closed first.
bool read_line(Socket& socket, InputBuffer& in, std::string& line);

/// A producer over one socket: publish() encodes into a buffer that is
/// written when it passes 64 KiB, when the window is full and on flush(); a
/// reader thread parses the confirms.
class StreamProducer : public Producer {
 public:
  ~StreamProducer() override;
  void publish(std::string_view payload) final;
  void flush() final;
  bool wait_confirms(std::chrono::seconds timeout) final;
  std::uint64_t failures() const final { return failed_.load(); }

 protected:
  StreamProducer(Socket socket, InputBuffer leftover, std::uint32_t window);
  /// Appends the wire form of one publish to `out`.
  virtual void encode_publish(std::string& out, std::string_view payload) = 0;
  /// Parses whole confirms at the start of [in, in + n): adds them to
  /// `confirmed` and refusals to `failed`, returns the bytes used, or
  /// kProtocolError (after setting error) on input it cannot parse.
  virtual std::size_t parse_confirms(const char* in, std::size_t n, std::uint64_t& confirmed,
                                     std::uint64_t& failed, std::string& error) = 0;
  /// Starts the reader thread; derived constructors call it last.
  void start_reader();
  /// Closes the socket and joins the reader. Derived destructors call it
  /// first: the reader calls parse_confirms(), which must not outlive them.
  void stop_reader();

 public:
  static constexpr std::size_t kProtocolError = static_cast<std::size_t>(-1);

 private:
  void read_loop();

  Socket socket_;
  InputBuffer in_;
  std::uint32_t window_;
  std::string out_;
  std::uint64_t sent_ = 0;
  std::atomic<std::uint64_t> settled_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::atomic<bool> broken_{false};
  std::mutex settled_mutex_;  // with settled_cv_: the publisher waits for room in the window
  std::condition_variable settled_cv_;
  std::thread reader_;
};

/// A consumer over one socket: begin() writes the first requests, then each
/// read is parsed and what the parse appended (acks, further fetches) is
/// written in one write.
class StreamConsumer : public Consumer {
 public:
  ~StreamConsumer() override;
  void start(Handler handler) final;
  void stop() final;
  std::string error() const final;

  static constexpr std::size_t kProtocolError = StreamProducer::kProtocolError;

 protected:
  StreamConsumer(Socket socket, InputBuffer leftover);
  // Derived destructors call stop() first: the loop calls parse().

  /// The first requests (fetches, pull requests, subscriptions).
  virtual void begin(std::string& out) = 0;
  /// Parses whole deliveries and replies at the start of [in, in + n): calls
  /// `handler` for each payload, appends its ack and any further fetch to
  /// `out`; returns the bytes used or kProtocolError after setting `error`.
  virtual std::size_t parse(const char* in, std::size_t n, std::string& out, const Handler& handler,
                            std::string& error) = 0;

 private:
  void loop(Handler handler);

  Socket socket_;
  InputBuffer in_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex error_mutex_;
  std::string error_;
};

}  // namespace sluice::bench::peers
