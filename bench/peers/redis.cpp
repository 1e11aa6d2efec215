// Redis as a reliable list queue, the pattern its documentation gives for
// at-least-once work queues: producers LPUSH; each consumer moves a message
// to a processing list of its own (BLMOVE queue processing RIGHT LEFT) and,
// once handled, acks by LREM from that list. A consumer keeps `prefetch`
// BLMOVEs pipelined (its credit); the RESP encoding is written here.
#include <atomic>
#include <charconv>
#include <string>

#include "stream.hpp"

namespace sluice::bench::peers {
namespace {

void append_command(std::string& out, std::initializer_list<std::string_view> args) {
  out += '*';
  out += std::to_string(args.size());
  out += "\r\n";
  for (std::string_view a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out += a;
    out += "\r\n";
  }
}

/// One RESP2 reply at the start of [in, in + n): its type byte, and for a
/// bulk string its bytes (`nil` for $-1 and *-1). 0 when it is not whole yet.
struct Reply {
  char type = 0;
  bool nil = false;
  std::string_view text;  // the line after the type byte, or the bulk's bytes
  std::size_t size = 0;   // bytes the reply spans
};

Reply next_reply(const char* in, std::size_t n) {
  const std::string_view have(in, n);
  const auto eol = have.find("\r\n");
  if (eol == std::string_view::npos || eol == 0) return {};
  Reply r{in[0], false, have.substr(1, eol - 1), eol + 2};
  if (r.type == '$' || r.type == '*') {
    long long len = 0;
    std::from_chars(r.text.data(), r.text.data() + r.text.size(), len);
    if (len < 0) {
      r.nil = true;
      return r;
    }
    if (r.type == '*') return r;  // not sent by the commands used here
    const std::size_t end = eol + 2 + static_cast<std::size_t>(len) + 2;
    if (end > n) return {};
    r.text = have.substr(eol + 2, static_cast<std::size_t>(len));
    r.size = end;
  }
  return r;
}

Socket connect_to(const PeerOptions& o, std::string& error) {
  Socket s = Socket::connect(o.host, o.port, error);
  if (!s.open()) error = "redis: " + error;
  return s;
}

class RedisProducer final : public StreamProducer {
 public:
  RedisProducer(Socket s, const PeerOptions& o)
      : StreamProducer(std::move(s), {}, o.window), queue_(o.queue) {
    start_reader();
  }
  ~RedisProducer() override { stop_reader(); }

 private:
  void encode_publish(std::string& out, std::string_view payload) override {
    append_command(out, {"LPUSH", queue_, payload});
  }
  std::size_t parse_confirms(const char* in, std::size_t n, std::uint64_t& confirmed,
                             std::uint64_t& failed, std::string& error) override {
    std::size_t used = 0;
    for (Reply r; (r = next_reply(in + used, n - used)).size != 0; used += r.size) {
      if (r.type == ':') {
        ++confirmed;
      } else if (r.type == '-') {
        ++failed;
      } else {
        error = "redis: unexpected reply to LPUSH";
        return kProtocolError;
      }
    }
    return used;
  }
  std::string queue_;
};

class RedisConsumer final : public StreamConsumer {
 public:
  RedisConsumer(Socket s, const PeerOptions& o, int index)
      : StreamConsumer(std::move(s), {}),
        queue_(o.queue),
        processing_(o.queue + ":processing:" + std::to_string(index)),
        prefetch_(o.prefetch) {}

  ~RedisConsumer() override { stop(); }

 private:
  // A blocking move that gives up after a second, so that a consumer of an
  // empty queue asks again rather than holding the connection forever.
  void fetch(std::string& out) {
    append_command(out, {"BLMOVE", queue_, processing_, "RIGHT", "LEFT", "1"});
  }

  void begin(std::string& out) override {
    for (std::uint32_t i = 0; i < prefetch_; ++i) fetch(out);
  }
  std::size_t parse(const char* in, std::size_t n, std::string& out, const Handler& handler,
                    std::string& error) override {
    std::size_t used = 0;
    for (Reply r; (r = next_reply(in + used, n - used)).size != 0; used += r.size) {
      if (r.type == '$' && !r.nil) {
        handler(r.text);
        // The ack: take this message off the processing list (it was pushed
        // on the left, so searching from the right finds the oldest first).
        append_command(out, {"LREM", processing_, "-1", r.text});
        fetch(out);
      } else if (r.nil) {
        fetch(out);  // BLMOVE timed out on an empty queue
      } else if (r.type == '-') {
        error = "redis: " + std::string(r.text);
        return kProtocolError;
      }  // ':' is LREM's count
    }
    return used;
  }
  std::string queue_, processing_;
  std::uint32_t prefetch_;
};

class Redis final : public Peer {
 public:
  explicit Redis(const PeerOptions& o) : options_(o) {}

  std::string prepare() override {
    std::string error;
    Socket s = connect_to(options_, error);
    if (!s.open()) return error;
    std::string out;
    append_command(out, {"DEL", options_.queue});
    for (int i = 0; i < 256; ++i)
      append_command(out, {"DEL", options_.queue + ":processing:" + std::to_string(i)});
    if (!s.write_all(out)) return "redis: connection lost";
    InputBuffer in;
    for (int i = 0; i < 257; ++i) {
      std::string line;
      if (!read_line(s, in, line)) return "redis: connection lost";
      if (!line.empty() && line[0] == '-') return "redis: " + line.substr(1);
    }
    return {};
  }
  std::unique_ptr<Producer> producer(std::string& error) override {
    Socket s = connect_to(options_, error);
    if (!s.open()) return nullptr;
    return std::make_unique<RedisProducer>(std::move(s), options_);
  }
  std::unique_ptr<Consumer> consumer(std::string& error) override {
    Socket s = connect_to(options_, error);
    if (!s.open()) return nullptr;
    return std::make_unique<RedisConsumer>(std::move(s), options_, next_consumer_++);
  }

 private:
  PeerOptions options_;
  std::atomic<int> next_consumer_{0};
};

}  // namespace

std::unique_ptr<Peer> make_redis(const PeerOptions& options) {
  return std::make_unique<Redis>(options);
}

}  // namespace sluice::bench::peers
