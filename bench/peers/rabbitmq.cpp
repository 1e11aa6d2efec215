// RabbitMQ for sluice-compare: AMQP 0-9-1 written and parsed here, over the
// blocking socket of stream.hpp (no client library). Each connection logs in
// as guest/guest on vhost "/" without heartbeats and works on channel 1. The
// producer publishes to the default exchange (routing key = queue) with
// publisher confirms; the consumer uses basic.consume with manual acks under
// a basic.qos prefetch, and acks each delivery singly.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "stream.hpp"

namespace sluice::bench::peers {
namespace {

constexpr std::uint8_t kMethod = 1, kHeader = 2, kBody = 3, kHeartbeat = 8;
constexpr char kFrameEnd = '\xCE';
constexpr std::size_t kMaxFrame = 1 << 26;  // far above any frame-max; larger means garbage
constexpr std::size_t kProtocolError = StreamProducer::kProtocolError;

constexpr std::uint32_t method_id(std::uint32_t class_id, std::uint32_t method) {
  return class_id << 16 | method;
}
constexpr std::uint32_t kConnectionStart = method_id(10, 10),
                        kConnectionStartOk = method_id(10, 11), kConnectionTune = method_id(10, 30),
                        kConnectionTuneOk = method_id(10, 31), kConnectionOpen = method_id(10, 40),
                        kConnectionOpenOk = method_id(10, 41), kConnectionClose = method_id(10, 50),
                        kConnectionCloseOk = method_id(10, 51), kChannelOpen = method_id(20, 10),
                        kChannelOpenOk = method_id(20, 11), kChannelClose = method_id(20, 40),
                        kQueueDeclare = method_id(50, 10), kQueueDeclareOk = method_id(50, 11),
                        kQueuePurge = method_id(50, 30), kQueuePurgeOk = method_id(50, 31),
                        kBasicQos = method_id(60, 10), kBasicQosOk = method_id(60, 11),
                        kBasicConsume = method_id(60, 20), kBasicConsumeOk = method_id(60, 21),
                        kBasicPublish = method_id(60, 40), kBasicDeliver = method_id(60, 60),
                        kBasicAck = method_id(60, 80), kBasicNack = method_id(60, 120),
                        kConfirmSelect = method_id(85, 10), kConfirmSelectOk = method_id(85, 11);

// ---- Encoding: integers are big-endian; a frame's size is patched in last ----

template <int Bytes>
void put(std::string& out, std::uint64_t value) {
  for (int i = Bytes - 1; i >= 0; --i) out.push_back(static_cast<char>(value >> (8 * i)));
}

void put_shortstr(std::string& out, std::string_view s) {
  put<1>(out, s.size());
  out.append(s);
}

std::size_t begin_frame(std::string& out, std::uint8_t type, std::uint16_t channel) {
  put<1>(out, type);
  put<2>(out, channel);
  const std::size_t at = out.size();
  put<4>(out, 0);
  return at;
}

std::size_t begin_method(std::string& out, std::uint16_t channel, std::uint32_t id) {
  const std::size_t at = begin_frame(out, kMethod, channel);
  put<4>(out, id);
  return at;
}

void end_frame(std::string& out, std::size_t at) {
  const std::size_t size = out.size() - at - 4;
  for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>(size >> (8 * (3 - i)));
  out.push_back(kFrameEnd);
}

// ---- Decoding ----

/// Reads fields in order; past the end it yields zeros and short strings.
struct Fields {
  std::string_view rest;

