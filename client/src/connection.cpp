// The connection: connecting (TCP, TLS, the HELLO handshake) and the I/O
// thread's life, and its loop: reading and dispatching frames, answering
// requests by id, writing, and failing everything once the connection closes.
#include "connection_impl.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace sluice::client {

namespace {
constexpr std::size_t kReadChunk = 128 * 1024;
}  // namespace

// ------------------------------------------------------------ connect

std::chrono::milliseconds jittered_backoff(unsigned attempt, std::chrono::milliseconds initial,
                                           std::chrono::milliseconds max, std::mt19937& rng) {
  const std::int64_t first = std::max<std::int64_t>(1, initial.count());
  const std::int64_t cap = std::min<std::int64_t>(std::max<std::int64_t>(first, max.count()),
                                                  first << std::min(attempt, 20u));
  std::uniform_int_distribution<std::int64_t> jitter(cap / 2, cap);
  return std::chrono::milliseconds(jitter(rng));
}

namespace {
/// Errors after which trying again cannot help: the connection closes for good.
bool final_error(errc code) {
  return code == errc::unauthenticated || code == errc::forbidden ||
         code == errc::unsupported_version || code == errc::invalid_argument;
}
}  // namespace

struct Connection::Impl::Attempt {
  explicit Attempt(asio::io_context& io) : timer(io), resolver(io) {}
  asio::steady_timer timer;
  tcp::resolver resolver;
  bool expired = false;  // the timer fired: the aborted step reports timed_out
  bool finished = false;
  std::string where;
  std::string hello;
  std::function<void(Error)> done;

  void finish(Error e) {
    if (finished) return;
    finished = true;
    timer.cancel();
    done(std::move(e));
  }
};

Error Connection::Impl::open() {
  if (options_.tls) {
    std::string error;
    tls_context_ = security::client_context(options_.ca_file, error);
    if (!tls_context_) return {errc::invalid_argument, error};
  }
  Error result{errc::internal, "the connection attempt did not finish"};
  async_open([&](Error e) { result = std::move(e); });
  io_.run();  // no work guard yet: returns when the attempt has finished
  io_.restart();
  if (!result) {
    link_ = 1;
    link_up_ = true;
    direct_fd_ = tls_context_ ? -1 : socket().native_handle();
  }
  return result;
}

