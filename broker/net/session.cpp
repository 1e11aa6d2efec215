#include "session.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "durable_store.hpp"
#include "log.hpp"

namespace sluice::net {

namespace asio = boost::asio;
using protocol::FrameType;

namespace {
constexpr std::size_t kReadChunk = 128 * 1024;
/// A DELIVER frame stops growing here so a consumer gets its first messages
/// without waiting for a huge frame, and frames stay far below the limit.
constexpr std::size_t kDeliverFrameTarget = 256 * 1024;
constexpr const char* kTooManyQueues =
    "the broker holds limits.max_queues queues already; this one would be new";

std::string describe(const asio::ip::tcp::socket& socket) {
  boost::system::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "unknown";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}
}  // namespace

namespace {
security::Transport make_transport(asio::ip::tcp::socket socket,
                                   std::shared_ptr<asio::ssl::context> tls) {
  if (tls) return security::Transport(std::move(socket), std::move(tls));
  return security::Transport(std::move(socket));
}
}  // namespace

void accept_session(Broker& broker, Accepted&& accepted, Listener& listener) {
  auto session = std::make_shared<Session>(broker, std::move(accepted.socket), accepted.tls);
  if (!accepted.refusal.empty()) {
    session->refuse(errc::too_many_connections, std::move(accepted.refusal));
    return;
  }
  session->start(listener.admit(*session, accepted.source));
}

Session::Session(Broker& broker, asio::ip::tcp::socket socket,
                 std::shared_ptr<asio::ssl::context> tls)
    : broker_(broker),
      transport_(make_transport(std::move(socket), std::move(tls))),
      peer_(describe(transport_.socket())),
      decoder_(broker.options().limits.max_frame_bytes),
      frame_timer_(broker.io()),
      peer_check_timer_(broker.io()),
      handshake_timer_(broker.io()) {}

Session::~Session() = default;

void Session::start(ConnectionSlot slot) {
  slot_ = std::move(slot);
  begin(errc::ok, {});
}

void Session::refuse(errc code, std::string message) {
  // Over TLS, saying why would cost a handshake on the engine's thread for
  // every refused connection, which is what a flood wants: close at once.
  if (transport_.is_tls()) {
    closing_because(CloseReason::refused);
    close();
    return;
  }
  begin(code, std::move(message));
}

void Session::shut_down() {
  close_after_flush(errc::shutting_down, "the broker is stopping");
}

void Session::closing_because(CloseReason reason) {
  if (close_counted_) return;
  close_counted_ = true;
  broker_.count_close(reason);
}

void Session::begin(errc refusal, std::string message) {
  boost::system::error_code ignored;
  transport_.socket().set_option(asio::ip::tcp::no_delay(true), ignored);
  log::debug("connection_opened").str("peer", peer_).str("tls", transport_.is_tls() ? "on" : "off");
  // One deadline for the TLS handshake and HELLO together.
  handshake_timer_.expires_after(broker_.options().handshake_timeout);
  handshake_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->greeted_ || self->closing_ || self->closed_) return;
    if (!self->transport_ready_) {
      log::info("tls_handshake_failed").str("peer", self->peer_).str("error", "timed out");
      self->closing_because(CloseReason::timeout);
      self->close();  // no TLS yet: nothing can be said to it
      return;
    }
    self->close_after_flush(errc::timed_out, "no HELLO within limits.handshake_timeout");
  });
  if (!transport_.is_tls()) {
    transport_ready_ = true;
    after_handshake(refusal, message);
    return;
  }
  transport_.tls()->async_handshake(
      asio::ssl::stream_base::server,
      [self = shared_from_this(), refusal,
       message = std::move(message)](const boost::system::error_code& ec) {
        if (self->closed_) return;
        if (ec) {
          // Plaintext to the TLS port, an unknown CA at the client, a scanner.
          log::info("tls_handshake_failed")
              .str("peer", self->peer_)
              .str("error", security::describe_tls_error(ec));
          self->closing_because(CloseReason::protocol_error);
          self->close();
          return;
        }
        self->transport_ready_ = true;
        self->after_handshake(refusal, message);
      });
}

void Session::after_handshake(errc refusal, const std::string& message) {
  if (refusal != errc::ok)
    close_after_flush(refusal, message);
  else
    read();
}