  std::uint64_t number(std::size_t bytes) {
    if (rest.size() < bytes) return 0;
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < bytes; ++i) value = value << 8 | static_cast<std::uint8_t>(rest[i]);
    rest.remove_prefix(bytes);
    return value;
  }
  std::string_view shortstr() {
    const std::size_t size = number(1);
    const std::string_view s = rest.substr(0, size);
    rest.remove_prefix(s.size());
    return s;
  }
};

struct Frame {
  std::uint8_t type = 0;
  std::uint32_t method = 0;  // method_id() of a method frame
  Fields fields;             // the payload; of a method frame, its arguments
};

/// The frame at the start of [in, in + n): its size on the wire, 0 when it is
/// not all there yet, or kProtocolError (after setting `error`).
std::size_t next_frame(const char* in, std::size_t n, Frame& frame, std::string& error) {
  if (n < 7) return 0;
  Fields head{{in, 7}};
  frame.type = static_cast<std::uint8_t>(head.number(1));
  head.number(2);  // the channel: 0 for the connection's methods, else ours
  const std::size_t size = head.number(4);
  const bool known = frame.type == kMethod || frame.type == kHeader || frame.type == kBody ||
                     frame.type == kHeartbeat;
  if (!known || size > kMaxFrame || (n >= 8 + size && in[7 + size] != kFrameEnd)) {
    error = "rabbitmq: the server does not speak AMQP 0-9-1 (bad frame)";
    return kProtocolError;
  }
  if (n < 8 + size) return 0;
  frame.fields = Fields{{in + 7, size}};
  frame.method = frame.type == kMethod ? static_cast<std::uint32_t>(frame.fields.number(4)) : 0;
  return 8 + size;
}

/// Why a frame nobody expected ends the conversation; a Connection.Close or
/// Channel.Close carries the broker's reply code and text.
std::string unexpected(Frame frame) {
  if (frame.method == kConnectionClose || frame.method == kChannelClose) {
    const std::uint64_t code = frame.fields.number(2);
    return std::string("rabbitmq: the server closed the ") +
           (frame.method == kConnectionClose ? "connection: " : "channel: ") +
           std::to_string(code) + " " + std::string(frame.fields.shortstr());
  }
  if (frame.type != kMethod)
    return "rabbitmq: unexpected AMQP frame of type " + std::to_string(frame.type);
  return "rabbitmq: unexpected AMQP method " + std::to_string(frame.method >> 16) + "." +
         std::to_string(frame.method & 0xffff);
}

// ---- Handshake ----

struct Connection {
  Socket socket;
  InputBuffer in;
  std::uint32_t frame_max = 0;  // as tuned; 0 = no limit
};

/// Writes `out` and reads frames (skipping heartbeats) until the method
/// `want`, left in `reply`; `what` names it in errors.
bool call(Connection& c, std::string_view out, std::uint32_t want, Frame& reply, std::string& error,
          std::string_view what) {
  if (!c.socket.write_all(out)) {
    error = "rabbitmq: the connection failed";
    return false;
  }
  for (;;) {
    const std::size_t size = next_frame(c.in.data(), c.in.size(), reply, error);
    if (size == kProtocolError) return false;
    if (size == 0) {
      if (c.in.fill(c.socket)) continue;
      error = "rabbitmq: the server closed the connection while we waited for " + std::string(what);
      return false;
    }
    c.in.consume(size);  // reply.fields stays valid until the next fill()
    if (reply.type == kHeartbeat) continue;
    if (reply.method == want) return true;
    error = unexpected(reply);
    return false;
  }
}

/// Connects, logs in and opens channel 1; false after setting `error`.
bool open(const PeerOptions& options, Connection& c, std::string& error) {
  c.socket = Socket::connect(options.host, options.port, error);
  if (!c.socket.open()) {
    error = "rabbitmq: " + error;
    return false;
  }
  Frame reply;
  if (!call(c, {"AMQP\0\0\x09\x01", 8}, kConnectionStart, reply, error, "Connection.Start")) {
    return false;
  }
  std::string out;
  std::size_t at = begin_method(out, 0, kConnectionStartOk);
  put<4>(out, 0);  // client-properties: an empty table
  put_shortstr(out, "PLAIN");
  const std::string_view response("\0guest\0guest", 12);
  put<4>(out, response.size());
  out.append(response);
  put_shortstr(out, "en_US");
  end_frame(out, at);
  // A refused login just closes the socket: RabbitMQ only sends Connection.Close
  // to clients announcing the authentication_failure_close capability.
  if (!call(c, out, kConnectionTune, reply, error,
            "Connection.Tune (refused login guest/guest? guest may only log in over loopback)")) {
    return false;
  }
  const std::uint64_t channel_max = reply.fields.number(2);
  c.frame_max = static_cast<std::uint32_t>(reply.fields.number(4));
  // Tune-Ok, Connection.Open and Channel.Open in one write.
  out.clear();
  at = begin_method(out, 0, kConnectionTuneOk);
  put<2>(out, channel_max);
  put<4>(out, c.frame_max);
  put<2>(out, 0);  // no heartbeats
  end_frame(out, at);
  at = begin_method(out, 0, kConnectionOpen);
  put_shortstr(out, "/");
  put_shortstr(out, "");  // reserved
  put<1>(out, 0);         // reserved bit
  end_frame(out, at);
  at = begin_method(out, 1, kChannelOpen);
  put_shortstr(out, "");  // reserved
  end_frame(out, at);
  return call(c, out, kConnectionOpenOk, reply, error, "Connection.Open-Ok") &&
         call(c, {}, kChannelOpenOk, reply, error, "Channel.Open-Ok");
}

// ---- Producer ----

class RabbitProducer final : public StreamProducer {
 public:
  RabbitProducer(Connection c, const PeerOptions& options)
      : StreamProducer(std::move(c.socket), std::move(c.in), options.window),
        queue_(options.queue),
        durable_(options.durable),
        max_body_(c.frame_max == 0 ? std::string_view::npos : c.frame_max - 8) {
    start_reader();
  }
  ~RabbitProducer() override { stop_reader(); }

