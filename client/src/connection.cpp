#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "sluice/client/client.hpp"
#include "sluice/protocol/codec.hpp"
#include "sluice/security/tls.hpp"

namespace sluice::client {

namespace asio = boost::asio;
using asio::ip::tcp;
using protocol::FrameType;

std::string Error::to_string() const {
  std::string s(sluice::to_string(code));
  if (!message.empty()) s += ": " + message;
  return s;
}

std::string_view Delivery::header(std::string_view key) const noexcept {
  for (const auto& [k, v] : headers)
    if (k == key) return v;
  return {};
}

namespace {
constexpr std::size_t kReadChunk = 128 * 1024;

/// Checks a message against the protocol limits before it is queued, so a bad
/// message fails alone instead of failing the whole batch at the broker.
/// Exponential backoff with jitter: from 10 ms doubling up to 1 s, each wait a
/// random point in the upper half (so retrying producers spread out), and never
/// sooner than the broker's retry-after.
std::chrono::milliseconds backoff_delay(unsigned attempt, std::chrono::milliseconds at_least,
                                        std::mt19937& rng) {
  const std::int64_t cap = std::min<std::int64_t>(1000, std::int64_t{10} << std::min(attempt, 7u));
  std::uniform_int_distribution<std::int64_t> jitter(cap / 2, cap);
  return std::max(at_least, std::chrono::milliseconds(jitter(rng)));
}

/// Rewrites the request id of an encoded PUBLISH frame (right after length and type).
void put_request_id(std::string& frame, std::uint64_t id) {
  std::memcpy(frame.data() + protocol::kFrameHeaderBytes, &id, sizeof id);
}

/// Room in a PUBLISH frame besides its messages: length, type, request id,
/// queue name (at most 200 bytes) and count, rounded up.
constexpr std::size_t kPublishFrameOverhead = 512;

/// Bytes `encode_message` writes for this message.
std::size_t encoded_size(std::span<const protocol::Header> headers, std::string_view payload) {
  std::size_t n = 1 + 2 + 4 + payload.size();
  for (const auto& h : headers) n += 4 + h.key.size() + h.value.size();
  return n;
}

Error check_message(std::span<const protocol::Header> headers, std::string_view payload,
                    std::uint32_t max_payload, std::uint32_t max_frame) {
  if (payload.size() > max_payload)
    return {errc::payload_too_large, "payload over the broker's max_payload_bytes"};
  if (headers.size() > protocol::kMaxHeaders)
    return {errc::invalid_argument, "more than 64 headers"};
  for (const auto& h : headers) {
    if (h.key.empty() || h.key.size() > protocol::kMaxHeaderKeyBytes)
      return {errc::invalid_argument, "header key must be 1..255 bytes"};
    if (h.value.size() > protocol::kMaxHeaderValueBytes)
      return {errc::invalid_argument, "header value over 16384 bytes"};
  }
  if (encoded_size(headers, payload) + kPublishFrameOverhead > max_frame)
    return {errc::payload_too_large, "payload and headers together exceed the broker's frame size"};
  return {};
}
}  // namespace

/// A subscription as the I/O thread sees it. Counters are atomics so user
/// threads can read them.
struct SubscriptionState {
  Connection::Handler handler;
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> held{0};
  std::atomic<std::uint64_t> peak_held{0};

  void settled(std::uint64_t n = 1) { held.fetch_sub(n, std::memory_order_relaxed); }
};

class Connection::Impl {
 public:
  /// An answer the I/O thread waits for, by request id.
  struct Pending {
    std::vector<PublishCallback> publish;  // PUBLISH: one callback per message
    std::function<void(const Error&, FrameType, std::string_view)> answer;  // anything else
    // PUBLISH with queue_full retries on: the frame as sent, to send again.
    std::size_t frame_offset = 0;  // in pending_, until take_pending copies it out
    std::string frame;
    std::chrono::steady_clock::time_point retry_until;
    unsigned attempts = 0;
  };

  explicit Impl(Options options)
      : options_(std::move(options)), decoder_(protocol::kDefaultMaxFrameBytes) {}

  Error open();
  /// open()'s steps: runs the io_context until `done` or `timeout`; on timeout
  /// closes the socket (the aborted handler runs). True when done in time.
  bool run_until(const bool& done, std::chrono::milliseconds timeout);
  void start();
  void shutdown();

  void publish_async(std::string_view queue, std::span<const protocol::Header> headers,
                     std::string_view payload, PublishCallback done);
  bool wait_confirms(std::chrono::milliseconds timeout);

  template <typename T, typename Encode, typename Parse>
  Result<T> call(Encode encode, Parse parse);

  Result<std::uint32_t> subscribe(std::string_view queue, SubscribeOptions options,
                                  Handler handler);
  Error unsubscribe(std::uint32_t id);
  Error settle(FrameType type, LeaseHandle lease, std::uint32_t ms, std::string reason = {},
               std::uint8_t flags = 0);
  /// One PUBLISH frame of `messages`, waited for (retrying queue_full as configured).
  Result<std::vector<Published>> publish_frame(std::string_view queue,
                                               std::span<const Message> messages);
  SubscriptionStats subscription_stats(std::uint32_t id) const {
    std::lock_guard lk(mutex_);
    auto it = subscription_index_.find(id);
    if (it == subscription_index_.end()) return {};
    return {it->second->received.load(), it->second->held.load(), it->second->peak_held.load()};
  }

  bool on_io_thread() const noexcept { return std::this_thread::get_id() == io_thread_id_; }
  bool connected() const {
    std::lock_guard lk(mutex_);
    return !closed_;
  }
  Error last_error() const {
    std::lock_guard lk(mutex_);
    return close_error_;
  }

