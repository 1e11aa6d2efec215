// Consuming: deliveries handed to their subscription's handler on the I/O
// thread, automatic acks and nacks sent in batches; and, from user threads,
// subscribe, unsubscribe and settling a lease (ack, nack, extend).
#include "connection_impl.hpp"

#include <cmath>

namespace sluice::client {

// ------------------------------------------------------------ I/O thread

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
    view_.link = link_.load(std::memory_order_relaxed);
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
  // Quiet settles (request id 0): the broker answers only when it refuses an
  // entry (PROTOCOL.md, ACK), so a delivery costs one frame each way, not two.
  // The refusals are counted where the SETTLED arrives (count_auto_refusals).
  // A delivery stops counting as held only now, when its settlement is on its
  // way: the broker cannot have freed the credit any earlier.
  if (!acks_.empty()) {
    protocol::encode_ack(out_, protocol::kQuietSettle, acks_);
    for (auto* owner : ack_owners_) owner->settled();
    acks_.clear();
    ack_owners_.clear();
  }
  if (!nacks_.empty()) {
    protocol::encode_nack(out_, protocol::kQuietSettle, nacks_);
    for (auto* owner : nack_owners_)
      if (owner) owner->settled();
    nacks_.clear();
    nack_owners_.clear();
  }
}

void Connection::Impl::count_auto_refusals(std::string_view settled_body) {
  std::uint64_t request_id;
  std::vector<protocol::SettleFailure> failures;
  if (protocol::decode_settled(settled_body, request_id, failures))
    refused_auto_acks_ += failures.size();
}

// ------------------------------------------------------------ user threads

