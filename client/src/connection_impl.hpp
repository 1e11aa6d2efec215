// The client's private core, shared by its source files: Connection::Impl (one
// connection: its I/O thread and everything that thread owns, plus what user
// threads hand it under a mutex) and the state of a subscription.
//
// connection.cpp: connecting and the I/O loop (read, dispatch, write, close);
// publisher.cpp: publishing and confirms; consumer.cpp: deliveries, settling
// and subscriptions; client.cpp: the public API (Connection's methods).
#pragma once

#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <random>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "sluice/client/client.hpp"
#include "worker_pool.hpp"
#include "sluice/protocol/codec.hpp"
#include "sluice/security/tls.hpp"

namespace sluice::client {

namespace asio = boost::asio;
using asio::ip::tcp;
using protocol::FrameType;

/// Exponential backoff with jitter: `initial` doubling with each attempt up to
/// `max`, each wait a random point in the upper half of its step, so clients
/// retrying together spread out. Reconnects and queue_full retries both use it.
std::chrono::milliseconds jittered_backoff(unsigned attempt, std::chrono::milliseconds initial,
                                           std::chrono::milliseconds max, std::mt19937& rng);

/// A subscription as the I/O thread sees it. Counters are atomics so user
/// threads can read them.
struct SubscriptionState {
  Connection::Handler handler;
  protocol::Subscribe request;  // as first sent: sent again after a reconnect
  std::string queue;            // what request.queue views
  /// A fetch()'s: ends with its link (not subscribed again); `on_link_lost` wakes it.
  std::function<void()> on_link_lost;
  std::uint32_t link = 0;  // I/O thread: the link its SUBSCRIBE went (or goes) out on
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
      : options_(std::move(options)), decoder_(protocol::kDefaultMaxFrameBytes) {
    if (options_.resend_unconfirmed) {
      char prefix[24];
      std::snprintf(
          prefix, sizeof prefix, "c%016llx-",
          static_cast<unsigned long long>(std::uniform_int_distribution<std::uint64_t>()(rng_)));
      dedup_prefix_ = prefix;
    }
  }

  /// The first connection, on the caller's thread (before start()).
  Error open();
  void start();
  void shutdown();

  /// A sluice-dedup-id for resend_unconfirmed: unique to this connection and message.
  std::string next_dedup_id();
  void publish_async(std::string_view queue, std::span<const protocol::Header> headers,
                     std::string_view payload, PublishCallback done);
  bool wait_confirms(std::chrono::milliseconds timeout);

  template <typename T, typename Encode, typename Parse>
  Result<T> call(Encode encode, Parse parse, std::chrono::milliseconds timeout = {});

  /// `on_link_lost`: a fetch's subscription, which ends with its link.
  Result<std::uint32_t> subscribe(std::string_view queue, SubscribeOptions options, Handler handler,
                                  std::function<void()> on_link_lost = {});
  Result<std::vector<Fetched>> fetch(std::string_view queue, std::uint32_t max_messages,
                                     std::chrono::milliseconds wait,
                                     std::chrono::milliseconds lease);
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
  bool connected() const noexcept { return link_up_.load(); }
  ConnectionState state() const {
    std::lock_guard lk(mutex_);
    return closed_    ? ConnectionState::closed
           : link_up_ ? ConnectionState::connected
                      : ConnectionState::reconnecting;
  }
  Error last_error() const {
    std::lock_guard lk(mutex_);
    return close_error_;
  }

  // From HELLO_OK (each link's; read by user threads).
  std::atomic<std::uint32_t> max_payload_bytes_{protocol::kDefaultMaxPayloadBytes};
  std::atomic<std::uint32_t> max_frame_bytes_{protocol::kDefaultMaxFrameBytes};
  std::unordered_set<std::shared_ptr<asio::steady_timer>> retry_timers_;  // I/O thread
  std::mt19937 rng_{std::random_device{}()};                              // I/O thread
  std::atomic<std::uint64_t> refused_auto_acks_{0};
  std::atomic<std::uint8_t> pressure_{0};
  std::atomic<std::uint64_t> direct_publishes_{0};
  /// The current link, counting from 1 (see LeaseHandle::link).
  std::atomic<std::uint32_t> link_{0};
  const Options options_;
  /// With resend_unconfirmed: "<random hex>-" that, with a count, makes dedup ids.
  std::string dedup_prefix_;
  std::atomic<std::uint64_t> dedup_count_{0};