void Session::read() {
  if (reading_ || closing_ || closed_) return;
  reading_ = true;
  auto space = decoder_.prepare(kReadChunk);
  transport_.async_read_some(asio::buffer(space.data(), space.size()),
                             [self = shared_from_this()](const boost::system::error_code& ec,
                                                         std::size_t n) { self->on_read(ec, n); });
}

void Session::on_read(const boost::system::error_code& ec, std::size_t n) {
  reading_ = false;
  if (closed_) return;
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
    // The peer finished sending; it may still read. Answer what it sent, then close.
    if (decoder_.buffered() > 0)
      close_after_flush(errc::malformed_frame, "stream ended inside a frame");
    else
      close_after_flush(errc::ok, "peer closed");
    return;
  }
  if (ec) {
    if (ec != asio::error::connection_reset && ec != asio::error::operation_aborted)
      log::debug("connection_read_failed").str("peer", peer_).str("error", ec.message());
    close();
    return;
  }
  decoder_.commit(n);
  process_frames();
}

bool Session::outbound_full() const noexcept {
  // Answers held behind a durable confirm count only far past the bound: a
  // connection that also consumes must stay readable so its acks can free
  // the storage that confirm may be waiting for.
  const std::size_t bound = broker_.options().connection_outbound_bytes;
  // The pending-publish bound pauses only connections that do not consume,
  // for the same reason.
  return out_.size() + writing_.size() >= bound || held_.size() >= 4 * bound ||
         (pending_publishes_ >= broker_.options().max_pending_publishes && subscriptions_.empty() &&
          draining_.empty());
}

void Session::process_frames() {
  protocol::Frame frame;
  errc framing_error = errc::ok;
  bool keep_going = true;
  bool progressed = false;
  while (keep_going && !closing_) {
    // Backpressure, checked per frame: one read can hold thousands of small
    // requests, and a peer that does not read its answers must not make us
    // buffer all of theirs. The rest waits in the decoder until on_write.
    if (outbound_full()) {
      read_paused_ = true;
      paused_self_ = shared_from_this();
      break;
    }
    switch (decoder_.next(frame, framing_error)) {
      case protocol::FrameDecoder::Result::frame:
        progressed = true;
        keep_going = handle(frame);
        break;
      case protocol::FrameDecoder::Result::need_more:
        keep_going = false;
        break;
      case protocol::FrameDecoder::Result::error:
        close_after_flush(framing_error, framing_error == errc::frame_too_large
                                             ? "length prefix over max_frame_bytes; framing lost"
                                             : "zero length prefix; framing lost");
        keep_going = false;
        break;
    }
  }
  // Posted, like the deliveries this batch made to other connections, and
  // after them: a consumer's message goes out before this producer's
  // confirms rather than behind their write.
  schedule_flush();
  if (closing_) return;
  watch_partial_frame(progressed);
  if (!read_paused_ && !blocked_) read();
}

void Session::watch_partial_frame(bool progressed) {
  if (decoder_.buffered() == 0) {
    if (frame_timer_armed_) frame_timer_.cancel();
    frame_timer_armed_ = false;
    return;
  }
  // The deadline runs from the start of the frame now pending, so a producer
  // streaming frame after frame never trips it.
  if (frame_timer_armed_ && !progressed) return;
  frame_timer_armed_ = true;
  // A handler already queued when the timer is re-armed still runs with
  // success; the generation tells it that it is out of date.
  const std::uint64_t generation = ++frame_timer_generation_;
  frame_timer_.expires_after(broker_.options().frame_timeout);
  frame_timer_.async_wait(
      [self = shared_from_this(), generation](const boost::system::error_code& ec) {
        if (ec || self->closing_ || self->closed_ || generation != self->frame_timer_generation_)
          return;
        self->frame_timer_armed_ = false;
        if (self->read_paused_ || self->blocked_) {
          // We stopped reading (outbound full, or blocked on a full queue): not its fault.
          self->watch_partial_frame(true);
          return;
        }
        self->close_after_flush(errc::timed_out, "frame not completed within limits.frame_timeout");
      });
}