void Connection::Impl::async_open(std::function<void(Error)> done) {
  auto a = std::make_shared<Attempt>(io_);
  attempt_ = a;
  a->where = options_.host + ":" + std::to_string(options_.port);
  a->done = std::move(done);
  // A fresh transport per attempt; the old one lives until its aborted operations completed.
  retired_ = std::move(transport_);
  transport_ = tls_context_ ? std::make_unique<security::Transport>(tcp::socket(io_), tls_context_)
                            : std::make_unique<security::Transport>(tcp::socket(io_));
  if (tls_context_) {
    const std::string& name = options_.server_name.empty() ? options_.host : options_.server_name;
    if (!security::expect_server_name(*transport_->tls(), name))
      return a->finish({errc::invalid_argument, "cannot verify the server name " + name});
  }
  // One deadline for resolving, connecting and the TLS handshake; another for HELLO.
  a->timer.expires_after(options_.connect_timeout);
  a->timer.async_wait([this, a](const boost::system::error_code& ec) {
    if (ec || a->finished) return;
    a->expired = true;
    a->resolver.cancel();
    boost::system::error_code ignored;
    if (attempt_ == a) socket().close(ignored);
  });
  a->resolver.async_resolve(
      options_.host, std::to_string(options_.port),
      [this, a](const boost::system::error_code& ec, const tcp::resolver::results_type& endpoints) {
        if (a->finished) return;
        if (a->expired) return a->finish({errc::timed_out, "resolving " + a->where + " timed out"});
        if (ec)
          return a->finish(
              {errc::connection_lost, "cannot resolve " + options_.host + ": " + ec.message()});
        asio::async_connect(
            socket(), endpoints,
            [this, a](const boost::system::error_code& ec, const tcp::endpoint&) {
              if (a->finished) return;
              if (a->expired)
                return a->finish({errc::timed_out, "connect to " + a->where + " timed out"});
              if (ec)
                return a->finish(
                    {errc::connection_lost, "cannot connect to " + a->where + ": " + ec.message()});
              boost::system::error_code ignored;
              socket().set_option(tcp::no_delay(true), ignored);
              auto send_hello = [this, a] {
                a->timer.expires_after(options_.request_timeout);
                a->timer.async_wait([this, a](const boost::system::error_code& ec) {
                  if (ec || a->finished) return;
                  a->expired = true;
                  boost::system::error_code ignored;
                  if (attempt_ == a) socket().close(ignored);
                });
                protocol::Hello hello;
                hello.client_name = options_.client_name;
                hello.token = options_.token;
                protocol::encode_hello(a->hello, hello);
                asio::async_write(
                    *transport_, asio::buffer(a->hello),
                    [this, a](const boost::system::error_code& ec, std::size_t) {
                      if (a->finished) return;
                      if (a->expired)
                        return a->finish(
                            {errc::timed_out, "sending HELLO to " + a->where + " timed out"});
                      if (ec)
                        return a->finish(
                            {errc::connection_lost, "sending HELLO failed: " + ec.message()});
                      decoder_ = protocol::FrameDecoder(protocol::kDefaultMaxFrameBytes);
                      read_hello_ok(a);
                    });
              };
              auto* tls = transport_->tls();
              if (tls == nullptr) return send_hello();
              tls->async_handshake(
                  asio::ssl::stream_base::client,
                  [a, send_hello](const boost::system::error_code& ec) {
                    if (a->finished) return;
                    if (a->expired)
                      return a->finish(
                          {errc::timed_out, "TLS handshake with " + a->where + " timed out"});
                    if (ec)
                      return a->finish({errc::connection_lost,
                                        "TLS handshake with " + a->where +
                                            " failed: " + security::describe_tls_error(ec)});
                    send_hello();
                  });
            });
      });
}

void Connection::Impl::read_hello_ok(std::shared_ptr<Attempt> a) {
  auto space = decoder_.prepare(4096);
  transport_->async_read_some(
      asio::buffer(space.data(), space.size()),
      [this, a](const boost::system::error_code& e, std::size_t n) {
        if (a->finished) return;
        if (a->expired) return a->finish({errc::timed_out, "no HELLO_OK from " + a->where});
        if (e)
          return a->finish({errc::connection_lost,
                            "handshake read failed: " +
                                (e == asio::error::eof
                                     ? std::string("the broker closed the connection (a TLS port?)")
                                     : security::describe_tls_error(e))});
        decoder_.commit(n);
        protocol::Frame frame;
        errc framing = errc::ok;
        auto r = decoder_.next(frame, framing);
        if (r == protocol::FrameDecoder::Result::need_more) return read_hello_ok(a);
        if (r == protocol::FrameDecoder::Result::error)
          return a->finish({framing, "bad frame during handshake"});
        if (static_cast<FrameType>(frame.type) == FrameType::error) {
          protocol::ErrorFrame err;
          protocol::decode_error(frame.body, err);
          return a->finish({err.code, std::string(err.message)});
        }
        if (static_cast<FrameType>(frame.type) != FrameType::hello_ok)
          return a->finish({errc::malformed_frame, "expected HELLO_OK"});
        protocol::HelloOk ok;
        if (auto s = protocol::decode_hello_ok(frame.body, ok); !s)
          return a->finish({s.code, s.detail});
        max_payload_bytes_ = ok.max_payload_bytes;
        max_frame_bytes_ = ok.max_frame_bytes;
        // Answers may be larger than what we may send: a CONFIRM carries
        // 8 bytes per id for messages as small as 7 bytes (PROTOCOL.md).
        decoder_ = protocol::FrameDecoder(
            2 * std::max(ok.max_frame_bytes, protocol::kDefaultMaxFrameBytes) + 65536);
        a->finish({});
      });
}