  std::uint32_t max_payload_bytes_ = protocol::kDefaultMaxPayloadBytes;
  std::uint32_t max_frame_bytes_ = protocol::kDefaultMaxFrameBytes;
  std::unordered_set<std::shared_ptr<asio::steady_timer>> retry_timers_;  // I/O thread
  std::mt19937 rng_{std::random_device{}()};                              // I/O thread
  std::atomic<std::uint64_t> refused_auto_acks_{0};
  std::atomic<std::uint8_t> pressure_{0};
  const Options options_;

 private:
  void read();
  void on_read(const boost::system::error_code& ec, std::size_t n);
  void handle(const protocol::Frame& frame);
  void handle_deliver(std::string_view body);
  void answer(std::uint64_t request_id, const Error& error, FrameType type, std::string_view body);
  void take_pending();
  void send_settlements();
  void flush();
  void fail_all(Error error);
  /// Completes every callback of a PUBLISH with `error`.
  void fail_publish(Pending& p, const Error& error);
  /// queue_full with retries on: sends the frame again after a backoff, if
  /// that is still before its deadline. False: give up (the caller fails it).
  bool retry_publish(Pending& p, const Error& error);

  std::uint64_t register_request(Pending pending) {
    const std::uint64_t id = next_request_id_++;
    in_flight_.emplace(id, std::move(pending));
    return id;
  }

  asio::io_context io_{1};
  // Plain TCP or TLS (open() decides); socket() is the TCP socket underneath.
  std::unique_ptr<security::Transport> transport_ =
      std::make_unique<security::Transport>(tcp::socket(io_));
  tcp::socket& socket() { return transport_->socket(); }
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::thread::id io_thread_id_;
  protocol::FrameDecoder decoder_;

  // Shared with user threads, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::string pending_;  // PUBLISH frames not yet handed to the I/O thread
  std::vector<std::pair<std::uint64_t, Pending>> pending_requests_;
  bool publish_open_ = false;
  protocol::PublishFrame open_frame_{};
  std::string open_queue_;
  std::uint32_t open_count_ = 0;
  bool wake_posted_ = false;
  std::size_t unconfirmed_ = 0;
  bool closed_ = false;
  Error close_error_;
  std::atomic<std::uint64_t> next_request_id_{1};
  std::atomic<std::uint32_t> next_subscription_id_{1};
  std::unordered_map<std::uint32_t, std::shared_ptr<SubscriptionState>> subscription_index_;

  // I/O thread only.
  std::unordered_map<std::uint64_t, Pending> in_flight_;
  std::unordered_map<std::uint32_t, std::shared_ptr<SubscriptionState>> handlers_;
  std::string out_;
  std::string writing_;
  bool writing_now_ = false;
  std::vector<protocol::Delivery> deliveries_;
  std::vector<protocol::AckEntry> acks_;
  std::vector<protocol::NackEntry> nacks_;
  std::vector<SubscriptionState*> ack_owners_;   // parallel to acks_
  std::vector<SubscriptionState*> nack_owners_;  // parallel to nacks_ (null: not ours)
  Delivery view_;
};

// ------------------------------------------------------------ connect

bool Connection::Impl::run_until(const bool& done, std::chrono::milliseconds timeout) {
  io_.run_for(timeout);
  if (!done) {
    // Give up: closing aborts the operation, whose handler then runs.
    boost::system::error_code ignored;
    socket().close(ignored);
    io_.run();
  }
  io_.restart();
  return done;
}

Error Connection::Impl::open() {
  boost::system::error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port), ec);
  if (ec) return {errc::connection_lost, "cannot resolve " + options_.host + ": " + ec.message()};
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  if (options_.tls) {
    std::string error;
    auto context = security::client_context(options_.ca_file, error);
    if (!context) return {errc::invalid_argument, error};
    transport_ = std::make_unique<security::Transport>(tcp::socket(io_), std::move(context));
    const std::string& name = options_.server_name.empty() ? options_.host : options_.server_name;
    if (!security::expect_server_name(*transport_->tls(), name))
      return {errc::invalid_argument, "cannot verify the server name " + name};
  }

  // Connect and handshake with deadlines: run the io_context for a bounded time.
  bool done = false;
  asio::async_connect(socket(), endpoints,
                      [&](const boost::system::error_code& e, const tcp::endpoint&) {
                        ec = e;
                        done = true;
                      });
  if (!run_until(done, options_.connect_timeout))
    return {errc::timed_out, "connect to " + where + " timed out"};
  if (ec) return {errc::connection_lost, "cannot connect to " + where + ": " + ec.message()};
  socket().set_option(tcp::no_delay(true), ec);

  if (auto* tls = transport_->tls()) {
    done = false;
    tls->async_handshake(asio::ssl::stream_base::client, [&](const boost::system::error_code& e) {
      ec = e;
      done = true;
    });
    if (!run_until(done, options_.connect_timeout))
      return {errc::timed_out, "TLS handshake with " + where + " timed out"};
    if (ec)
      return {errc::connection_lost,
              "TLS handshake with " + where + " failed: " + security::describe_tls_error(ec)};
  }

  std::string hello_frame;
  protocol::Hello hello;
  hello.client_name = options_.client_name;
  hello.token = options_.token;
  protocol::encode_hello(hello_frame, hello);
  done = false;
  asio::async_write(*transport_, asio::buffer(hello_frame),
                    [&](const boost::system::error_code& e, std::size_t) {
                      ec = e;
                      done = true;
                    });
  if (!run_until(done, options_.request_timeout))
    return {errc::timed_out, "sending HELLO to " + where + " timed out"};
  if (ec) return {errc::connection_lost, "sending HELLO failed: " + ec.message()};

  protocol::Frame frame;
  errc framing = errc::ok;
  bool got = false;
  Error result{errc::timed_out, "no HELLO_OK from the broker"};
  std::function<void()> read_one = [&] {
    auto space = decoder_.prepare(4096);
    transport_->async_read_some(
        asio::buffer(space.data(), space.size()),
        [&](const boost::system::error_code& e, std::size_t n) {
          if (e) {
            result = {errc::connection_lost,
                      "handshake read failed: " + (e == asio::error::eof
                                                       ? std::string("the broker closed the "
                                                                     "connection (a TLS port?)")
                                                       : security::describe_tls_error(e))};
            got = true;
            return;
          }
          decoder_.commit(n);
          auto r = decoder_.next(frame, framing);
          if (r == protocol::FrameDecoder::Result::need_more) return read_one();
          got = true;
          if (r == protocol::FrameDecoder::Result::error) {
            result = {framing, "bad frame during handshake"};
          } else if (static_cast<FrameType>(frame.type) == FrameType::error) {
            protocol::ErrorFrame err;
            protocol::decode_error(frame.body, err);
            result = {err.code, std::string(err.message)};
          } else if (static_cast<FrameType>(frame.type) != FrameType::hello_ok) {
            result = {errc::malformed_frame, "expected HELLO_OK"};
          } else {
            protocol::HelloOk ok;
            if (auto s = protocol::decode_hello_ok(frame.body, ok); !s) {
              result = {s.code, s.detail};
            } else {
              max_payload_bytes_ = ok.max_payload_bytes;
              max_frame_bytes_ = ok.max_frame_bytes;
              // Answers may be larger than what we may send: a CONFIRM carries
              // 8 bytes per id for messages as small as 7 bytes (PROTOCOL.md).
              decoder_ = protocol::FrameDecoder(
                  2 * std::max(ok.max_frame_bytes, protocol::kDefaultMaxFrameBytes) + 65536);
              result = {};
            }
          }
        });
  };
  read_one();
  run_until(got, options_.request_timeout);
  return result;
}