bool Session::handle(const protocol::Frame& frame) {
  const auto type = static_cast<FrameType>(frame.type);
  if (!greeted_) {
    if (type != FrameType::hello) {
      close_after_flush(errc::handshake_required, "the first frame must be HELLO");
      return false;
    }
    handle_hello(frame.body);
    return !closing_;
  }
  switch (type) {
    case FrameType::publish:
      if (!handle_publish(frame.body)) {
        // Blocked on a full queue: keep the frame (its bytes stay put in the
        // decoder, which is not read while blocked) and stop here.
        held_frame_ = frame;
        blocked_ = true;
        // Nothing else keeps a blocked session alive: no read or write is
        // pending, and the engine holds it only as a plain waiter.
        blocked_self_ = shared_from_this();
        watch_blocked_peer();
        return false;
      }
      break;
    case FrameType::ack:
      handle_ack(frame.body);
      break;
    case FrameType::nack:
      handle_nack(frame.body);
      break;
    case FrameType::extend:
      handle_extend(frame.body);
      break;
    case FrameType::subscribe:
      handle_subscribe(frame.body);
      break;
    case FrameType::unsubscribe:
      handle_unsubscribe(frame.body);
      break;
    case FrameType::stats:
      handle_stats(frame.body);
      break;
    case FrameType::configure:
      handle_configure(frame.body);
      break;
    case FrameType::ping:
      handle_ping(frame.body);
      break;
    case FrameType::dead_letters:
      handle_dead_letters(frame.body);
      break;
    case FrameType::hello:
      close_after_flush(errc::handshake_required, "HELLO sent twice");
      return false;
    default: {
      char msg[64];
      std::snprintf(msg, sizeof msg, "unknown frame type 0x%02x", frame.type);
      send_error(0, errc::unknown_frame_type, msg);
    }
  }
  return true;
}

void Session::handle_hello(std::string_view body) {
  protocol::Hello hello;
  if (auto s = protocol::decode_hello(body, hello); !s) {
    close_after_flush(s.code, s.detail);
    return;
  }
  if (hello.min_version > protocol::kProtocolVersion ||
      hello.max_version < protocol::kProtocolVersion) {
    close_after_flush(errc::unsupported_version, "this broker speaks protocol version 1 only");
    return;
  }
  if (const errc code = broker_.auth().authenticate(hello.token, grant_); code != errc::ok) {
    log::warn("authentication_failed")
        .str("listener", "protocol")
        .str("peer", peer_)
        .str("client", hello.client_name)
        .str("reason", hello.token.empty() ? "no token" : "unknown token");
    close_after_flush(code, hello.token.empty() ? "this broker needs a token in HELLO"
                                                : "the token in HELLO is not valid");
    return;
  }
  greeted_ = true;
  handshake_timer_.cancel();
  protocol::HelloOk ok;
  ok.version = protocol::kProtocolVersion;
  ok.max_frame_bytes = broker_.options().limits.max_frame_bytes;
  ok.max_payload_bytes = broker_.options().limits.max_payload_bytes;
  ok.server_name = "sluiced " SLUICE_VERSION;
  protocol::encode_hello_ok(out(), ok);
  log::debug("client_hello")
      .str("peer", peer_)
      .str("client", hello.client_name)
      .str("token", grant_.name());
}

bool Session::permitted(std::uint64_t request_id, Permission what, std::string_view queue) {
  const errc code = broker_.auth().check(grant_, what, queue);
  if (code == errc::ok) return true;
  if (code == errc::unauthenticated) {
    close_after_flush(code, "the token was revoked");
    return false;
  }
  static constexpr const char* kWhat[] = {"publish to", "consume from", "administer", "see"};
  // The same words whether or not the queue exists.
  send_error(request_id, code,
             "token " + std::string(grant_.name()) + " may not " + kWhat[static_cast<int>(what)] +
                 " queue " + std::string(queue));
  return false;
}

void Session::recheck_grant() {
  if (!greeted_ || closing_ || closed_) return;
  // Unsubscribed consumers still holding leases (draining_) count too: their
  // leases can still be settled and extended.
  std::vector<engine::Consumer*> consumers(draining_.begin(), draining_.end());
  for (const auto& [id, consumer] : subscriptions_) consumers.push_back(consumer);
  for (engine::Consumer* consumer : consumers) {
    const std::string_view queue = consumer->queue().name();
    const errc code = broker_.auth().check(grant_, Permission::consume, queue);
    if (code == errc::unauthenticated) {
      close_after_flush(code, "the token was revoked");
      return;
    }
    if (code != errc::ok) {
      close_after_flush(code, "the token may no longer consume from queue " + std::string(queue));
      return;
    }
  }
  if (broker_.auth().check(grant_, Permission::read, kEveryQueue) == errc::unauthenticated)
    close_after_flush(errc::unauthenticated, "the token was revoked");
}