 private:
  void read();
  void on_read(const boost::system::error_code& ec, std::size_t n);
  void handle(const protocol::Frame& frame);
  void handle_deliver(std::string_view body);
  void handle_confirm(std::string_view body);
  void answer(std::uint64_t request_id, const Error& error, FrameType type, std::string_view body);
  void take_pending();
  /// Takes the requests callers wrote themselves into in_flight_ (I/O thread).
  void adopt_sent_requests();
  /// The request `request_id` in flight, or in_flight_.end() (I/O thread).
  /// Looks among the requests callers wrote themselves too.
  std::unordered_map<std::uint64_t, Pending>::iterator find_in_flight(std::uint64_t request_id);
  /// A caller's PUBLISH of one message written on its own thread when the
  /// connection is idle, with no hop to the I/O thread before the bytes leave
  /// (`lk` holds mutex_, released during the send). False: not idle, nothing
  /// done, `done` untouched (the caller queues the message for the I/O thread).
  bool try_send_direct(std::unique_lock<std::mutex>& lk, std::string_view queue,
                       std::span<const protocol::Header> headers, std::string_view payload,
                       PublishCallback& done);
  /// The link is going: no caller writes to its socket from here (I/O thread, mutex_ held).
  void stop_caller_writes(std::unique_lock<std::mutex>& lk);
  /// Whether each PUBLISH keeps a copy of its frame, to send again on
  /// queue_full (retries on) or after a reconnect (resend_unconfirmed).
  bool keep_frames() const {
    return options_.retry_queue_full_for.count() > 0 || options_.resend_unconfirmed;
  }
  void send_settlements();
  /// A SETTLED for quiet settles lists the automatic acks and nacks refused.
  void count_auto_refusals(std::string_view settled_body);
  void flush();
  /// One attempt at a link: resolve, connect, TLS, HELLO and HELLO_OK, bounded by
  /// connect_timeout (up to the TLS handshake) and request_timeout (HELLO). Runs
  /// on the io_context; `done` gets ok or why not.
  struct Attempt;
  void async_open(std::function<void(Error)> done);
  void read_hello_ok(std::shared_ptr<Attempt> attempt);
  /// The link dropped: fails or keeps what was on it, then reconnects (or, when
  /// that is off or `error` is final, closes for good with fail_all).
  void link_lost(Error error);
  void schedule_reconnect(const Error& why);
  /// A new link is up: subscribe again, resend, flush what waited.
  void link_up();
  void notify(ConnectionState state, const Error& why) {
    if (options_.on_state) options_.on_state(state, why);
  }
  /// Closes for good.
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
  // Plain TCP or TLS (each attempt makes a new one); socket() is the TCP socket underneath.
  std::shared_ptr<asio::ssl::context> tls_context_;
  std::unique_ptr<security::Transport> transport_ =
      std::make_unique<security::Transport>(tcp::socket(io_));
  // The previous link's, kept until its aborted operations have completed.
  std::unique_ptr<security::Transport> retired_;
  tcp::socket& socket() { return transport_->socket(); }
  std::atomic<bool> link_up_{false};
  std::shared_ptr<Attempt> attempt_;  // I/O thread: the one under way
  asio::steady_timer reconnect_timer_{io_};
  unsigned reconnect_attempts_ = 0;
  std::chrono::steady_clock::time_point down_since_;
  std::vector<Pending> resend_;  // unconfirmed PUBLISHes to send on the next link
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
  // Writing from the caller's thread (publish_async on an idle connection, see
  // publisher.cpp). One writer at a time owns the socket's write side: the I/O
  // thread while its write is under way, or one caller for one send().
  enum class Writer : std::uint8_t { none, io, caller };
  Writer writer_ = Writer::none;
  int direct_fd_ = -1;                   // the socket while a plain TCP link is up, else -1
  std::string direct_frame_;             // the caller writer's frame
  std::string remainder_;                // its unsent tail: the I/O thread writes it first
  bool flush_after_caller_ = false;      // the I/O thread has bytes waiting for that send
  std::condition_variable caller_done_;  // a link closing waits for that send to end
  // Requests callers wrote, until the I/O thread takes them into in_flight_.
  std::vector<std::pair<std::uint64_t, Pending>> sent_requests_;
  std::size_t unconfirmed_ = 0;
  bool closed_ = false;
  bool closing_ = false;  // shutdown() began: a drop now is final
  Error close_error_;
  std::atomic<std::uint64_t> next_request_id_{1};
  std::atomic<std::uint32_t> next_subscription_id_{1};
  std::unordered_map<std::uint32_t, std::shared_ptr<SubscriptionState>> subscription_index_;
  // Subscriptions with workers: stopped at unsubscribe and at shutdown (user threads).
  std::unordered_map<std::uint32_t, std::shared_ptr<WorkerPool>> pools_;

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

// ------------------------------------------------------------ requests

// call() is here, not in a source file, because every one of them sends requests.
template <typename T, typename Encode, typename Parse>
Result<T> Connection::Impl::call(Encode encode, Parse parse, std::chrono::milliseconds timeout) {
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
  if (future.wait_for(std::max(timeout, options_.request_timeout)) != std::future_status::ready)
    return Error{errc::timed_out, "no answer from the broker within request_timeout"};
  return future.get();
}

}  // namespace sluice::client
