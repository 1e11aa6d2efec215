// NATS JetStream over the NATS client protocol (INFO, CONNECT, PUB, SUB,
// MSG, HMSG, PING/PONG), used as a work queue the way JetStream users run
// one at-least-once: a stream with workqueue retention, one durable pull
// consumer that every consumer connection shares, a PubAck per publish and an
// explicit ack per delivery.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <random>

#include "stream.hpp"

namespace sluice::bench::peers {
namespace {

constexpr std::size_t kProtocolError = StreamProducer::kProtocolError;
constexpr const char* kDurable = "sluice-bench";

// One message from the server; the views point into the read buffer.
struct Frame {
  enum Kind { kMsg, kPing, kPong, kOther } kind = kOther;  // kOther: INFO, +OK
  std::string_view subject, reply, headers, payload;       // kMsg (MSG and HMSG)
};

void append_number(std::string& out, std::uint64_t value) {
  char digits[20];
  out.append(digits, std::to_chars(digits, digits + sizeof digits, value).ptr);
}

bool parse_number(std::string_view text, std::uint64_t& value) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return ec == std::errc() && end == text.data() + text.size();
}

// Parses the server message at the start of [in, in + n) into `f`: its size,
// 0 while it is not whole yet, or kProtocolError after setting `error` (an
// -ERR is one: the server closes the connection after most of them).
std::size_t next_frame(const char* in, std::size_t n, Frame& f, std::string& error) {
  const std::string_view have(in, n);
  const std::size_t eol = have.find("\r\n");
  if (eol == std::string_view::npos) return 0;
  const std::string_view line = have.substr(0, eol);
  f = Frame{};
  if (line.starts_with("MSG ") || line.starts_with("HMSG ")) {
    // MSG <subject> <sid> [reply] <size>
    // HMSG <subject> <sid> [reply] <header size> <size>, the headers first in the body
    std::string_view words[6];
    std::size_t count = 0;
    for (std::size_t at = 0; at < line.size() && count < 6;) {
      const std::size_t end = std::min(line.find(' ', at), line.size());
      if (end > at) words[count++] = line.substr(at, end - at);
      at = end + 1;
    }
    const std::size_t fixed = line[0] == 'H' ? 5 : 4;
    std::uint64_t size = 0, header_size = 0;
    if ((count != fixed && count != fixed + 1) || !parse_number(words[count - 1], size) ||
        (fixed == 5 && (!parse_number(words[count - 2], header_size) || header_size > size))) {
      error = "nats: bad message line: " + std::string(line);
      return kProtocolError;
    }
    const std::size_t total = eol + 2 + size + 2;
    if (n < total) return 0;
    if (have.substr(total - 2, 2) != "\r\n") {
      error = "nats: message body not followed by CRLF: " + std::string(line);
      return kProtocolError;
    }
    f.kind = Frame::kMsg;
    f.subject = words[1];
    if (count == fixed + 1) f.reply = words[3];
    f.headers = have.substr(eol + 2, header_size);
    f.payload = have.substr(eol + 2 + header_size, size - header_size);
    return total;
  }
  if (line == "PING") {
    f.kind = Frame::kPing;
  } else if (line == "PONG") {
    f.kind = Frame::kPong;
  } else if (line.starts_with("-ERR")) {
    error = "nats-server: " + std::string(line);
    return kProtocolError;
  } else if (line != "+OK" && !line.starts_with("INFO ")) {
    error = "nats: unexpected from the server: " + std::string(line.substr(0, 200));
    return kProtocolError;
  }
  return eol + 2;
}

// The status of a message whose headers start "NATS/1.0 408 Request Timeout"
// (408 here), or 0 for a message without one.
int status_of(const Frame& f) {
  std::uint64_t status = 0;
  if (!f.headers.starts_with("NATS/1.0 ") || f.headers.size() < 12) return 0;
  return parse_number(f.headers.substr(9, 3), status) ? static_cast<int>(status) : 0;
}

// Reads the next server message into `f`, valid until the next read; false
// after setting `error`.
bool read_frame(Socket& socket, InputBuffer& in, Frame& f, std::string& error) {
  for (;;) {
    const std::size_t used = next_frame(in.data(), in.size(), f, error);
    if (used == kProtocolError) return false;
    if (used > 0) {
      in.consume(used);
      return true;
    }
    if (!in.fill(socket)) {
      error = "nats: the server closed the connection";
      return false;
    }
  }
}

std::string new_inbox() {
  std::random_device device;
  char name[40];
  std::snprintf(name, sizeof name, "_INBOX.%08x%08x", device(), device());
  return name;
}

// Connects and handshakes: the server's INFO, then CONNECT, `subscriptions`
// and a PING, whose PONG says the server has taken all of them (with verbose
// off nothing else answers them). Not open() after setting `error`.
Socket dial(const PeerOptions& options, const std::string& subscriptions, InputBuffer& in,
            std::string& error) {
  Socket socket = Socket::connect(options.host, options.port, error);
  if (!socket.open()) {
    error = "nats: " + error;
    return {};
  }
  std::string info;
  if (!read_line(socket, in, info) || !info.starts_with("INFO ")) {
    error = "nats: " + options.host + ":" + std::to_string(options.port) +
            " did not greet with INFO; is it a nats-server?";
    return {};
  }
  // headers: we take HMSG (JetStream statuses); no_responders: a request to a
  // subject nobody serves gets a 503 status instead of silence.
  const std::string hello =
      R"(CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,)"
      R"("lang":"cpp","version":"0"})"
      "\r\n" +
      subscriptions + "PING\r\n";
  if (!socket.write_all(hello)) {
    error = "nats: the connection failed during the handshake";
    return {};
  }
  Frame f;
  do {
    if (!read_frame(socket, in, f, error)) return {};
  } while (f.kind != Frame::kPong);
  return socket;
}

// A JetStream API call: publishes `body` to `subject` with `inbox` as the
// reply subject. Empty on success, else the description of the reply's
// "error" object (the server writes compact JSON, so it is found as written)
// or why there was no reply.
std::string api_call(Socket& socket, InputBuffer& in, const std::string& inbox,
                     const std::string& subject, const std::string& body) {
  std::string out = "PUB " + subject + " " + inbox + " ";
  append_number(out, body.size());
  out += "\r\n" + body + "\r\n";
  if (!socket.write_all(out)) return "the connection failed";
  std::string error;
  Frame f;
  do {
    if (!read_frame(socket, in, f, error)) return error;
    if (f.kind == Frame::kPing && !socket.write_all("PONG\r\n")) return "the connection failed";
  } while (f.kind != Frame::kMsg);
  if (status_of(f) == 503) return "no responders; was nats-server started with -js?";
  const std::string_view reply = f.payload;
  const std::size_t at = reply.find(R"("error")");
  if (at == std::string_view::npos) return {};
  constexpr std::string_view kKey = R"("description":")";
  const std::size_t key = reply.find(kKey, at);
  if (key == std::string_view::npos) return std::string(reply.substr(at));
  const std::size_t begin = key + kKey.size();
  return std::string(reply.substr(begin, reply.find('"', begin) - begin));
}