bool Session::handle_publish(std::string_view body) {
  protocol::Publish publish;
  if (auto s = protocol::decode_publish(body, broker_.options().limits, publish, messages_); !s) {
    send_error(publish.request_id, s.code, s.detail);
    return true;
  }
  if (!permitted(publish.request_id, Permission::publish, publish.queue)) return true;
  // The sluice-* headers are checked before anything is admitted: a frame is
  // taken whole or not at all.
  system_headers_.clear();
  for (auto message : messages_) {
    protocol::MessageParts parts;
    protocol::SystemHeaders& sys = system_headers_.emplace_back();
    if (!protocol::parse_message(message, parts)) continue;  // decode_publish checked it
    if (auto s = protocol::read_system_headers(parts, sys); !s) {
      send_error(publish.request_id, s.code, s.detail);
      return true;
    }
    if (sys.not_before_ms != 0 &&
        sys.not_before_ms >
            static_cast<std::uint64_t>(wall_us() / 1000) + protocol::kMaxDelayMs) {
      send_error(publish.request_id, errc::invalid_argument,
                 "publish: sluice-not-before-ms is more than 30 days ahead");
      return true;
    }
  }
  engine::Engine& engine = broker_.engine();
  // Producers publish to the same queue frame after frame; skip the lookup.
  if (last_queue_ == nullptr || last_queue_->name() != publish.queue) {
    last_queue_ = engine.open(publish.queue);
    if (last_queue_ == nullptr) {
      send_error(publish.request_id, errc::too_many_queues, kTooManyQueues);
      return true;
    }
  }
  engine::Queue& queue = *last_queue_;
  const auto now = mono_us();
  const auto admission = engine.admit(queue, messages_.size(), now);
  if (admission.code == errc::queue_full && queue.options().overflow == engine::Overflow::block) {
    engine.wait_for_room(queue, *this, now);
    return false;
  }
  if (admission.code != errc::ok) {
    const auto retry_ms = static_cast<std::uint32_t>((admission.retry_after + 999) / 1000);
    send_error(publish.request_id, admission.code, admission.detail, retry_ms);
    return true;
  }
  const auto wall = wall_us();
  ids_.clear();
  duplicates_.clear();
  for (std::size_t i = 0; i < messages_.size(); ++i) {
    const auto published = engine.publish(queue, messages_[i], system_headers_[i], now, wall);
    if (published.duplicate) duplicates_.push_back(static_cast<std::uint32_t>(ids_.size()));
    ids_.push_back(published.id);
  }
  if (queue.durable())
    hold_confirm(publish.request_id, queue);
  else
    protocol::encode_confirm(out(), publish.request_id, queue.pressure(), ids_, duplicates_);
  return true;
}

void Session::hold_confirm(std::uint64_t request_id, engine::Queue& queue) {
  const DurableStore& store = *broker_.store();  // a durable queue implies a store
  pending_publishes_ += ids_.size();
  wait({store.last_seq(), held_.size(), request_id, &queue, ids_, duplicates_, {}});
}

void Session::wait(WaitingAnswer answer) {
  waiting_.push_back(std::move(answer));
  if (waiting_.size() == 1) wait_for_front();
}

void Session::wait_for_front() {
  // One wake-up asked for at a time, for the first answer in line.
  DurableStore& store = *broker_.store();
  const WaitingAnswer& front = waiting_.front();
  auto wake = [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->release_committed();
  };
  if (front.queue != nullptr)
    store.after_durable(front.seq, std::move(wake));
  else  // a held SETTLED waits only for its own small writes
    store.after_settled(front.seq, std::move(wake));
}

void Session::release_committed() {
  if (closed_ || waiting_.empty()) return;
  const DurableStore& store = *broker_.store();
  deliver_open_ = false;
  std::size_t moved = 0;  // bytes of held_ now in out_
  while (!waiting_.empty()) {
    const WaitingAnswer& a = waiting_.front();
    if (a.seq > (a.queue != nullptr ? store.durable_seq() : store.settled_seq())) break;
    out_.append(held_, moved, a.offset - moved);
    moved = a.offset;
    if (a.queue != nullptr) {
      // Pressure as it is now, when the producer learns of the publish.
      protocol::encode_confirm(out_, a.request_id, a.queue->pressure(), a.ids, a.duplicates);
      pending_publishes_ -= a.ids.size();
    } else {
      protocol::encode_settled(out_, a.request_id, a.failures);
    }
    waiting_.pop_front();
  }
  if (waiting_.empty()) {
    out_.append(held_, moved);
    held_.clear();
  } else {
    held_.erase(0, moved);
    for (auto& a : waiting_) a.offset -= moved;
    wait_for_front();
  }
  if (closing_ && out_.empty() && !writing_now_ && waiting_.empty()) {
    close();
    return;
  }
  flush();
}