 protected:
  void encode_publish(std::string& out, std::string_view payload) override {
    std::size_t at = begin_method(out, 1, kBasicPublish);
    put<2>(out, 0);         // reserved
    put_shortstr(out, "");  // the default exchange routes by queue name
    put_shortstr(out, queue_);
    put<1>(out, 0);  // neither mandatory nor immediate
    end_frame(out, at);
    at = begin_frame(out, kHeader, 1);
    put<2>(out, 60);  // class basic
    put<2>(out, 0);   // weight
    put<8>(out, payload.size());
    if (durable_) {
      put<2>(out, 0x1000);  // property flags: only delivery-mode is present,
      put<1>(out, 2);       // and is 2, persistent
    } else {
      put<2>(out, 0);
    }
    end_frame(out, at);
    for (std::size_t i = 0; i < payload.size(); i += max_body_) {
      at = begin_frame(out, kBody, 1);
      out.append(payload.substr(i, max_body_));
      end_frame(out, at);
    }
  }

  std::size_t parse_confirms(const char* in, std::size_t n, std::uint64_t& confirmed,
                             std::uint64_t& failed, std::string& error) override {
    std::size_t used = 0;
    for (;;) {
      Frame frame;
      const std::size_t size = next_frame(in + used, n - used, frame, error);
      if (size == kProtocolError || size == 0) return size == 0 ? used : size;
      used += size;
      if (frame.type == kHeartbeat) continue;
      if (frame.method != kBasicAck && frame.method != kBasicNack) {
        error = unexpected(frame);
        return kProtocolError;
      }
      const std::uint64_t tag = frame.fields.number(8);
      const bool multiple = (frame.fields.number(1) & 1) != 0;
      (frame.method == kBasicAck ? confirmed : failed) += settle(tag, multiple);
    }
  }

 private:
  /// How many publishes a confirm settles. Tags count publishes from 1, and
  /// confirms can come out of order: RabbitMQ confirms the tags below the
  /// oldest unconfirmed one with one multiple ack, and those past it singly.
  std::uint64_t settle(std::uint64_t tag, bool multiple) {
    std::uint64_t count = 0;
    if (multiple && tag > all_through_) {
      count = tag - all_through_;
      while (!ahead_.empty() && *ahead_.begin() <= tag) {
        ahead_.erase(ahead_.begin());
        --count;
      }
      all_through_ = tag;
    } else if (!multiple && tag > all_through_ && ahead_.insert(tag).second) {
      count = 1;
    }
    while (ahead_.erase(all_through_ + 1) == 1) ++all_through_;
    return count;
  }

  const std::string queue_;
  const bool durable_;
  const std::size_t max_body_;     // most payload bytes in one body frame
  std::uint64_t all_through_ = 0;  // every tag up to this one is settled
  std::set<std::uint64_t> ahead_;  // tags settled singly past all_through_
};

// ---- Consumer ----

class RabbitConsumer final : public StreamConsumer {
 public:
  RabbitConsumer(Connection c, std::string queue)
      : StreamConsumer(std::move(c.socket), std::move(c.in)), queue_(std::move(queue)) {}
  // The loop calls parse(): stop it while this object is still whole.
  ~RabbitConsumer() override { stop(); }

 protected:
  void begin(std::string& out) override {
    const std::size_t at = begin_method(out, 1, kBasicConsume);
    put<2>(out, 0);  // reserved
    put_shortstr(out, queue_);
    put_shortstr(out, "c");  // consumer tag
    put<1>(out, 0);          // no-local, no-ack (so acks are manual), exclusive, no-wait: off
    put<4>(out, 0);          // arguments: an empty table
    end_frame(out, at);
  }