class NatsProducer final : public StreamProducer {
 public:
  // Every PubAck comes back to one reply subject, `inbox`: the window only
  // counts them, so nothing needs to tell them apart.
  NatsProducer(Socket socket, InputBuffer in, std::uint32_t window, const std::string& subject,
               const std::string& inbox)
      : StreamProducer(std::move(socket), std::move(in), window),
        prefix_("PUB " + subject + " " + inbox + " ") {
    start_reader();
  }
  ~NatsProducer() override { stop_reader(); }

 private:
  void encode_publish(std::string& out, std::string_view payload) override {
    // The server PINGs 2 s after the connect and every 2 minutes, and drops a
    // client after two unanswered ones. The reader must not write while
    // publish() does, so it leaves the PONG to go out with the next publish.
    if (pong_owed_.load(std::memory_order_relaxed) && pong_owed_.exchange(false)) {
      out += "PONG\r\n";
    }
    out += prefix_;
    append_number(out, payload.size());
    out += "\r\n";
    out += payload;
    out += "\r\n";
  }

  std::size_t parse_confirms(const char* in, std::size_t n, std::uint64_t& confirmed,
                             std::uint64_t& failed, std::string& error) override {
    std::size_t used = 0;
    for (Frame f;;) {
      const std::size_t size = next_frame(in + used, n - used, f, error);
      if (size == kProtocolError) return size;
      if (size == 0) return used;
      used += size;
      if (f.kind == Frame::kPing) pong_owed_.store(true);
      if (f.kind != Frame::kMsg) continue;
      // A PubAck is {"stream":S,"seq":N}; a refusal carries an "error"
      // object, and a 503 status means no stream took the subject.
      if (status_of(f) != 0 || f.payload.find(R"("error")") != std::string_view::npos) {
        ++failed;
      } else {
        ++confirmed;
      }
    }
  }