void Session::watch_blocked_peer() {
  // Not reading means not seeing the peer leave; look once a second without
  // consuming anything, so a producer that gave up does not hold a
  // connection slot (and its frame) until the queue has room.
  peer_check_timer_.expires_after(std::chrono::seconds(1));
  peer_check_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || !self->blocked_ || self->closing_ || self->closed_) return;
    // POLLRDHUP, not a peek: frames the peer sent before leaving may still
    // sit unread in the socket, and a peek would see those bytes, not the FIN.
    // The held frame is never answered: nothing of it was enqueued.
    pollfd pfd{self->transport_.socket().native_handle(), POLLRDHUP, 0};
    const int n = ::poll(&pfd, 1, 0);
    if ((n < 0 && errno != EINTR) || (n > 0 && (pfd.revents & (POLLHUP | POLLERR)))) {
      log::debug("blocked_peer_gone").str("peer", self->peer_);
      self->close();
      return;
    }
    if (n > 0 && (pfd.revents & POLLRDHUP)) {
      // It sends no more but may still read: what it is owed (durable
      // confirms among them) goes out, then the connection closes.
      log::debug("blocked_peer_gone").str("peer", self->peer_);
      self->close_after_flush(errc::ok, "peer closed");
      return;
    }
    self->watch_blocked_peer();
  });
}

void Session::room(engine::Queue&) {
  // Called from inside an engine operation (maybe another session's): retry later.
  asio::post(broker_.io(), [self = shared_from_this()] { self->unblock(); });
}

void Session::unblock() {
  if (!blocked_ || closing_ || closed_) return;
  blocked_ = false;
  if (!handle_publish(held_frame_.body)) {
    blocked_ = true;  // full again already: waiting once more
    return;
  }
  blocked_self_.reset();  // the posted call that got us here holds a reference
  process_frames();       // the held frame's answer goes out with whatever follows it
}

void Session::handle_subscribe(std::string_view body) {
  protocol::Subscribe sub;
  if (auto s = protocol::decode_subscribe(body, sub); !s) {
    send_error(sub.request_id, s.code, s.detail);
    return;
  }
  if (!permitted(sub.request_id, Permission::consume, sub.queue)) return;
  if (subscriptions_.contains(sub.subscription_id)) {
    send_error(sub.request_id, errc::duplicate_subscription,
               "subscription id already open on this connection");
    return;
  }
  engine::Engine& engine = broker_.engine();
  engine::Queue* found = engine.open(sub.queue);
  if (found == nullptr) {
    send_error(sub.request_id, errc::too_many_queues, kTooManyQueues);
    return;
  }
  engine::Queue& queue = *found;
  const auto now = mono_us();
  auto result =
      engine.subscribe(queue, *this, sub.subscription_id, sub.max_in_flight,
                       engine::Micros{sub.lease_ms} * 1000, now, {sub.rate_milli, sub.burst});
  if (result.code != errc::ok) {
    send_error(sub.request_id, result.code, result.detail);
    return;
  }
  subscriptions_.emplace(sub.subscription_id, result.consumer);
  protocol::encode_ok(out(), sub.request_id);
  log::debug("subscribed")
      .str("peer", peer_)
      .str("queue", sub.queue)
      .unum("credit", sub.max_in_flight);
}

void Session::handle_unsubscribe(std::string_view body) {
  protocol::Unsubscribe unsub;
  if (auto s = protocol::decode_unsubscribe(body, unsub); !s) {
    send_error(unsub.request_id, s.code, s.detail);
    return;
  }
  auto it = subscriptions_.find(unsub.subscription_id);
  if (it == subscriptions_.end()) {
    send_error(unsub.request_id, errc::unknown_subscription,
               "no such subscription on this connection");
    return;
  }
  engine::Consumer* consumer = it->second;
  subscriptions_.erase(it);
  std::erase(paused_, consumer);
  // Tracked until the engine releases it: its leases stay ackable meanwhile.
  draining_.push_back(consumer);
  broker_.engine().unsubscribe(*consumer);
  protocol::encode_ok(out(), unsub.request_id);
}