  /// A delivery is a Basic.Deliver frame, a content header and body frames
  /// up to the header's body size; it is handled only once all are here.
  std::size_t parse(const char* in, std::size_t n, std::string& out, const Handler& handler,
                    std::string& error) override {
    std::size_t used = 0;
    for (;;) {
      Frame frame;
      std::size_t size = next_frame(in + used, n - used, frame, error);
      if (size == kProtocolError || size == 0) return size == 0 ? used : size;
      if (frame.type == kHeartbeat || frame.method == kBasicConsumeOk) {
        used += size;
        continue;
      }
      if (frame.method != kBasicDeliver) {
        error = unexpected(frame);
        return kProtocolError;
      }
      frame.fields.shortstr();  // consumer tag
      const std::uint64_t tag = frame.fields.number(8);
      std::size_t at = used + size;
      if ((size = next_frame(in + at, n - at, frame, error)) == 0) return used;
      if (size == kProtocolError || frame.type != kHeader) {
        if (size != kProtocolError) error = unexpected(frame);
        return kProtocolError;
      }
      at += size;
      frame.fields.number(4);  // class and weight
      const std::uint64_t body_size = frame.fields.number(8);
      std::string_view payload;
      for (std::uint64_t have = 0; have < body_size; have += frame.fields.rest.size()) {
        if ((size = next_frame(in + at, n - at, frame, error)) == 0) return used;
        if (size == kProtocolError || frame.type != kBody) {
          if (size != kProtocolError) error = unexpected(frame);
          return kProtocolError;
        }
        at += size;
        if (have == 0 && frame.fields.rest.size() == body_size) {
          payload = frame.fields.rest;  // the usual case: one body frame, no copy
        } else {
          if (have == 0) body_.clear();
          body_.append(frame.fields.rest);
          payload = body_;
        }
      }
      handler(payload);
      const std::size_t ack = begin_method(out, 1, kBasicAck);
      put<8>(out, tag);
      put<1>(out, 0);  // not multiple
      end_frame(out, ack);
      used = at;
    }
  }

 private:
  const std::string queue_;
  std::string body_;  // a payload split over several body frames
};

// ---- Peer ----

class RabbitPeer final : public Peer {
 public:
  explicit RabbitPeer(const PeerOptions& options) : options_(options) {}

  std::string prepare() override {
    Connection c;
    std::string error, out;
    if (!open(options_, c, error)) return error;
    std::size_t at = begin_method(out, 1, kQueueDeclare);
    put<2>(out, 0);  // reserved
    put_shortstr(out, options_.queue);
    // Bits from the lowest: passive, durable, exclusive, auto-delete, no-wait.
    put<1>(out, options_.durable ? 0x02 : 0);
    put<4>(out, 0);  // arguments: an empty table
    end_frame(out, at);
    at = begin_method(out, 1, kQueuePurge);  // so that each run starts empty
    put<2>(out, 0);                          // reserved
    put_shortstr(out, options_.queue);
    put<1>(out, 0);  // no-wait off
    end_frame(out, at);
    at = begin_method(out, 0, kConnectionClose);
    put<2>(out, 200);  // reply code: normal
    put_shortstr(out, "");
    put<4>(out, 0);  // class and method that caused the close: none
    end_frame(out, at);
    Frame reply;
    if (!call(c, out, kQueueDeclareOk, reply, error, "Queue.Declare-Ok") ||
        !call(c, {}, kQueuePurgeOk, reply, error, "Queue.Purge-Ok") ||
        !call(c, {}, kConnectionCloseOk, reply, error, "Connection.Close-Ok")) {
      return error;
    }
    return {};
  }

  std::unique_ptr<Producer> producer(std::string& error) override {
    Connection c;
    if (!open(options_, c, error)) return nullptr;
    std::string out;
    const std::size_t at = begin_method(out, 1, kConfirmSelect);
    put<1>(out, 0);  // no-wait off
    end_frame(out, at);
    Frame reply;
    if (!call(c, out, kConfirmSelectOk, reply, error, "Confirm.Select-Ok")) return nullptr;
    return std::make_unique<RabbitProducer>(std::move(c), options_);
  }

  std::unique_ptr<Consumer> consumer(std::string& error) override {
    Connection c;
    if (!open(options_, c, error)) return nullptr;
    std::string out;
    const std::size_t at = begin_method(out, 1, kBasicQos);
    put<4>(out, 0);  // prefetch-size: no byte limit
    put<2>(out, std::min<std::uint32_t>(options_.prefetch, 0xffff));  // a 16-bit field
    put<1>(out, 0);  // global off: the limit is this consumer's
    end_frame(out, at);
    Frame reply;
    if (!call(c, out, kBasicQosOk, reply, error, "Basic.Qos-Ok")) return nullptr;
    return std::make_unique<RabbitConsumer>(std::move(c), options_.queue);
  }

 private:
  const PeerOptions options_;
};

}  // namespace

std::unique_ptr<Peer> make_rabbitmq(const PeerOptions& options) {
  return std::make_unique<RabbitPeer>(options);
}

}  // namespace sluice::bench::peers