void Connection::Impl::start() {
  work_.emplace(io_.get_executor());
  read();
  thread_ = std::thread([this] { io_.run(); });
  io_thread_id_ = thread_.get_id();
}

void Connection::Impl::shutdown() {
  asio::post(io_, [this] {
    fail_all({errc::connection_lost, "the connection was closed by the client"});
    boost::system::error_code ignored;
    socket().shutdown(tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
    work_.reset();
  });
  if (thread_.joinable()) thread_.join();
}

// ------------------------------------------------------------ I/O thread

void Connection::Impl::read() {
  auto space = decoder_.prepare(kReadChunk);
  transport_->async_read_some(
      asio::buffer(space.data(), space.size()),
      [this](const boost::system::error_code& ec, std::size_t n) { on_read(ec, n); });
}

void Connection::Impl::on_read(const boost::system::error_code& ec, std::size_t n) {
  if (ec) {
    fail_all(
        {errc::connection_lost, ec == asio::error::eof || ec == asio::ssl::error::stream_truncated
                                    ? "the broker closed the connection"
                                    : ec.message()});
    return;
  }
  decoder_.commit(n);
  protocol::Frame frame;
  errc framing = errc::ok;
  for (;;) {
    auto r = decoder_.next(frame, framing);
    if (r == protocol::FrameDecoder::Result::need_more) break;
    if (r == protocol::FrameDecoder::Result::error) {
      fail_all({framing, "the broker sent a frame this client cannot read"});
      return;
    }
    handle(frame);
  }
  send_settlements();
  flush();
  {
    std::lock_guard lk(mutex_);
    if (closed_) return;
  }
  read();
}

void Connection::Impl::handle(const protocol::Frame& frame) {
  switch (static_cast<FrameType>(frame.type)) {
    case FrameType::deliver:
      handle_deliver(frame.body);
      return;
    case FrameType::confirm: {
      protocol::Confirm c;
      if (!protocol::decode_confirm(frame.body, c)) {
        fail_all({errc::malformed_frame, "the broker sent a malformed CONFIRM"});
        return;
      }
      pressure_.store(c.pressure, std::memory_order_relaxed);
      auto it = in_flight_.find(c.request_id);
      if (it == in_flight_.end()) return;
      Pending p = std::move(it->second);
      in_flight_.erase(it);
      if (p.answer) {  // a blocking publish/publish_batch
        p.answer({}, FrameType::confirm, frame.body);
        return;
      }
      const std::size_t n = p.publish.size();
      for (std::size_t i = 0; i < n; ++i) {
        if (!p.publish[i]) continue;  // fire and forget
        p.publish[i](i < c.count ? Error{} : Error{errc::internal, "confirm without an id"},
                     c.message_id(static_cast<std::uint32_t>(i)));
      }
      std::lock_guard lk(mutex_);
      unconfirmed_ -= n;
      cv_.notify_all();
      return;
    }
    case FrameType::error: {
      protocol::ErrorFrame e;
      if (!protocol::decode_error(frame.body, e)) return;
      Error err{e.code, std::string(e.message), std::chrono::milliseconds(e.retry_after_ms)};
      if (e.request_id != 0) {
        answer(e.request_id, err, FrameType::error, frame.body);
      } else if (closes_connection(e.code)) {
        fail_all(err);
      } else {
        std::lock_guard lk(mutex_);
        close_error_ = err;  // a connection-level complaint worth keeping
      }
      return;
    }
    case FrameType::ok:
    case FrameType::settled:
    case FrameType::stats_result:
    case FrameType::dead_letters_result: {
      protocol::Reader r(frame.body);
      const std::uint64_t request_id = r.u64();
      if (r.ok()) answer(request_id, {}, static_cast<FrameType>(frame.type), frame.body);
      return;
    }
    default:
      return;  // nothing else is sent to clients in version 1
  }
}

void Connection::Impl::answer(std::uint64_t request_id, const Error& error, FrameType type,
                              std::string_view body) {
  auto it = in_flight_.find(request_id);
  if (it == in_flight_.end()) return;
  Pending p = std::move(it->second);
  in_flight_.erase(it);
  if (!p.publish.empty()) {
    if (error.code == errc::queue_full && !p.frame.empty() && retry_publish(p, error)) return;
    fail_publish(p, error);
  } else if (p.answer) {
    p.answer(error, type, body);
  }
}

void Connection::Impl::fail_publish(Pending& p, const Error& error) {
  for (auto& cb : p.publish)
    if (cb) cb(error, 0);
  std::lock_guard lk(mutex_);
  unconfirmed_ -= p.publish.size();
  cv_.notify_all();
}

bool Connection::Impl::retry_publish(Pending& p, const Error& error) {
  const auto delay = backoff_delay(p.attempts++, error.retry_after, rng_);
  if (std::chrono::steady_clock::now() + delay > p.retry_until) return false;
  auto timer = std::make_shared<asio::steady_timer>(io_, delay);
  retry_timers_.insert(timer);
  timer->async_wait([this, timer, p = std::move(p)](const boost::system::error_code& ec) mutable {
    retry_timers_.erase(timer);
    Error closed_with;
    {
      std::lock_guard lk(mutex_);
      if (closed_) closed_with = close_error_;
    }
    if (ec || closed_with) {
      fail_publish(p,
                   closed_with ? closed_with : Error{errc::connection_lost, "connection closed"});
      return;
    }
    const std::uint64_t id = next_request_id_++;
    put_request_id(p.frame, id);
    out_.append(p.frame);
    in_flight_.emplace(id, std::move(p));
    flush();
  });
  return true;
}

void Connection::Impl::handle_deliver(std::string_view body) {
  std::uint32_t subscription_id = 0;
  if (!protocol::decode_deliver(body, subscription_id, deliveries_)) return;
  auto it = handlers_.find(subscription_id);
  SubscriptionState* sub = it == handlers_.end() ? nullptr : it->second.get();
  for (const auto& d : deliveries_) {
    if (sub == nullptr) {
      nacks_.push_back({d.message_id, d.lease_token, 0, 0, {}});  // not ours any more: give it back
      nack_owners_.push_back(nullptr);
      continue;
    }
    sub->received.fetch_add(1, std::memory_order_relaxed);
    const auto held = sub->held.fetch_add(1, std::memory_order_relaxed) + 1;
    if (held > sub->peak_held.load(std::memory_order_relaxed))
      sub->peak_held.store(held, std::memory_order_relaxed);
    protocol::MessageParts parts;
    if (!protocol::parse_message(d.message, parts)) {
      // The broker validated it at publish, so this is corruption: give it back.
      nacks_.push_back({d.message_id, d.lease_token, 0, 0, {}});
      nack_owners_.push_back(sub);
      continue;
    }
    view_.subscription_id = subscription_id;
    view_.message_id = d.message_id;
    view_.lease_token = d.lease_token;
    view_.attempt = d.attempt;
    view_.publish_time_us = static_cast<std::int64_t>(d.publish_time_us);
    view_.payload = parts.payload;
    view_.headers.clear();
    protocol::for_each_header(
        parts, [&](const protocol::Header& h) { view_.headers.emplace_back(h.key, h.value); });
    switch (sub->handler(view_)) {
      case Disposition::ack:
        acks_.push_back({d.message_id, d.lease_token});
        ack_owners_.push_back(sub);
        break;
      case Disposition::nack:
        nacks_.push_back({d.message_id, d.lease_token, 0, 0, {}});
        nack_owners_.push_back(sub);
        break;
      case Disposition::manual:
        break;
    }
  }
}

void Connection::Impl::send_settlements() {
  auto count_refusals = [this](const Error&, FrameType type, std::string_view body) {
    if (type != FrameType::settled) return;
    std::uint64_t request_id;
    std::vector<protocol::SettleFailure> failures;
    if (protocol::decode_settled(body, request_id, failures)) refused_auto_acks_ += failures.size();
  };
  const auto settle_request = [&] {
    Pending p;
    p.answer = count_refusals;
    return register_request(std::move(p));
  };
  // A delivery stops counting as held only now, when its settlement is on its
  // way: the broker cannot have freed the credit any earlier.
  if (!acks_.empty()) {
    protocol::encode_ack(out_, settle_request(), acks_);
    for (auto* owner : ack_owners_) owner->settled();
    acks_.clear();
    ack_owners_.clear();
  }
  if (!nacks_.empty()) {
    protocol::encode_nack(out_, settle_request(), nacks_);
    for (auto* owner : nack_owners_)
      if (owner) owner->settled();
    nacks_.clear();
    nack_owners_.clear();
  }
}

void Connection::Impl::take_pending() {
  {
    std::lock_guard lk(mutex_);
    wake_posted_ = false;
    if (publish_open_) {
      protocol::end_publish(pending_, open_frame_, open_count_);
      publish_open_ = false;
    }
    // With queue_full retries on, each PUBLISH keeps a copy of its frame to resend.
    const bool keep_frames = options_.retry_queue_full_for.count() > 0;
    for (std::size_t i = 0; i < pending_requests_.size(); ++i) {
      auto& [id, p] = pending_requests_[i];
      if (keep_frames) {
        const std::size_t end = i + 1 < pending_requests_.size()
                                    ? pending_requests_[i + 1].second.frame_offset
                                    : pending_.size();
        p.frame.assign(pending_, p.frame_offset, end - p.frame_offset);
        p.retry_until = std::chrono::steady_clock::now() + options_.retry_queue_full_for;
      }
      in_flight_.emplace(id, std::move(p));
    }
    pending_requests_.clear();
    if (out_.empty())
      out_.swap(pending_);
    else
      out_.append(pending_);
    pending_.clear();
  }
  flush();
}

void Connection::Impl::flush() {
  if (writing_now_ || out_.empty()) return;
  std::swap(out_, writing_);
  writing_now_ = true;
  asio::async_write(*transport_, asio::buffer(writing_),
                    [this](const boost::system::error_code& ec, std::size_t) {
                      writing_now_ = false;
                      writing_.clear();
                      if (ec) {
                        fail_all({errc::connection_lost, "write failed: " + ec.message()});
                        return;
                      }
                      flush();
                    });
}

void Connection::Impl::fail_all(Error error) {
  std::vector<std::pair<std::uint64_t, Pending>> not_sent;
  {
    std::lock_guard lk(mutex_);
    if (!closed_) {
      closed_ = true;
      close_error_ = error;
    }
    not_sent = std::move(pending_requests_);
    pending_requests_.clear();
    pending_.clear();
    publish_open_ = false;
  }
  auto fail = [&](Pending& p) {
    if (!p.publish.empty()) {
      fail_publish(p, error);
    } else if (p.answer) {
      p.answer(error, FrameType::error, {});
    }
  };
  auto in_flight = std::move(in_flight_);
  in_flight_.clear();
  for (auto& [id, p] : in_flight) fail(p);
  for (const auto& timer : retry_timers_) timer->cancel();  // their handlers fail them
  for (auto& [id, p] : not_sent) fail(p);
  handlers_.clear();
  boost::system::error_code ignored;
  socket().close(ignored);
  cv_.notify_all();
}

// ------------------------------------------------------------ user threads

void Connection::Impl::publish_async(std::string_view queue,
                                     std::span<const protocol::Header> headers,
                                     std::string_view payload, PublishCallback done) {
  if (Error e = check_message(headers, payload, max_payload_bytes_, max_frame_bytes_)) {
    if (done) done(e, 0);
    return;
  }
  if (!protocol::valid_queue_name(queue)) {
    if (done)
      done(
          {errc::invalid_queue_name, "queue name must be " + std::string(protocol::kQueueNameRule)},
          0);
    return;
  }
  std::unique_lock lk(mutex_);
  // From the I/O thread we must not wait (nothing would ever confirm).
  if (!on_io_thread())
    cv_.wait(lk, [&] { return unconfirmed_ < options_.max_unconfirmed || closed_; });
  if (closed_) {
    Error e = close_error_;
    lk.unlock();
    if (done) done(e, 0);
    return;
  }
  const std::size_t batch_limit =
      std::min<std::size_t>(options_.max_batch_bytes, max_frame_bytes_ - kPublishFrameOverhead);
  if (!publish_open_ || open_queue_ != queue ||
      pending_.size() - open_frame_.frame_offset + encoded_size(headers, payload) > batch_limit) {
    if (publish_open_) protocol::end_publish(pending_, open_frame_, open_count_);
    const std::uint64_t id = next_request_id_++;
    open_frame_ = protocol::begin_publish(pending_, id, queue);
    open_queue_.assign(queue);
    open_count_ = 0;
    publish_open_ = true;
    pending_requests_.emplace_back(id, Pending{});
    pending_requests_.back().second.frame_offset = open_frame_.frame_offset;
  }
  protocol::encode_message(pending_, headers, payload);
  ++open_count_;
  pending_requests_.back().second.publish.push_back(std::move(done));
  ++unconfirmed_;
  if (!wake_posted_) {
    wake_posted_ = true;
    asio::post(io_, [this] { take_pending(); });
  }
}

bool Connection::Impl::wait_confirms(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mutex_);
  return cv_.wait_for(lk, timeout, [&] { return unconfirmed_ == 0 || closed_; });
}

