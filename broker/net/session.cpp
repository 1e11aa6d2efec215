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
// Reads start at 4 KiB (Session::read_chunk_) and double while they fill
// what was offered, up to this: an idle or consuming connection keeps a small buffer (the buffer's
// pages are what an idle connection costs), a publishing one reaches 128 KiB in a few reads.
constexpr std::size_t kReadChunk = 128 * 1024;
/// A DELIVER frame stops growing here so a consumer gets its first messages
/// without waiting for a huge frame, and frames stay far below the limit.
constexpr std::size_t kDeliverFrameTarget = 256 * 1024;

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
      handshake_timer_(broker.io()),
      intake_(broker.engine(), broker.options().limits, &broker.schemas()) {}

Session::~Session() = default;

void Session::start(ConnectionSlot slot) {
  slot_ = std::move(slot);
  begin(errc::ok, {});
}

void Session::refuse(errc code, std::string message) {
  // Over TLS, saying why would cost a handshake on the engine's thread for
  // every refused connection, which is what a flood wants: close at once.
  if (transport_.is_tls()) {
    close_counted_ = true;  // the listener counted the refusal
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
  slot_.count_close(reason);  // a refused connection holds no slot: the listener counted it
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
  auto space = decoder_.prepare(read_chunk_);
  read_offered_ = space.size();
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
  if (n == read_offered_ && read_chunk_ < kReadChunk) read_chunk_ *= 2;
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
  // One reading of the clocks for the frames of one read: a read holds many
  // small PUBLISH frames, and two clock reads each were 4 % of a burst.
  batch_now_ = mono_us();
  batch_wall_ = wall_us();
  in_batch_ = true;
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
  in_batch_ = false;
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

void Session::hold_confirm(std::uint64_t request_id, engine::Queue& queue) {
  const DurableStore& store = *broker_.store();  // a durable queue implies a store
  pending_publishes_ += taken_.ids.size();
  wait({store.last_seq(),
        held_.size(),
        request_id,
        &queue,
        broker_.engine().removals(),
        taken_.ids,
        taken_.duplicates,
        {}});
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
      // Pressure as it is now, when the producer learns of the publish; 0 if a
      // queue was deleted meanwhile (this one may be gone: an all-duplicate
      // publish stages nothing, so its queue can be deleted while it waits).
      const std::uint8_t pressure =
          a.removals == broker_.engine().removals() ? a.queue->pressure() : 0;
      protocol::encode_confirm(out_, a.request_id, pressure, a.ids, a.duplicates);
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

void Session::ended(engine::Consumer& consumer) {
  // The queue was deleted; the engine frees the consumer right after this.
  std::erase(draining_, &consumer);
  std::erase(paused_, &consumer);
  for (auto it = subscriptions_.begin(); it != subscriptions_.end(); ++it) {
    if (it->second != &consumer) continue;
    send_error(0, errc::queue_not_found,
               "subscription " + std::to_string(it->first) + " ended: queue " +
                   consumer.queue().name() + " was deleted");
    subscriptions_.erase(it);
    break;
  }
  schedule_flush();  // inside another connection's request: nothing else writes for us
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