void Connection::Impl::start() {
  work_.emplace(io_.get_executor());
  read();
  thread_ = std::thread([this] { io_.run(); });
  io_thread_id_ = thread_.get_id();
}

void Connection::Impl::shutdown() {
  {
    std::lock_guard lk(mutex_);
    closing_ = true;  // from here a drop is final
  }
  // Workers first, while the connection still settles what they finish.
  std::unordered_map<std::uint32_t, std::shared_ptr<WorkerPool>> pools;
  {
    std::lock_guard lk(mutex_);
    pools.swap(pools_);
  }
  for (auto& [id, pool] : pools) pool->stop();
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
      [this, link = link_.load()](const boost::system::error_code& ec, std::size_t n) {
        if (link != link_ || !link_up_) return;  // an earlier link's
        on_read(ec, n);
      });
}

void Connection::Impl::on_read(const boost::system::error_code& ec, std::size_t n) {
  if (ec) {
    link_lost(
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
      link_lost({framing, "the broker sent a frame this client cannot read"});
      return;
    }
    handle(frame);
    if (!link_up_) return;  // the frame ended the link
  }
  send_settlements();
  flush();
  read();
}

void Connection::Impl::handle(const protocol::Frame& frame) {
  switch (static_cast<FrameType>(frame.type)) {
    case FrameType::deliver:
      handle_deliver(frame.body);
      return;
    case FrameType::confirm:
      handle_confirm(frame.body);
      return;
    case FrameType::error: {
      protocol::ErrorFrame e;
      if (!protocol::decode_error(frame.body, e)) return;
      Error err{e.code, std::string(e.message), std::chrono::milliseconds(e.retry_after_ms)};
      if (e.request_id != 0) {
        answer(e.request_id, err, FrameType::error, frame.body);
      } else if (closes_connection(e.code)) {
        link_lost(err);
      } else if (unsigned id = 0;
                 e.code == errc::queue_not_found &&
                 std::sscanf(std::string(e.message).c_str(), "subscription %u ended", &id) == 1) {
        // Its queue was deleted (PROTOCOL.md, UNSUBSCRIBE): not subscribed again
        // after a reconnect, a fetch on it ends now. Its worker pool, if any,
        // stops at unsubscribe().
        if (auto it = handlers_.find(id); it != handlers_.end() && it->second->on_link_lost)
          it->second->on_link_lost();
        handlers_.erase(id);
        std::lock_guard lk(mutex_);
        subscription_index_.erase(id);
        close_error_ = err;
      } else {
        std::lock_guard lk(mutex_);
        close_error_ = err;  // a connection-level complaint worth keeping
      }
      return;
    }
    case FrameType::ok:
    case FrameType::settled:
    case FrameType::stats_result:
    case FrameType::dead_letters_result:
    case FrameType::triggers_result:
    case FrameType::queues_result: {
      protocol::Reader r(frame.body);
      const std::uint64_t request_id = r.u64();
      if (!r.ok()) return;
      if (request_id == protocol::kQuietSettle &&
          static_cast<FrameType>(frame.type) == FrameType::settled)
        count_auto_refusals(frame.body);
      else
        answer(request_id, {}, static_cast<FrameType>(frame.type), frame.body);
      return;
    }
    default:
      return;  // nothing else is sent to clients in version 1
  }
}

