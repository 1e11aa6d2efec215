// One client connection speaking the binary protocol. Decodes frames, hands
// them to the engine, and writes answers and deliveries through exactly one
// write loop. Every buffer is bounded: the decoder by the max frame size, the
// outbound buffer by connection_outbound_bytes (past it the session stops
// reading and pauses its consumers until the peer catches up).
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth.hpp"
#include "engine.hpp"
#include "sluice/protocol/codec.hpp"
#include "sluice/security/tls.hpp"

namespace sluice::net {

class Server;

class Session final : public std::enable_shared_from_this<Session>,
                      public engine::DeliverySink,
                      public engine::PublishWaiter {
 public:
  /// `tls`: the context to speak TLS with, or nullptr for plain TCP.
  Session(Server& server, boost::asio::ip::tcp::socket socket,
          std::shared_ptr<boost::asio::ssl::context> tls);
  ~Session();

  void start();
  /// A connection over a limit: after the TLS handshake (if any), sends
  /// `code` with `message` and closes.
  void refuse(errc code, std::string message);
  /// The peer's IP address, for the per-source connection count.
  void set_source(std::string source) { source_ = std::move(source); }
  const std::string& source() const noexcept { return source_; }
  /// Sends `code` with `message` (nothing when `code` is ok: a clean end), stops reading,
  /// flushes what is queued, then closes (forcibly after shutdown_grace).
  void close_after_flush(errc code, std::string_view message);
  /// After the token table changed: closes the connection if its token was
  /// revoked or may no longer consume from a queue it is subscribed to.
  void recheck_grant();

  // engine::DeliverySink
  bool deliver(engine::Consumer& consumer, const protocol::Delivery& delivery) override;
  void released(engine::Consumer& consumer) override;
  // engine::PublishWaiter
  void room(engine::Queue& queue) override;
  /// Every storage write up to `seq` is durable, and up to `settled` all but
  /// new records waiting for room: send the confirms (and held SETTLEDs)
  /// waiting for them, in request order.
  void durable_committed(std::uint64_t seq, std::uint64_t settled);

 private:
  /// TLS handshake (if TLS), then `refusal` sent or reading begun.
  void begin(errc refusal, std::string message);
  void after_handshake(errc refusal, const std::string& message);
  void read();
  void on_read(const boost::system::error_code& ec, std::size_t n);
  /// Handles the complete frames buffered, until the outbound bound is reached
  /// (then reading pauses until on_write drains below half), then reads again.
  void process_frames();
  bool outbound_full() const noexcept;
  /// Gives back everything this connection's consumers hold (at once, to other
  /// connections) and frees them. Idempotent.
  void release_consumers();
  /// Arms or cancels the frame deadline after a read; `progressed`: a frame completed.
  void watch_partial_frame(bool progressed);
  /// Handles one frame; false when the connection must close (error queued).
  bool handle(const protocol::Frame& frame);
  void handle_hello(std::string_view body);
  /// True when this connection's token may do `what` on `queue`; otherwise
  /// answers forbidden (or closes, when the token was revoked) and false.
  bool permitted(std::uint64_t request_id, Permission what, std::string_view queue);
  /// False when the queue is full and blocks: the frame must wait (see unblock).
  bool handle_publish(std::string_view body);
  /// The blocking queue has room: retry the held PUBLISH, then go on.
  void unblock();
  /// While blocked: notices (by peeking) when the peer has gone, and closes.
  void watch_blocked_peer();
  void handle_subscribe(std::string_view body);
  void handle_unsubscribe(std::string_view body);
  void handle_ack(std::string_view body);
  void handle_nack(std::string_view body);
  void handle_extend(std::string_view body);
  void handle_stats(std::string_view body);
  void handle_configure(std::string_view body);
  void handle_ping(std::string_view body);
  void handle_dead_letters(std::string_view body);
  void send_error(std::uint64_t request_id, errc code, std::string_view message,
                  std::uint32_t retry_after_ms = 0);

  /// The outbound buffer for a non-DELIVER frame (ends any open DELIVER frame).
  /// While a durable publish waits for its commit, answers queue up behind its
  /// confirm (answers keep request order; deliveries do not wait).
  std::string& out() noexcept {
    if (!durable_confirms_.empty()) return held_;
    deliver_open_ = false;
    return out_;
  }
  /// The storage's last write sequence number (0 without storage).
  std::uint64_t storage_seq() const;
  /// SETTLED for `request_id` with failures_, now, or held until the writes
  /// made since `written_before` are committed (storage.settle = "commit").
  void answer_settled(std::uint64_t request_id, std::uint64_t written_before);
  /// Puts the CONFIRM of a durable publish in line; it goes out once durable.
  void hold_confirm(std::uint64_t request_id, engine::Queue& queue);
  /// Moves the answers before the first confirm still waiting (all, if none) to out_.
  void release_held();
  void schedule_flush();
  void flush();
  void on_write(const boost::system::error_code& ec);
  /// Frees engine state and the socket. Idempotent.
  void close();

  Server& server_;
  security::Transport transport_;
  std::string peer_;
  std::string source_;
  Grant grant_;  // what HELLO's token allows
  protocol::FrameDecoder decoder_;
  std::string out_;      // being filled
  std::string writing_;  // being written
  std::string held_;     // answers behind a durable publish's confirm (see out())
  struct DurableConfirm {
    std::uint64_t seq;       // the storage write that makes it durable
    std::size_t offset;      // of its CONFIRM frame in held_
    engine::Queue* queue;    // for the pressure byte, filled in when sent
    std::uint32_t messages;  // published in that frame
  };
  std::size_t pending_publishes_ = 0;  // messages in durable_confirms_
  std::deque<DurableConfirm> durable_confirms_;
  protocol::DeliverFrameWriter deliver_writer_;
  bool deliver_open_ = false;
  bool writing_now_ = false;
  bool flush_posted_ = false;
  bool reading_ = false;
  bool read_paused_ = false;
  bool greeted_ = false;
  bool transport_ready_ = false;  // TLS handshake done (at once for plain TCP)
  bool closing_ = false;
  bool closed_ = false;
  bool blocked_ = false;                   // a PUBLISH waits for room in its queue
  protocol::Frame held_frame_;             // that PUBLISH
  std::shared_ptr<Session> blocked_self_;  // keeps this alive while blocked
  // Keeps this alive while reading is paused: when only durable confirms wait
  // (no write pending), nothing else holds it until the commit lands.
  std::shared_ptr<Session> paused_self_;
  std::unique_ptr<boost::asio::steady_timer> close_timer_;
  boost::asio::steady_timer frame_timer_;  // limits.frame_timeout for a frame begun
  bool frame_timer_armed_ = false;
  std::uint64_t frame_timer_generation_ = 0;
  boost::asio::steady_timer peer_check_timer_;  // while blocked
  boost::asio::steady_timer handshake_timer_;   // until HELLO

  std::unordered_map<std::uint32_t, engine::Consumer*> subscriptions_;
  std::vector<engine::Consumer*> draining_;
  std::vector<engine::Consumer*> paused_;

  // Scratch reused across frames so the steady state allocates nothing.
  engine::Queue* last_queue_ = nullptr;
  std::vector<std::string_view> messages_;
  std::vector<std::uint64_t> ids_;
  std::vector<std::uint32_t> duplicates_;                // indexes into ids_
  std::vector<protocol::SystemHeaders> system_headers_;  // of messages_, read once
  protocol::DeadLetterRequest dead_letter_request_;
  std::vector<protocol::AckEntry> acks_;
  std::vector<protocol::NackEntry> nacks_;
  std::vector<protocol::ExtendEntry> extends_;
  std::vector<protocol::SettleFailure> failures_;
};

}  // namespace sluice::net