template <typename T, typename Encode, typename Parse>
Result<T> Connection::Impl::call(Encode encode, Parse parse) {
  if (on_io_thread())
    return Error{errc::invalid_argument,
                 "blocking call from the client's I/O thread (inside a handler or callback)"};
  auto promise = std::make_shared<std::promise<Result<T>>>();
  auto future = promise->get_future();
  asio::post(io_, [this, promise, encode = std::move(encode), parse = std::move(parse)]() mutable {
    {
      std::lock_guard lk(mutex_);
      if (closed_) {
        promise->set_value(Result<T>(close_error_));
        return;
      }
    }
    Pending p;
    p.answer = [promise, parse = std::move(parse)](const Error& e, FrameType type,
                                                   std::string_view body) {
      if (e)
        promise->set_value(Result<T>(e));
      else
        promise->set_value(parse(type, body));
    };
    encode(register_request(std::move(p)), out_);
    flush();
  });
  if (future.wait_for(options_.request_timeout) != std::future_status::ready)
    return Error{errc::timed_out, "no answer from the broker within request_timeout"};
  return future.get();
}

Result<std::uint32_t> Connection::Impl::subscribe(std::string_view queue, SubscribeOptions so,
                                                  Handler handler) {
  const std::uint32_t id = next_subscription_id_++;
  auto state = std::make_shared<SubscriptionState>();
  state->handler = std::move(handler);
  {
    std::lock_guard lk(mutex_);
    subscription_index_[id] = state;
  }
  std::string q(queue);
  auto result = call<std::uint32_t>(
      [this, id, q, so, state](std::uint64_t request_id, std::string& out) mutable {
        handlers_[id] = state;  // before SUBSCRIBE: deliveries may follow at once
        protocol::Subscribe s;
        s.request_id = request_id;
        s.subscription_id = id;
        s.queue = q;
        s.max_in_flight = so.max_in_flight;
        s.lease_ms = static_cast<std::uint32_t>(so.lease.count());
        s.rate_milli = static_cast<std::uint32_t>(std::llround(so.rate * 1000));
        s.burst = std::max<std::uint32_t>(so.burst, 1);
        protocol::encode_subscribe(out, s);
      },
      [id](FrameType, std::string_view) { return Result<std::uint32_t>(id); });
  if (!result) {
    const bool maybe_open = result.error().code == errc::timed_out;
    asio::post(io_, [this, id, maybe_open] {
      handlers_.erase(id);
      // The broker may have opened it after we stopped waiting: close it, or
      // every delivery would bounce off the missing handler forever.
      if (maybe_open) protocol::encode_unsubscribe(out_, {register_request({}), id});
      flush();
    });
    std::lock_guard lk(mutex_);
    subscription_index_.erase(id);
  }
  return result;
}