void Connection::Impl::answer(std::uint64_t request_id, const Error& error, FrameType type,
                              std::string_view body) {
  auto it = find_in_flight(request_id);
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

void Connection::Impl::flush() {
  // While reconnecting, what is sent waits in out_ for the next link.
  if (!link_up_ || writing_now_) return;
  {
    // Callers write on their own while the write side is free (publisher.cpp):
    // the rest of a frame one began goes first, and none writes while we do.
    std::lock_guard lk(mutex_);
    if (writer_ == Writer::caller) {  // it posts take_pending when done, which flushes
      flush_after_caller_ = flush_after_caller_ || !out_.empty();
      return;
    }
    if (!remainder_.empty()) {
      out_.insert(0, remainder_);
      remainder_.clear();
    }
    writer_ = out_.empty() ? Writer::none : Writer::io;
  }
  if (out_.empty()) return;
  std::swap(out_, writing_);
  writing_now_ = true;
  asio::async_write(*transport_, asio::buffer(writing_),
                    [this, link = link_.load()](const boost::system::error_code& ec, std::size_t) {
                      writing_now_ = false;
                      writing_.clear();
                      if (link != link_) {  // an earlier link's write, aborted
                        flush();
                        return;
                      }
                      if (ec) {
                        if (link_up_)
                          link_lost({errc::connection_lost, "write failed: " + ec.message()});
                        return;
                      }
                      flush();
                    });
}

// ------------------------------------------------------------ reconnecting

void Connection::Impl::link_lost(Error error) {
  bool closing;
  {
    std::lock_guard lk(mutex_);
    closing = closing_ || closed_;
  }
  if (closing || !options_.reconnect.enabled || final_error(error.code)) {
    fail_all(std::move(error));
    return;
  }
  if (!link_up_) return;
  {
    std::unique_lock lk(mutex_);
    link_up_ = false;
    stop_caller_writes(lk);
    close_error_ = error;
  }
  adopt_sent_requests();  // what callers wrote is in flight like the rest
  boost::system::error_code ignored;
  socket().close(ignored);  // its operations complete, aborted, as an earlier link's
  down_since_ = std::chrono::steady_clock::now();
  reconnect_attempts_ = 0;

  // What was on the wire: its outcome is unknown. PUBLISHes are resent on the
  // next link when asked for; everything else fails.
  out_.clear();
  acks_.clear();
  ack_owners_.clear();
  nacks_.clear();
  nack_owners_.clear();
  const Error unknown{errc::outcome_unknown, "the connection dropped before the broker answered (" +
                                                 error.detail +
                                                 "): it may or may not have been done"};
  auto in_flight = std::move(in_flight_);
  in_flight_.clear();
  std::vector<std::pair<std::uint64_t, Pending*>> to_resend;
  for (auto& [id, p] : in_flight) {
    if (!p.publish.empty()) {
      if (options_.resend_unconfirmed && !p.frame.empty())
        to_resend.emplace_back(id, &p);
      else
        fail_publish(p, unknown);
    } else if (p.answer) {
      p.answer(unknown, FrameType::error, {});
    }
  }
  // Resent in the order they were first sent (request ids are given in that
  // order), not the map's: a queue keeps one publisher's order across a drop.
  std::sort(to_resend.begin(), to_resend.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [id, p] : to_resend) resend_.push_back(std::move(*p));
  // What the subscriptions held is the broker's again; fetches end.
  for (auto it = handlers_.begin(); it != handlers_.end();) {
    it->second->held = 0;
    if (it->second->on_link_lost) {
      it->second->on_link_lost();
      it = handlers_.erase(it);
    } else {
      ++it;
    }
  }
  {
    std::lock_guard lk(mutex_);
    for (auto& [id, pool] : pools_) pool->drop_queued();
  }
  notify(ConnectionState::reconnecting, error);
  schedule_reconnect(error);
}

void Connection::Impl::schedule_reconnect(const Error& why) {
  const auto& r = options_.reconnect;
  if (r.give_up_after.count() > 0 &&
      std::chrono::steady_clock::now() - down_since_ >= r.give_up_after) {
    fail_all({why.code, "gave up reconnecting: " + why.detail});
    return;
  }
  reconnect_timer_.expires_after(
      jittered_backoff(reconnect_attempts_++, r.initial_delay, r.max_delay, rng_));
  reconnect_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    async_open([this](Error e) {
      {
        std::lock_guard lk(mutex_);
        if (closing_ || closed_) return;
      }
      if (!e) return link_up();
      if (final_error(e.code)) return fail_all(std::move(e));
      notify(ConnectionState::reconnecting, e);
      schedule_reconnect(e);
    });
  });
}