  const std::string prefix_;
  std::atomic<bool> pong_owed_{false};
};

class NatsConsumer final : public StreamConsumer {
 public:
  // Pull requests reply to `inbox`.<batch> (the connection subscribed to
  // `inbox`.*): deliveries and statuses for a request come to its subject.
  NatsConsumer(Socket socket, InputBuffer in, const std::string& stream, const std::string& inbox,
               std::uint32_t prefetch)
      : StreamConsumer(std::move(socket), std::move(in)),
        next_("PUB $JS.API.CONSUMER.MSG.NEXT." + stream + "." + kDurable + " " + inbox + "."),
        prefetch_(std::max<std::uint32_t>(prefetch, 1)),
        step_(std::max<std::uint32_t>(prefetch / 2, 1)) {}
  // The loop calls parse(): it must end before this object does.
  ~NatsConsumer() override { stop(); }

 private:
  void begin(std::string& out) override { pull(out, prefetch_); }

  // A pull request for `batch` messages. Without "expires" it waits on the
  // server until all have come; the messages requested plus those delivered
  // and not yet re-requested always add up to prefetch.
  void pull(std::string& out, std::uint64_t batch) {
    std::string body = R"({"batch":)";
    append_number(body, batch);
    body += '}';
    out += next_;
    append_number(out, batch);
    out += ' ';
    append_number(out, body.size());
    out += "\r\n" + body + "\r\n";
  }

  std::size_t parse(const char* in, std::size_t n, std::string& out, const Handler& handler,
                    std::string& error) override {
    std::size_t used = 0;
    for (Frame f;;) {
      const std::size_t size = next_frame(in + used, n - used, f, error);
      if (size == kProtocolError) return size;
      if (size == 0) return used;
      used += size;
      if (f.kind == Frame::kPing) out += "PONG\r\n";
      if (f.kind != Frame::kMsg) continue;
      const int status = status_of(f);
      if (status == 0) {
        handler(f.payload);
        out += "PUB ";  // an empty message to the delivery's $JS.ACK... subject acks it
        out += f.reply;
        out += " 0\r\n\r\n";
        if (++acked_ == step_) {
          acked_ = 0;
          pull(out, step_);
        }
      } else if ((status == 404 || status == 408 || status == 409) &&
                 !f.headers.starts_with("NATS/1.0 409 Consumer Deleted")) {
        // The request ended early (timeout, MaxWaiting, leadership change...).
        // Nats-Pending-Messages says how much of its batch did not come; a
        // status sent before the request was queued has no such header and
        // ends all of it, the batch in its reply subject.
        std::string_view pending = f.subject.substr(f.subject.rfind('.') + 1);
        constexpr std::string_view kPending = "\r\nNats-Pending-Messages: ";
        if (const std::size_t at = f.headers.find(kPending); at != std::string_view::npos) {
          pending = f.headers.substr(at + kPending.size());
          pending = pending.substr(0, pending.find('\r'));
        }
        std::uint64_t batch = 0;
        if (!parse_number(pending, batch)) {
          error = "nats: bad pull status: " + std::string(f.headers);
          return kProtocolError;
        }
        if (batch > 0) pull(out, batch);
      } else if (status != 100) {  // 100: idle heartbeats, never asked for
        // Anything else (Consumer Deleted, Bad Request...) ends the run: a
        // pull request to a consumer that is gone gets no answer at all.
        error =
            "nats: pull request answered " + std::string(f.headers.substr(0, f.headers.find('\r')));
        return kProtocolError;
      }
    }
  }