Error Connection::Impl::unsubscribe(std::uint32_t id) {
  auto result = call<bool>(
      [id](std::uint64_t request_id, std::string& out) {
        protocol::encode_unsubscribe(out, {request_id, id});
      },
      [](FrameType, std::string_view) { return Result<bool>(true); });
  if (result) {
    asio::post(io_, [this, id] { handlers_.erase(id); });
    std::lock_guard lk(mutex_);
    subscription_index_.erase(id);
  }
  return result.error();
}

Error Connection::Impl::settle(FrameType type, LeaseHandle lease, std::uint32_t ms,
                               std::string reason, std::uint8_t flags) {
  auto result = call<bool>(
      [this, type, lease, ms, reason = std::move(reason), flags](std::uint64_t request_id,
                                                                 std::string& out) {
        if (type != FrameType::extend) {
          auto it = handlers_.find(lease.subscription_id);
          if (it != handlers_.end()) it->second->settled();
        }
        if (type == FrameType::ack) {
          const protocol::AckEntry e{lease.message_id, lease.lease_token};
          protocol::encode_ack(out, request_id, {&e, 1});
        } else if (type == FrameType::nack) {
          const protocol::NackEntry e{lease.message_id, lease.lease_token, ms, flags, reason};
          protocol::encode_nack(out, request_id, {&e, 1});
        } else {
          const protocol::ExtendEntry e{lease.message_id, lease.lease_token, ms};
          protocol::encode_extend(out, request_id, {&e, 1});
        }
      },
      [](FrameType, std::string_view body) -> Result<bool> {
        std::uint64_t request_id;
        std::vector<protocol::SettleFailure> failures;
        if (!protocol::decode_settled(body, request_id, failures))
          return Error{errc::malformed_frame, "bad SETTLED"};
        if (!failures.empty())
          return Error{failures[0].code, std::string(to_string(failures[0].code))};
        return true;
      });
  return result.error();
}