void Connection::Impl::link_up() {
  retired_.reset();
  ++link_;
  {
    std::lock_guard lk(mutex_);
    link_up_ = true;
  }
  // Subscribe again first, in the order they were made, then resend, then what waited.
  std::vector<std::pair<std::uint32_t, std::shared_ptr<SubscriptionState>>> subs(handlers_.begin(),
                                                                                 handlers_.end());
  std::sort(subs.begin(), subs.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string first;
  for (auto& [id, state] : subs) {
    if (state->link == link_) continue;  // made while reconnecting: its SUBSCRIBE waits in out_
    state->link = link_;
    Pending p;
    p.answer = [this, id = id, queue = state->queue](const Error& e, FrameType, std::string_view) {
      if (!e || e.code == errc::outcome_unknown) return;
      // The broker refused it this time (its rights or the queue changed): it is gone.
      handlers_.erase(id);
      {
        std::lock_guard lk(mutex_);
        subscription_index_.erase(id);
      }
      notify(ConnectionState::connected,
             {e.code, "subscribing to " + queue + " again was refused: " + e.detail});
    };
    protocol::Subscribe s = state->request;
    s.queue = state->queue;
    s.request_id = register_request(std::move(p));
    protocol::encode_subscribe(first, s);
  }
  for (auto& p : resend_) {
    const std::uint64_t id = next_request_id_++;
    std::memcpy(p.frame.data() + protocol::kFrameHeaderBytes, &id, sizeof id);
    first.append(p.frame);
    in_flight_.emplace(id, std::move(p));
  }
  resend_.clear();
  out_.insert(0, first);
  read();
  flush();
  {
    // Callers write on their own only once what waited for this link is out.
    std::lock_guard lk(mutex_);
    if (!out_.empty() || writing_now_) writer_ = Writer::io;
    direct_fd_ = tls_context_ ? -1 : socket().native_handle();
  }
  notify(ConnectionState::connected, {});
}

void Connection::Impl::stop_caller_writes(std::unique_lock<std::mutex>& lk) {
  direct_fd_ = -1;
  // A caller's send() under way ends within microseconds (it never blocks);
  // the socket is closed after it, so its descriptor is never another's.
  caller_done_.wait(lk, [this] { return writer_ != Writer::caller; });
  writer_ = Writer::none;
  remainder_.clear();  // the frame it began is on a link that is gone
  flush_after_caller_ = false;
}

void Connection::Impl::fail_all(Error error) {
  std::vector<std::pair<std::uint64_t, Pending>> not_sent;
  {
    std::unique_lock lk(mutex_);
    if (!closed_) {
      closed_ = true;
      close_error_ = error;
    }
    link_up_ = false;
    stop_caller_writes(lk);
    not_sent = std::move(pending_requests_);
    pending_requests_.clear();
    for (auto& sent : sent_requests_) not_sent.push_back(std::move(sent));
    sent_requests_.clear();
    pending_.clear();
    publish_open_ = false;
  }
  reconnect_timer_.cancel();
  if (attempt_) {
    attempt_->finished = true;  // its handlers see it and stop
    attempt_->timer.cancel();
    attempt_->resolver.cancel();
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
  for (auto& p : resend_) fail(p);
  resend_.clear();
  for (const auto& timer : retry_timers_) timer->cancel();  // their handlers fail them
  for (auto& [id, p] : not_sent) fail(p);
  for (auto& [id, state] : handlers_)
    if (state->on_link_lost) state->on_link_lost();
  handlers_.clear();
  boost::system::error_code ignored;
  socket().close(ignored);
  cv_.notify_all();
  notify(ConnectionState::closed, error);
}

}  // namespace sluice::client
