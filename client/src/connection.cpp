// The connection: connecting (TCP, TLS, the HELLO handshake) and the I/O
// thread's life, and its loop: reading and dispatching frames, answering
// requests by id, writing, and failing everything once the connection closes.
#include "connection_impl.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

namespace sluice::client {

namespace {
constexpr std::size_t kReadChunk = 128 * 1024;
}  // namespace

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
    case FrameType::dead_letters_result:
    case FrameType::triggers_result: {
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

}  // namespace sluice::client