Result<std::uint32_t> Connection::Impl::subscribe(std::string_view queue, SubscribeOptions so,
                                                  Handler handler,
                                                  std::function<void()> on_link_lost) {
  std::shared_ptr<WorkerPool> pool;
  if (so.workers > 0) {
    // The handler runs on the pool; the I/O thread only copies deliveries in.
    so.max_in_flight = so.workers;
    pool = std::make_shared<WorkerPool>(
        std::move(handler),
        [this](const LeaseHandle& lease, Disposition d, const std::string& reason) {
          if (d == Disposition::ack && reason.empty())
            (void)settle(FrameType::ack, lease, 0);
          else
            (void)settle(FrameType::nack, lease, 0, reason);
        },
        so.workers);
    handler = [raw = pool.get()](const Delivery& d) {
      raw->push(d);
      return Disposition::manual;
    };
  }
  const std::uint32_t id = next_subscription_id_++;
  auto state = std::make_shared<SubscriptionState>();
  state->handler = std::move(handler);
  state->queue.assign(queue);
  state->on_link_lost = std::move(on_link_lost);
  {
    std::lock_guard lk(mutex_);
    subscription_index_[id] = state;
  }
  auto result = call<std::uint32_t>(
      [this, id, so, state](std::uint64_t request_id, std::string& out) mutable {
        handlers_[id] = state;  // before SUBSCRIBE: deliveries may follow at once
        state->link = link_up_ ? link_.load() : link_ + 1;  // while reconnecting: the next
        protocol::Subscribe& s = state->request;  // kept, to subscribe again after a reconnect
        s.request_id = request_id;
        s.subscription_id = id;
        s.queue = state->queue;
        s.max_in_flight = so.max_in_flight;
        s.lease_ms = static_cast<std::uint32_t>(so.lease.count());
        s.rate_milli = static_cast<std::uint32_t>(std::llround(so.rate * 1000));
        s.burst = std::max<std::uint32_t>(so.burst, 1);
        protocol::encode_subscribe(out, s);
      },
      [id](FrameType, std::string_view) { return Result<std::uint32_t>(id); });
  if (result && pool) {
    std::lock_guard lk(mutex_);
    pools_[id] = pool;
  }
  if (!result) {
    if (pool) pool->stop();
    // The broker may have opened it after we stopped waiting, or a reconnect
    // may have subscribed it again before this runs: close it, or every
    // delivery would bounce off the missing handler forever.
    const bool maybe_open =
        result.error().code == errc::timed_out || result.error().code == errc::outcome_unknown;
    asio::post(io_, [this, id, maybe_open] {
      handlers_.erase(id);
      if (maybe_open && link_up_) protocol::encode_unsubscribe(out_, {register_request({}), id});
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
  // unknown_subscription: the broker ended it already (its queue was deleted).
  if (result || result.error().code == errc::unknown_subscription) {
    asio::post(io_, [this, id] { handlers_.erase(id); });
    std::shared_ptr<WorkerPool> pool;
    {
      std::lock_guard lk(mutex_);
      subscription_index_.erase(id);
      if (auto it = pools_.find(id); it != pools_.end()) {
        pool = std::move(it->second);
        pools_.erase(it);
      }
    }
    // What the workers were given still runs and is settled; then they stop.
    if (pool) pool->stop();
  }
  return result.error();
}

Error Connection::Impl::settle(FrameType type, LeaseHandle lease, std::uint32_t ms,
                               std::string reason, std::uint8_t flags) {
  // A lease of an earlier link, or of the link that is down: the broker took
  // the message back when it dropped.
  if (lease.link != 0 && (lease.link != link_.load() || !link_up_))
    return {errc::stale_lease, "the connection dropped since this delivery; it is delivered again"};
  auto result = call<bool>(
      [this, type, lease, ms, reason = std::move(reason), flags](std::uint64_t request_id,
                                                                 std::string& out) {
        // held was zeroed when the lease's link dropped: only a live lease counts down.
        if (type != FrameType::extend && link_up_ && (lease.link == 0 || lease.link == link_)) {
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

Result<std::vector<Fetched>> Connection::Impl::fetch(std::string_view queue,
                                                     std::uint32_t max_messages,
                                                     std::chrono::milliseconds wait,
                                                     std::chrono::milliseconds lease) {
  // A subscription with credit max_messages: the broker sends at most that many.
  // Unsubscribing answers after every delivery it sent before, so what arrived
  // by then is the whole batch.
  struct Batch {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<Fetched> got;
    bool link_lost = false;
  };
  auto batch = std::make_shared<Batch>();
  SubscribeOptions so;
  so.max_in_flight = max_messages;
  so.lease = lease;
  const auto until = std::chrono::steady_clock::now() + wait;
  auto sub = subscribe(
      queue, so,
      [batch, max_messages](const Delivery& d) {
        Fetched f;
        f.lease = sluice::client::handle(d);
        f.attempt = d.attempt;
        f.publish_time_us = d.publish_time_us;
        f.message.payload.assign(d.payload);
        f.message.headers.assign(d.headers.begin(), d.headers.end());
        std::lock_guard lk(batch->mutex);
        batch->got.push_back(std::move(f));
        if (batch->got.size() >= max_messages) batch->cv.notify_all();
        return Disposition::manual;
      },
      [batch] {
        std::lock_guard lk(batch->mutex);
        batch->link_lost = true;
        batch->cv.notify_all();
      });
  if (!sub) return sub.error();
  const Error lost{errc::connection_lost,
                   "the connection dropped (or the queue was deleted) during the fetch; its "
                   "messages are delivered again"};
  {
    std::unique_lock lk(batch->mutex);
    batch->cv.wait_until(lk, until,
                         [&] { return batch->got.size() >= max_messages || batch->link_lost; });
    if (batch->link_lost) {
      lk.unlock();
      // The subscription ended with its link: nothing to unsubscribe, and no
      // waiting for the next link.
      std::lock_guard index(mutex_);
      subscription_index_.erase(*sub);
      return lost;
    }
  }
  const Error closed = unsubscribe(*sub);
  std::lock_guard lk(batch->mutex);
  if (batch->link_lost || (closed && closed.code != errc::unknown_subscription)) return lost;
  return std::move(batch->got);
}

}  // namespace sluice::client