  const std::string next_;
  const std::uint32_t prefetch_, step_;
  std::uint32_t acked_ = 0;  // since the last pull
};

class NatsPeer final : public Peer {
 public:
  // The stream's name is also its one subject. Stream names may not hold
  // '.', '*', '>', whitespace or path separators.
  explicit NatsPeer(const PeerOptions& options) : options_(options), stream_(options.queue) {
    for (char& c : stream_) {
      if (c == '.' || c == '*' || c == '>' || c == '/' || c == '\\' ||
          std::isspace(static_cast<unsigned char>(c))) {
        c = '_';
      }
    }
  }

  std::string prepare() override {
    const std::string inbox = new_inbox();
    InputBuffer in;
    std::string error;
    Socket socket = dial(options_, "SUB " + inbox + " 1\r\n", in, error);
    if (!socket.open()) return error;
    // A fresh stream each run: delete the last one, and its consumer with it.
    error = api_call(socket, in, inbox, "$JS.API.STREAM.DELETE." + stream_, "");
    if (!error.empty() && error != "stream not found") {
      return "nats: deleting stream " + stream_ + ": " + error;
    }
    const std::string stream_config = R"({"name":")" + stream_ + R"(","subjects":[")" + stream_ +
                                      R"("],"retention":"workqueue","storage":")" +
                                      (options_.durable ? "file" : "memory") +
                                      R"(","discard":"old","num_replicas":1})";
    error = api_call(socket, in, inbox, "$JS.API.STREAM.CREATE." + stream_, stream_config);
    if (!error.empty()) return "nats: creating stream " + stream_ + ": " + error;
    // ack_wait is in nanoseconds: 30 s before an unacked message goes to
    // another consumer. The consumers' prefetch bounds what is unacked.
    const std::string consumer_config =
        R"({"stream_name":")" + stream_ + R"(","config":{"durable_name":")" + kDurable +
        R"(","ack_policy":"explicit","ack_wait":30000000000,"max_ack_pending":1000000,)"
        R"("max_waiting":512,"deliver_policy":"all"}})";
    error =
        api_call(socket, in, inbox, "$JS.API.CONSUMER.DURABLE.CREATE." + stream_ + "." + kDurable,
                 consumer_config);
    if (!error.empty()) return "nats: creating consumer " + std::string(kDurable) + ": " + error;
    return {};
  }

  std::unique_ptr<Producer> producer(std::string& error) override {
    const std::string inbox = new_inbox();
    InputBuffer in;
    Socket socket = dial(options_, "SUB " + inbox + " 1\r\n", in, error);
    if (!socket.open()) return nullptr;
    return std::make_unique<NatsProducer>(std::move(socket), std::move(in), options_.window,
                                          stream_, inbox);
  }

  std::unique_ptr<Consumer> consumer(std::string& error) override {
    const std::string inbox = new_inbox();
    InputBuffer in;
    Socket socket = dial(options_, "SUB " + inbox + ".* 2\r\n", in, error);
    if (!socket.open()) return nullptr;
    return std::make_unique<NatsConsumer>(std::move(socket), std::move(in), stream_, inbox,
                                          options_.prefetch);
  }

 private:
  const PeerOptions options_;
  std::string stream_;
};

}  // namespace

std::unique_ptr<Peer> make_nats(const PeerOptions& options) {
  return std::make_unique<NatsPeer>(options);
}

}  // namespace sluice::bench::peers