void Session::handle_ack(std::string_view body) {
  std::uint64_t request_id = 0;
  if (auto s = protocol::decode_ack(body, request_id, acks_); !s) {
    send_error(request_id, s.code, s.detail);
    return;
  }
  engine::Engine& engine = broker_.engine();
  const auto now = mono_us();
  const std::uint64_t written = storage_seq();
  failures_.clear();
  for (const auto& a : acks_) {
    if (auto code = engine.ack(*this, a.message_id, a.lease_token, now); code != errc::ok)
      failures_.push_back({a.message_id, code});
  }
  answer_settled(request_id, written);
}

std::uint64_t Session::storage_seq() const {
  const DurableStore* store = broker_.store();
  return store != nullptr ? store->last_seq() : 0;
}

void Session::answer_settled(std::uint64_t request_id, std::uint64_t written_before) {
  DurableStore* store = broker_.store();
  if (!broker_.options().settle_after_commit || store == nullptr ||
      store->last_seq() == written_before) {
    protocol::encode_settled(out(), request_id, failures_);
    return;
  }
  // storage.settle = "commit": held, like a durable publish's CONFIRM, until
  // what this request wrote is committed (answers stay in request order).
  wait({store->last_seq(), held_.size(), request_id, nullptr, {}, {}, failures_});
}

void Session::handle_nack(std::string_view body) {
  std::uint64_t request_id = 0;
  if (auto s = protocol::decode_nack(body, request_id, nacks_); !s) {
    send_error(request_id, s.code, s.detail);
    return;
  }
  engine::Engine& engine = broker_.engine();
  const auto now = mono_us();
  const std::uint64_t written = storage_seq();
  failures_.clear();
  for (const auto& n : nacks_) {
    if (auto code =
            engine.nack(*this, n.message_id, n.lease_token, engine::Micros{n.delay_ms} * 1000, now,
                        n.reason, (n.flags & protocol::kNackDeadLetter) != 0);
        code != errc::ok)
      failures_.push_back({n.message_id, code});
  }
  answer_settled(request_id, written);
}

void Session::handle_extend(std::string_view body) {
  std::uint64_t request_id = 0;
  if (auto s = protocol::decode_extend(body, request_id, extends_); !s) {
    send_error(request_id, s.code, s.detail);
    return;
  }
  engine::Engine& engine = broker_.engine();
  const auto now = mono_us();
  failures_.clear();
  for (const auto& e : extends_) {
    if (auto code = engine.extend(*this, e.message_id, e.lease_token,
                                  engine::Micros{e.lease_ms} * 1000, now);
        code != errc::ok)
      failures_.push_back({e.message_id, code});
  }
  protocol::encode_settled(out(), request_id, failures_);
}

void Session::handle_stats(std::string_view body) {
  protocol::StatsRequest request;
  if (auto s = protocol::decode_stats(body, request); !s) {
    send_error(request.request_id, s.code, s.detail);
    return;
  }
  engine::Engine& engine = broker_.engine();
  std::vector<const engine::Queue*> queues;
  if (request.queue.empty()) {
    // Every queue this token may see; the others are left out, not refused.
    for (const auto* q : engine.queues())
      if (broker_.auth().can_see(grant_, q->name())) queues.push_back(q);
    std::sort(queues.begin(), queues.end(),
              [](const auto* a, const auto* b) { return a->name() < b->name(); });
  } else {
    if (!permitted(request.request_id, Permission::read, request.queue)) return;
    if (const auto* q = engine.find(request.queue)) queues.push_back(q);
  }
  const DurableStore* store = broker_.store();
  protocol::StatsResultWriter writer(out(), request.request_id);
  for (const auto* q : queues) {
    const auto& c = q->counters();
    using F = protocol::StatField;
    const std::pair<F, std::uint64_t> fields[] = {
        {F::ready, c.ready},
        {F::delayed, c.delayed},
        {F::in_flight, c.in_flight},
        {F::consumers, q->consumer_count()},
        {F::published_total, c.published_total},
        {F::delivered_total, c.delivered_total},
        {F::acked_total, c.acked_total},
        {F::nacked_total, c.nacked_total},
        {F::expired_total, c.expired_total},
        {F::bytes, c.bytes},
        {F::pressure, q->pressure()},
        {F::refused_total, c.refused_total},
        {F::blocked_total, c.blocked_total},
        {F::staged, c.staged},
        {F::held, c.held},
        {F::retried_total, c.retried_total},
        {F::dead_lettered_total, c.dead_lettered_total},
        {F::duplicates_total, c.duplicates_total},
        {F::dedup_evicted_total, q->dedup_evicted()},
        {F::sequence_gaps_total, q->sequence_gaps()},
        {F::dead_letters, store ? store->dead_letters().count(q->name()) : 0},
        {F::redriving, store ? store->dead_letters().redriving(q->name()) : 0},
    };
    writer.add_queue(q->name(), fields);
  }
  if (request.queue.empty() && store != nullptr && !store->temporary() &&
      broker_.auth().check(grant_, Permission::admin, kEveryQueue) == errc::ok) {
    // The broker-wide entry: queue names are never empty.
    const StorageStats s = broker_.store()->stats();
    using F = protocol::StatField;
    const std::pair<F, std::uint64_t> fields[] = {
        {F::storage_file_bytes, s.usage.file_bytes()},
        {F::storage_used_bytes, s.usage.used_bytes()},
        {F::storage_limit_bytes, s.limit},
        {F::storage_commits_total, s.commits.commits},
        {F::storage_operations_total, s.commits.operations},
        {F::storage_median_batch, s.commits.median_batch},
        {F::storage_waiting, s.commits.waiting},
        {F::storage_full, s.full ? 1u : 0u},
        {F::storage_failures_total, s.commits.failures},
    };
    writer.add_queue("", fields);
  }
  writer.finish();
}

