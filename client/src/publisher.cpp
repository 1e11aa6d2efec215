// Publishing: messages checked and batched into PUBLISH frames on user
// threads, handed to the I/O thread, then confirmed or failed (queue_full
// retried with backoff when configured); and the blocking publish of one frame.
#include "connection_impl.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace sluice::client {

namespace {
/// queue_full retries: from 10 ms doubling up to 1 s, with jitter, and never
/// sooner than the broker's retry-after.
std::chrono::milliseconds backoff_delay(unsigned attempt, std::chrono::milliseconds at_least,
                                        std::mt19937& rng) {
  using std::chrono::milliseconds;
  return std::max(at_least, jittered_backoff(attempt, milliseconds(10), milliseconds(1000), rng));
}

/// Rewrites the request id of an encoded PUBLISH frame (right after length and type).
void put_request_id(std::string& frame, std::uint64_t id) {
  std::memcpy(frame.data() + protocol::kFrameHeaderBytes, &id, sizeof id);
}

/// Room in a PUBLISH frame besides its messages: length, type, request id,
/// queue name (at most 200 bytes) and count, rounded up.
constexpr std::size_t kPublishFrameOverhead = 512;

/// publish_async writes from the caller's thread only while fewer than this
/// many publishes await confirms; past it the I/O thread batches them.
constexpr std::size_t kDirectMaxUnconfirmed = 8;
/// The caller-written frame's buffer is kept between publishes up to this size.
constexpr std::size_t kKeptFrameBytes = 64 * 1024;

/// Bytes `encode_message` writes for this message.
std::size_t encoded_size(std::span<const protocol::Header> headers, std::string_view payload) {
  std::size_t n = 1 + 2 + 4 + payload.size();
  for (const auto& h : headers) n += 4 + h.key.size() + h.value.size();
  return n;
}

/// Checks a message against the protocol limits before it is queued, so a bad
/// message fails alone instead of failing the whole batch at the broker.
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

// ------------------------------------------------------------ user threads

std::string Connection::Impl::next_dedup_id() {
  return dedup_prefix_ + std::to_string(dedup_count_.fetch_add(1, std::memory_order_relaxed));
}

void Connection::Impl::publish_async(std::string_view queue,
                                     std::span<const protocol::Header> headers,
                                     std::string_view payload, PublishCallback done) {
  // Resent after a reconnect: with a dedup id, so the broker takes it once.
  std::vector<protocol::Header> with_id;
  std::string dedup_id;
  if (options_.resend_unconfirmed &&
      std::none_of(headers.begin(), headers.end(),
                   [](const protocol::Header& h) { return h.key == protocol::kDedupHeader; })) {
    dedup_id = next_dedup_id();
    with_id.assign(headers.begin(), headers.end());
    with_id.push_back({protocol::kDedupHeader, dedup_id});
    headers = with_id;
  }
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
  if (try_send_direct(lk, queue, headers, payload, done)) return;
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
  auto copy = std::make_shared<std::vector<Message>>(messages.begin(), messages.end());
  if (options_.resend_unconfirmed)
    for (auto& m : *copy)
      if (std::none_of(m.headers.begin(), m.headers.end(),
                       [](const auto& h) { return h.first == protocol::kDedupHeader; }))
        m.headers.emplace_back(protocol::kDedupHeader, next_dedup_id());
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
  // The connection dropped with the frame on the wire: send it again (its dedup
  // ids keep the broker from taking a message twice) while time is left.
  while (!result && result.error().code == errc::outcome_unknown && options_.resend_unconfirmed &&
         std::chrono::steady_clock::now() < until + options_.request_timeout)
    result = attempt();
  for (unsigned n = 0; !result && result.error().code == errc::queue_full; ++n) {
    thread_local std::mt19937 rng{std::random_device{}()};
    const auto delay = backoff_delay(n, result.error().retry_after, rng);
    if (std::chrono::steady_clock::now() + delay > until) break;
    std::this_thread::sleep_for(delay);
    result = attempt();
  }
  return result;
}

bool Connection::Impl::try_send_direct(std::unique_lock<std::mutex>& lk, std::string_view queue,
                                       std::span<const protocol::Header> headers,
                                       std::string_view payload, PublishCallback& done) {
  // Idle: a plain TCP link is up, nobody is writing or about to (the I/O
  // thread claims the write side while it holds bytes to write, see
  // take_pending), nothing of ours waits for it, and few publishes await their
  // confirms. A burst goes the other way, so the I/O thread writes many
  // messages in one frame and call.
  if (direct_fd_ < 0 || writer_ != Writer::none || wake_posted_ || publish_open_ ||
      !pending_.empty() || !remainder_.empty() || unconfirmed_ >= kDirectMaxUnconfirmed ||
      on_io_thread())
    return false;
  // Everything that can throw comes before the write side is claimed, and
  // leaves `done` with the caller.
  const std::uint64_t id = next_request_id_++;
  std::string& frame = direct_frame_;  // the lock keeps it ours until writer_ is claimed
  frame.clear();
  const protocol::PublishFrame f = protocol::begin_publish(frame, id, queue);
  protocol::encode_message(frame, headers, payload);
  protocol::end_publish(frame, f, 1);
  Pending p;
  if (keep_frames()) {
    p.frame = frame;
    p.retry_until = std::chrono::steady_clock::now() + options_.retry_queue_full_for;
  }
  sent_requests_.reserve(sent_requests_.size() + 1);
  p.publish.push_back(std::move(done));
  // Registered before the bytes leave, so the I/O thread finds it for the CONFIRM.
  sent_requests_.emplace_back(id, std::move(p));
  ++unconfirmed_;
  writer_ = Writer::caller;
  const int fd = direct_fd_;

  // Sent without the lock, so the I/O thread never waits for this system call
  // (a link closing waits for it in stop_caller_writes, so the descriptor stays ours).
  lk.unlock();
  const ssize_t n = ::send(fd, frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  lk.lock();
  writer_ = Writer::none;
  const std::size_t sent = n > 0 ? static_cast<std::size_t>(n) : 0;
  if (sent > 0) direct_publishes_.fetch_add(1, std::memory_order_relaxed);
  // A full socket buffer (or a failed send): the I/O thread writes the rest
  // before anything else, and meets any error on the link itself.
  if (sent < frame.size()) remainder_.assign(frame, sent);
  if ((sent < frame.size() || flush_after_caller_) && !wake_posted_) {
    wake_posted_ = true;
    asio::post(io_, [this] { take_pending(); });
  }
  flush_after_caller_ = false;
  if (frame.capacity() > kKeptFrameBytes) std::string().swap(frame);
  caller_done_.notify_all();
  return true;
}

// ------------------------------------------------------------ I/O thread

void Connection::Impl::adopt_sent_requests() {
  std::lock_guard lk(mutex_);
  for (auto& [id, p] : sent_requests_) in_flight_.emplace(id, std::move(p));
  sent_requests_.clear();
}

std::unordered_map<std::uint64_t, Connection::Impl::Pending>::iterator
Connection::Impl::find_in_flight(std::uint64_t request_id) {
  auto it = in_flight_.find(request_id);
  if (it != in_flight_.end()) return it;
  adopt_sent_requests();
  return in_flight_.find(request_id);
}

void Connection::Impl::take_pending() {
  {
    std::lock_guard lk(mutex_);
    wake_posted_ = false;
    if (publish_open_) {
      protocol::end_publish(pending_, open_frame_, open_count_);
      publish_open_ = false;
    }
    const bool keep = keep_frames();
    for (std::size_t i = 0; i < pending_requests_.size(); ++i) {
      auto& [id, p] = pending_requests_[i];
      if (keep) {
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
    // Bytes to write: no caller may send before them (flush() writes them, or,
    // while a caller's send is under way, that caller posts this again after it).
    if (!out_.empty()) {
      if (writer_ == Writer::none)
        writer_ = Writer::io;
      else if (writer_ == Writer::caller)
        flush_after_caller_ = true;
    }
  }
  flush();
}

void Connection::Impl::handle_confirm(std::string_view body) {
  protocol::Confirm c;
  if (!protocol::decode_confirm(body, c)) {
    fail_all({errc::malformed_frame, "the broker sent a malformed CONFIRM"});
    return;
  }
  pressure_.store(c.pressure, std::memory_order_relaxed);
  auto it = find_in_flight(c.request_id);
  if (it == in_flight_.end()) return;
  Pending p = std::move(it->second);
  in_flight_.erase(it);
  if (p.answer) {  // a blocking publish/publish_batch
    p.answer({}, FrameType::confirm, body);
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

}  // namespace sluice::client
