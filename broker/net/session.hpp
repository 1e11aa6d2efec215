// One client connection speaking the binary protocol. Decodes frames, hands
// them to the engine, and writes answers and deliveries through exactly one
// write loop. Every buffer is bounded: the decoder by the max frame size, the
// outbound buffer by connection_outbound_bytes (past it the session stops
// reading and pauses its consumers until the peer catches up), answers held
// behind a durable confirm by 4 x that, and confirms waiting for their commit
// by limits.max_pending_publishes.
//
// session.cpp: the connection (I/O, flow control, held answers, closing);
// session_requests.cpp: one handler per request frame.
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
#include "broker.hpp"
#include "intake.hpp"
#include "dead_letters.hpp"
#include "engine.hpp"
#include "listener.hpp"
#include "sluice/protocol/codec.hpp"
#include "sluice/security/tls.hpp"

namespace sluice::net {

enum class CloseReason : std::uint8_t;

/// The protocol listener's factory: a session for an accepted socket (which
/// says why it is refused, or is counted in `listener` until it closes).
void accept_session(Broker& broker, Accepted&& accepted, Listener& listener);

class Session final : public std::enable_shared_from_this<Session>,
                      public ListenedConnection,
                      public engine::DeliverySink,
                      public engine::PublishWaiter {
 public:
  /// `tls`: the context to speak TLS with, or nullptr for plain TCP.
  Session(Broker& broker, boost::asio::ip::tcp::socket socket,
          std::shared_ptr<boost::asio::ssl::context> tls);
  ~Session();

  /// Begins the connection, counted in its listener through `slot`.
  void start(ConnectionSlot slot);
  /// A connection over a limit: after the TLS handshake (if any), sends
  /// `code` with `message` and closes.
  void refuse(errc code, std::string message);
  /// Sends `code` with `message` (nothing when `code` is ok: a clean end), stops reading,
  /// flushes what is queued, then closes (forcibly after shutdown_grace).
  void close_after_flush(errc code, std::string_view message);
  // ListenedConnection
  /// The broker is stopping: answers what it has read, sends shutting_down, closes.
  void shut_down() override;
  /// After the token table changed: closes the connection if its token was
  /// revoked or may no longer consume from a queue it is subscribed to.
  void recheck_grant() override;

  // engine::DeliverySink
  bool deliver(engine::Consumer& consumer, const protocol::Delivery& delivery) override;
  void released(engine::Consumer& consumer) override;
  void ended(engine::Consumer& consumer) override;
  // engine::PublishWaiter
  void room(engine::Queue& queue) override;

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
  void handle_triggers(std::string_view body);
  void handle_queues(std::string_view body);
  void send_error(std::uint64_t request_id, errc code, std::string_view message,
                  std::uint32_t retry_after_ms = 0);

  /// The outbound buffer for a non-DELIVER frame (ends any open DELIVER frame).
  /// While an answer waits for its commit, the answers after it queue up
  /// behind it (answers keep request order; deliveries do not wait).
  std::string& out() noexcept {
    if (!waiting_.empty()) return held_;
    deliver_open_ = false;
    return out_;
  }
  /// The storage's last write sequence number (0 without storage).
  std::uint64_t storage_seq() const;
  /// SETTLED for `request_id` with failures_, now, or held until the writes
  /// made since `written_before` are committed (storage.settle = "commit").
  void answer_settled(std::uint64_t request_id, std::uint64_t written_before);
  /// Puts the CONFIRM of a durable publish (taken_) in line; it is
  /// encoded and sent once its writes are durable.
  void hold_confirm(std::uint64_t request_id, engine::Queue& queue);
  /// An answer waiting for write `seq`; the first one asks the store to wake us.
  struct WaitingAnswer;
  void wait(WaitingAnswer answer);
  /// Asks the store to call release_committed() once the first waiting answer's write is in.
  void wait_for_front();
  /// Encodes the answers whose writes are in, with what queued behind them, into out_.
  void release_committed();
  void schedule_flush();
  void flush();
  void on_write(const boost::system::error_code& ec);
  /// Frees engine state and the socket. Idempotent.
  void close();
  /// Counts why the connection ended (the first reason given wins).
  void closing_because(CloseReason reason);

  Broker& broker_;
  ConnectionSlot slot_;  // counted in the listener until close()
  security::Transport transport_;
  std::string peer_;
  bool close_counted_ = false;
  Grant grant_;  // what HELLO's token allows
  protocol::FrameDecoder decoder_;
  std::string out_;      // being filled
  std::string writing_;  // being written
  std::string held_;     // answers behind one waiting for its commit (see out())
  struct WaitingAnswer {
    std::uint64_t seq;   // the storage write it waits for
    std::size_t offset;  // where it goes in held_ (what follows it is queued there)
    std::uint64_t request_id;
    engine::Queue* queue;            // CONFIRM: its queue (pressure read when sent); null: SETTLED
    std::uint64_t removals;          // Engine::removals() then: queue is valid while unchanged
    std::vector<std::uint64_t> ids;  // CONFIRM
    std::vector<std::uint32_t> duplicates;          // CONFIRM
    std::vector<protocol::SettleFailure> failures;  // SETTLED
  };
  std::size_t pending_publishes_ = 0;  // messages in waiting_ (limits.max_pending_publishes)
  std::deque<WaitingAnswer> waiting_;  // in request order
  protocol::DeliverFrameWriter deliver_writer_;
  bool deliver_open_ = false;
  bool writing_now_ = false;
  bool flush_posted_ = false;
  bool reading_ = false;
  // The clocks as process_frames read them, for the frames of that read.
  bool in_batch_ = false;
  engine::Micros batch_now_ = 0;
  std::int64_t batch_wall_ = 0;
  std::size_t read_chunk_ = 4 * 1024;  // what the next read asks room for (see kReadChunk)
  std::size_t read_offered_ = 0;       // room the read under way was given
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

  // Subscriptions by id: each a consumer in the engine, whose count the
  // queue's and connection's frames bound (a SUBSCRIBE per entry, read only
  // while the outbound buffer has room).
  std::unordered_map<std::uint32_t, engine::Consumer*> subscriptions_;
  std::vector<engine::Consumer*> draining_;  // unsubscribed, still holding leases: <= subscriptions
  std::vector<engine::Consumer*> paused_;    // <= subscriptions

  // Scratch reused across frames so the steady state allocates nothing.
  Intake intake_;
  IntakeResult taken_;  // of the last PUBLISH
  std::vector<std::string_view> messages_;
  protocol::DeadLetterRequest dead_letter_request_;
  DeadLetterResult dead_letter_result_;
  std::vector<protocol::AckEntry> acks_;
  std::vector<protocol::NackEntry> nacks_;
  std::vector<protocol::ExtendEntry> extends_;
  std::vector<protocol::SettleFailure> failures_;
};

}  // namespace sluice::net