void Session::handle_configure(std::string_view body) {
  protocol::Configure request;
  if (auto s = protocol::decode_configure(body, request); !s) {
    send_error(request.request_id, s.code, s.detail);
    return;
  }
  // No queue: the defaults of every queue.
  if (!permitted(request.request_id, Permission::admin,
                 request.queue.empty() ? kEveryQueue : request.queue))
    return;
  const auto& configure = broker_.configure_handler();
  if (!configure) {
    send_error(request.request_id, errc::unsupported, "this broker takes no live settings");
    return;
  }
  if (auto problem = configure(request.queue, request.settings)) {
    send_error(request.request_id, errc::invalid_argument, *problem);
    return;
  }
  protocol::encode_ok(out(), request.request_id);
}

void Session::handle_dead_letters(std::string_view body) {
  protocol::DeadLetterRequest& request = dead_letter_request_;
  if (auto s = protocol::decode_dead_letters(body, request); !s) {
    send_error(request.request_id, s.code, s.detail);
    return;
  }
  if (!permitted(request.request_id, Permission::admin, request.queue)) return;
  DeadLetters* dead_letters = broker_.dead_letters();
  if (dead_letters == nullptr) {
    send_error(request.request_id, errc::unsupported, "this broker keeps no dead letters");
    return;
  }
  // Room for the frame header and totals: a page ends before the frame limit.
  const std::uint32_t frame = broker_.options().limits.max_frame_bytes;
  if (auto problem = dead_letters->run(request, frame > 4096 ? frame - 4096 : 0, dead_letter_result_)) {
    send_error(request.request_id, problem->code, problem->message);
    return;
  }
  protocol::DeadLettersResultWriter writer(out(), request.request_id);
  for (const DeadLetter& e : dead_letter_result_.entries) writer.add(e.view());
  writer.finish(dead_letter_result_.affected, dead_letter_result_.next_after);
  dead_letter_result_.entries.clear();
}

void Session::handle_ping(std::string_view body) {
  std::uint64_t request_id = 0;
  if (auto s = protocol::decode_ping(body, request_id); !s) {
    send_error(request_id, s.code, s.detail);
    return;
  }
  protocol::encode_ok(out(), request_id);
}

void Session::send_error(std::uint64_t request_id, errc code, std::string_view message,
                         std::uint32_t retry_after_ms) {
  log::debug("request_refused")
      .str("peer", peer_)
      .str("code", to_string(code))
      .str("detail", message);
  protocol::encode_error(out(), request_id, code, message, retry_after_ms);
}

bool Session::deliver(engine::Consumer& consumer, const protocol::Delivery& delivery) {
  if (!deliver_open_ || deliver_writer_.subscription_id() != consumer.subscription_id() ||
      deliver_writer_.frame_bytes(out_) + delivery.message.size() > kDeliverFrameTarget) {
    deliver_writer_.open(out_, consumer.subscription_id());
    deliver_open_ = true;
  }
  deliver_writer_.add(out_, delivery);
  schedule_flush();
  if (out_.size() + writing_.size() < broker_.options().connection_outbound_bytes) return true;
  paused_.push_back(&consumer);  // the engine pauses it; resumed in on_write
  return false;
}