// ------------------------------------------------------------ Connection

Connection::Connection(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Connection::~Connection() {
  if (impl_->on_io_thread()) {
    // Joining the I/O thread from itself cannot work; this is a programming error.
    std::fputs("sluice::client: a Connection was destroyed inside its own handler or callback\n",
               stderr);
    std::abort();
  }
  impl_->shutdown();
}

Result<std::unique_ptr<Connection>> Connection::connect(const Options& options) {
  auto impl = std::make_shared<Impl>(options);
  if (Error e = impl->open()) return e;
  impl->start();
  return std::unique_ptr<Connection>(new Connection(std::move(impl)));
}

void Connection::publish_async(std::string_view queue, const Message& message,
                               PublishCallback done) {
  std::vector<protocol::Header> headers;
  headers.reserve(message.headers.size());
  for (const auto& [k, v] : message.headers) headers.push_back({k, v});
  impl_->publish_async(queue, headers, message.payload, std::move(done));
}

void Connection::publish_async(std::string_view queue, std::string_view payload,
                               PublishCallback done) {
  impl_->publish_async(queue, {}, payload, std::move(done));
}

Result<std::uint64_t> Connection::publish(std::string_view queue, const Message& message) {
  auto ids = publish_batch(queue, {&message, 1});
  if (!ids) return ids.error();
  return ids.value().at(0);
}

Result<Published> Connection::publish_checked(std::string_view queue, const Message& message) {
  auto outcomes = impl_->publish_frame(queue, {&message, 1});
  if (!outcomes) return outcomes.error();
  return outcomes.value().at(0);
}

Result<std::vector<std::uint64_t>> Connection::publish_batch(std::string_view queue,
                                                             std::span<const Message> messages) {
  auto outcomes = impl_->publish_frame(queue, messages);
  if (!outcomes) return outcomes.error();
  std::vector<std::uint64_t> ids;
  ids.reserve(outcomes.value().size());
  for (const auto& p : outcomes.value()) ids.push_back(p.id);
  return ids;
}

Result<std::vector<Published>> Connection::Impl::publish_frame(std::string_view queue,
                                                               std::span<const Message> messages) {
  if (messages.empty()) return std::vector<Published>{};
  if (!protocol::valid_queue_name(queue))
    return Error{errc::invalid_queue_name,
                 "queue name must be " + std::string(protocol::kQueueNameRule)};
  std::size_t frame_bytes = kPublishFrameOverhead;
  for (const auto& m : messages) {
    std::vector<protocol::Header> headers;
    for (const auto& [k, v] : m.headers) headers.push_back({k, v});
    if (Error e = check_message(headers, m.payload, max_payload_bytes_, max_frame_bytes_)) return e;
    frame_bytes += encoded_size(headers, m.payload);
  }
  if (frame_bytes > max_frame_bytes_)
    return Error{errc::invalid_argument,
                 "batch of " + std::to_string(frame_bytes) +
                     " bytes exceeds the broker's max frame; split it or use publish_async"};
  std::string q(queue);
  auto copy = std::make_shared<const std::vector<Message>>(messages.begin(), messages.end());
  auto attempt = [&] {
    return call<std::vector<Published>>(
        [q, copy](std::uint64_t request_id, std::string& out) {
          auto f = protocol::begin_publish(out, request_id, q);
          for (const auto& m : *copy) {
            std::vector<protocol::Header> headers;
            for (const auto& [k, v] : m.headers) headers.push_back({k, v});
            protocol::encode_message(out, headers, m.payload);
          }
          protocol::end_publish(out, f, static_cast<std::uint32_t>(copy->size()));
        },
        [n = messages.size()](FrameType type,
                              std::string_view body) -> Result<std::vector<Published>> {
          protocol::Confirm c;
          if (type != FrameType::confirm || !protocol::decode_confirm(body, c) || c.count != n)
            return Error{errc::malformed_frame, "unexpected answer to PUBLISH"};
          std::vector<Published> out(c.count);
          for (std::uint32_t i = 0; i < c.count; ++i) out[i].id = c.message_id(i);
          for (std::uint32_t i = 0; i < c.duplicate_count; ++i)
            out[c.duplicate_index(i)].duplicate = true;
          return out;
        });
  };
  // queue_full with retries on: back off (with jitter, at least the broker's
  // retry-after) and try again until the deadline.
  const auto until = std::chrono::steady_clock::now() + options_.retry_queue_full_for;
  auto result = attempt();
  for (unsigned n = 0; !result && result.error().code == errc::queue_full; ++n) {
    thread_local std::mt19937 rng{std::random_device{}()};
    const auto delay = backoff_delay(n, result.error().retry_after, rng);
    if (std::chrono::steady_clock::now() + delay > until) break;
    std::this_thread::sleep_for(delay);
    result = attempt();
  }
  return result;
}

bool Connection::wait_confirms(std::chrono::milliseconds timeout) {
  return impl_->wait_confirms(timeout);
}

Result<std::uint32_t> Connection::subscribe(std::string_view queue, SubscribeOptions options,
                                            Handler handler) {
  if (!protocol::valid_queue_name(queue))
    return Error{errc::invalid_queue_name,
                 "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (!(options.rate == 0 || (options.rate >= 0.1 && options.rate <= 1e6)))
    return Error{errc::invalid_argument, "rate must be 0 (no limit) or 0.1 to 1000000 per second"};
  return impl_->subscribe(queue, options, std::move(handler));
}

Error Connection::unsubscribe(std::uint32_t subscription_id) {
  return impl_->unsubscribe(subscription_id);
}
Error Connection::ack(LeaseHandle lease) {
  return impl_->settle(FrameType::ack, lease, 0);
}
Error Connection::nack(LeaseHandle lease, std::chrono::milliseconds delay) {
  return impl_->settle(FrameType::nack, lease, static_cast<std::uint32_t>(delay.count()));
}
Error Connection::nack(LeaseHandle lease, const NackOptions& options) {
  if (options.reason.size() > protocol::kMaxReasonBytes)
    return {errc::invalid_argument, "reason over 1024 bytes"};
  return impl_->settle(FrameType::nack, lease, static_cast<std::uint32_t>(options.delay.count()),
                       options.reason, options.dead_letter ? protocol::kNackDeadLetter : 0);
}
Error Connection::extend(LeaseHandle lease, std::chrono::milliseconds lease_time) {
  return impl_->settle(FrameType::extend, lease, static_cast<std::uint32_t>(lease_time.count()));
}

Result<std::vector<QueueStats>> Connection::stats(std::string_view queue) {
  std::string q(queue);
  return impl_->call<std::vector<QueueStats>>(
      [q](std::uint64_t request_id, std::string& out) {
        protocol::encode_stats(out, {request_id, q});
      },
      [](FrameType, std::string_view body) -> Result<std::vector<QueueStats>> {
        std::uint64_t request_id;
        std::vector<protocol::QueueStatsView> views;
        if (!protocol::decode_stats_result(body, request_id, views))
          return Error{errc::malformed_frame, "bad STATS_RESULT"};
        std::vector<QueueStats> out;
        for (const auto& v : views) {
          if (v.name.empty()) continue;  // the broker-wide entry: storage_stats()
          using F = protocol::StatField;
          QueueStats q{
              std::string(v.name),       v.get(F::ready),         v.get(F::delayed),
              v.get(F::in_flight),       v.get(F::consumers),     v.get(F::published_total),
              v.get(F::delivered_total), v.get(F::acked_total),   v.get(F::nacked_total),
              v.get(F::expired_total),   v.get(F::bytes),         v.get(F::pressure),
              v.get(F::refused_total),   v.get(F::blocked_total), v.get(F::staged)};
          q.held = v.get(F::held);
          q.retried_total = v.get(F::retried_total);
          q.dead_lettered_total = v.get(F::dead_lettered_total);
          q.duplicates_total = v.get(F::duplicates_total);
          q.dedup_evicted_total = v.get(F::dedup_evicted_total);
          q.sequence_gaps_total = v.get(F::sequence_gaps_total);
          q.dead_letters = v.get(F::dead_letters);
          q.redriving = v.get(F::redriving);
          out.push_back(std::move(q));
        }
        return out;
      });
}

Result<std::optional<StorageStats>> Connection::storage_stats() {
  return impl_->call<std::optional<StorageStats>>(
      [](std::uint64_t request_id, std::string& out) {
        protocol::encode_stats(out, {request_id, {}});
      },
      [](FrameType, std::string_view body) -> Result<std::optional<StorageStats>> {
        std::uint64_t request_id;
        std::vector<protocol::QueueStatsView> views;
        if (!protocol::decode_stats_result(body, request_id, views))
          return Error{errc::malformed_frame, "bad STATS_RESULT"};
        for (const auto& v : views) {
          if (!v.name.empty()) continue;
          using F = protocol::StatField;
          return std::optional<StorageStats>(
              StorageStats{v.get(F::storage_file_bytes), v.get(F::storage_used_bytes),
                           v.get(F::storage_limit_bytes), v.get(F::storage_commits_total),
                           v.get(F::storage_operations_total), v.get(F::storage_median_batch),
                           v.get(F::storage_waiting), v.get(F::storage_full) != 0,
                           v.get(F::storage_failures_total)});
        }
        return std::optional<StorageStats>();
      });
}

Error Connection::configure(std::string_view queue,
                            const std::vector<std::pair<std::string, std::string>>& settings) {
  if (!protocol::valid_queue_name(queue))
    return {errc::invalid_queue_name,
            "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (settings.empty() || settings.size() > protocol::kMaxConfigureSettings)
    return {errc::invalid_argument, "between 1 and 64 settings at once"};
  std::string q(queue);
  auto copy = settings;
  return impl_
      ->call<bool>(
          [q, copy](std::uint64_t request_id, std::string& out) {
            protocol::Configure c;
            c.request_id = request_id;
            c.queue = q;
            for (const auto& [name, value] : copy) c.settings.emplace_back(name, value);
            protocol::encode_configure(out, c);
          },
          [](FrameType, std::string_view) { return Result<bool>(true); })
      .error();
}

Result<DeadLetterResult> Connection::dead_letters(const DeadLetterQuery& query) {
  if (!protocol::valid_queue_name(query.queue))
    return Error{errc::invalid_queue_name,
                 "queue name must be " + std::string(protocol::kQueueNameRule)};
  if (!(query.rate == 0 || (query.rate >= 0.1 && query.rate <= 1e6)))
    return Error{errc::invalid_argument, "rate must be 0 (no limit) or 0.1 to 1000000 per second"};
  if (query.ids.size() > protocol::kMaxDeadLetterIds)
    return Error{errc::invalid_argument, "at most 10000 ids at once"};
  auto q = std::make_shared<const DeadLetterQuery>(query);
  return impl_->call<DeadLetterResult>(
      [q](std::uint64_t request_id, std::string& out) {
        protocol::DeadLetterRequest r;
        r.request_id = request_id;
        r.op = static_cast<protocol::DeadLetterOp>(q->op);
        r.queue = q->queue;
        r.flags = q->newest_first ? protocol::kDeadLettersNewestFirst : 0;
        r.limit = q->limit;
        r.after = q->after;
        r.ids = q->ids;
        r.min_age_ms = static_cast<std::uint64_t>(q->min_age.count());
        r.max_age_ms = static_cast<std::uint64_t>(q->max_age.count());
        r.reason = q->reason;
        r.rate_milli = static_cast<std::uint32_t>(std::llround(q->rate * 1000));
        protocol::encode_dead_letters(out, r);
      },
      [](FrameType type, std::string_view body) -> Result<DeadLetterResult> {
        protocol::DeadLetterResult r;
        if (type != FrameType::dead_letters_result ||
            !protocol::decode_dead_letters_result(body, r))
          return Error{errc::malformed_frame, "bad DEAD_LETTERS_RESULT"};
        DeadLetterResult out;
        out.affected = r.affected;
        out.next_after = r.next_after;
        for (const auto& e : r.entries) {
          DeadLetter d;
          d.entry_id = e.entry_id;
          d.message_id = e.message_id;
          d.queue = e.queue;
          d.attempts = e.attempts;
          d.publish_time_us = static_cast<std::int64_t>(e.publish_time_us);
          d.first_failure_us = static_cast<std::int64_t>(e.first_failure_us);
          d.last_failure_us = static_cast<std::int64_t>(e.last_failure_us);
          d.reason = e.reason;
          protocol::MessageParts parts;
          if (protocol::parse_message(e.message, parts)) {
            d.message.payload = parts.payload;
            protocol::for_each_header(parts, [&](const protocol::Header& h) {
              d.message.headers.emplace_back(h.key, h.value);
            });
          }
          out.entries.push_back(std::move(d));
        }
        return out;
      });
}

Error Connection::ping() {
  return impl_
      ->call<bool>([](std::uint64_t request_id,
                      std::string& out) { protocol::encode_ping(out, request_id); },
                   [](FrameType, std::string_view) { return Result<bool>(true); })
      .error();
}

bool Connection::connected() const noexcept {
  return impl_->connected();
}
Error Connection::last_error() const {
  return impl_->last_error();
}
SubscriptionStats Connection::subscription_stats(std::uint32_t id) const {
  return impl_->subscription_stats(id);
}
std::uint64_t Connection::refused_auto_acks() const noexcept {
  return impl_->refused_auto_acks_.load();
}
std::uint8_t Connection::pressure() const noexcept {
  return impl_->pressure_.load(std::memory_order_relaxed);
}

}  // namespace sluice::client