void Session::released(engine::Consumer& consumer) {
  std::erase(draining_, &consumer);
}

void Session::schedule_flush() {
  if (flush_posted_ || writing_now_) return;
  flush_posted_ = true;
  // Posted, not immediate: everything the current handler delivers goes out
  // in one write.
  asio::post(broker_.io(), [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->flush();
  });
}

void Session::flush() {
  if (writing_now_ || out_.empty() || closed_) return;
  std::swap(out_, writing_);
  deliver_open_ = false;
  writing_now_ = true;
  asio::async_write(transport_, asio::buffer(writing_),
                    [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                      self->on_write(ec);
                    });
}

void Session::on_write(const boost::system::error_code& ec) {
  writing_now_ = false;
  writing_.clear();
  if (closed_) return;
  if (ec) {
    close();
    return;
  }
  if (closing_ && out_.empty() && waiting_.empty()) {
    close();
    return;
  }
  const std::size_t low_water = broker_.options().connection_outbound_bytes / 2;
  if (out_.size() < low_water) {
    if (!paused_.empty()) {
      auto paused = std::move(paused_);
      paused_.clear();
      const auto now = mono_us();
      for (auto* consumer : paused) broker_.engine().resume(*consumer, now);
    }
    if (read_paused_) {
      read_paused_ = false;
      // Let go once this call is over, not in the middle of it.
      asio::post(broker_.io(), [keep = std::move(paused_self_)] {});
      process_frames();  // what is already buffered first; it reads again when done
      return;
    }
  }
  flush();
}

void Session::release_consumers() {
  engine::Engine& engine = broker_.engine();
  const auto now = mono_us();
  auto subscriptions = std::move(subscriptions_);
  subscriptions_.clear();
  // disconnect frees each consumer without calling released(), so take a copy.
  auto draining = std::move(draining_);
  draining_.clear();
  paused_.clear();
  engine.forget_waiter(*this);
  blocked_ = false;
  if (blocked_self_) {
    // Let go once this call is over, not in the middle of it.
    asio::post(broker_.io(), [keep = std::move(blocked_self_)] {});
  }
  if (paused_self_) asio::post(broker_.io(), [keep = std::move(paused_self_)] {});
  // Pause them all first, so what one gives back is not dispatched to another
  // consumer of this same dying connection.
  for (auto& [id, consumer] : subscriptions) engine.pause(*consumer);
  for (auto& [id, consumer] : subscriptions) engine.disconnect(*consumer, now);
  for (auto* consumer : draining) engine.disconnect(*consumer, now);
}

void Session::close_after_flush(errc code, std::string_view message) {
  if (closing_ || closed_) return;
  closing_because(close_reason_of(code));
  if (code != errc::ok) {
    log::info("connection_closing")
        .str("peer", peer_)
        .str("reason", to_string(code))
        .str("detail", message);
    protocol::encode_error(out(), 0, code, message);
  }
  closing_ = true;
  if (frame_timer_armed_) frame_timer_.cancel();
  // Stop taking work; what our consumers hold goes to others at once, and
  // their lease tokens are stale from here on (PROTOCOL.md).
  release_consumers();
  boost::system::error_code ignored;
  transport_.socket().shutdown(asio::ip::tcp::socket::shutdown_receive, ignored);
  // A peer that never reads must not hold the connection open forever.
  close_timer_ =
      std::make_unique<asio::steady_timer>(broker_.io(), broker_.options().shutdown_grace);
  close_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->close();
  });
  // Confirms still waiting for their commit go out first (or at the grace timer).
  if (out_.empty() && !writing_now_ && waiting_.empty())
    close();
  else
    flush();
}

void Session::close() {
  if (closed_) return;
  closed_ = true;
  release_consumers();
  if (close_timer_) close_timer_->cancel();
  frame_timer_.cancel();
  peer_check_timer_.cancel();
  handshake_timer_.cancel();
  boost::system::error_code ignored;
  transport_.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  transport_.socket().close(ignored);
  log::debug("connection_closed").str("peer", peer_);
  closing_because(CloseReason::peer);  // a read or write failed: the peer went away
  slot_.reset();
}

}  // namespace sluice::net
