// The request handlers of a protocol session: one per frame type. The
// connection itself (I/O, flow control, held answers, closing) is session.cpp.
#include <algorithm>
#include <cstdio>

#include "dead_letters.hpp"
#include "durable_store.hpp"
#include "live_config.hpp"
#include "log.hpp"
#include "session.hpp"
#include "triggers.hpp"

namespace sluice::net {

using protocol::FrameType;

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
    case FrameType::triggers:
      handle_triggers(frame.body);
      break;
    case FrameType::queues:
      handle_queues(frame.body);
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
    broker_.count_auth_failure(Port::protocol);
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
  // A frame held back until there was room is admitted at the time it goes in.
  const auto now = in_batch_ ? batch_now_ : mono_us();
  intake_.offer(publish.queue, messages_, now, in_batch_ ? batch_wall_ : wall_us(), taken_);
  if (taken_.must_wait) {
    broker_.engine().wait_for_room(*taken_.queue, *this, now);
    return false;
  }
  if (!taken_) {
    const auto retry_ms = static_cast<std::uint32_t>((taken_.retry_after + 999) / 1000);
    send_error(publish.request_id, taken_.code, taken_.detail, retry_ms);
    return true;
  }
  engine::Queue& queue = *taken_.queue;
  if (queue.durable())
    hold_confirm(publish.request_id, queue);
  else
    protocol::encode_confirm(out(), publish.request_id, queue.pressure(), taken_.ids,
                             taken_.duplicates);
  return true;
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
  errc why = errc::ok;
  engine::Queue* found = engine.open(sub.queue, &why);
  if (found == nullptr) {
    send_error(sub.request_id, why, open_refused(why, sub.queue));
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
  if (request_id == protocol::kQuietSettle && failures_.empty()) return;  // nothing to tell
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
  wait({store->last_seq(), held_.size(), request_id, nullptr, 0, {}, {}, failures_});
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
  if (request_id == protocol::kQuietSettle && failures_.empty()) return;  // nothing to tell
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
    send_error(request.request_id, problem.code, problem.detail);
    return;
  }
  protocol::encode_ok(out(), request.request_id);
}

void Session::handle_queues(std::string_view body) {
  protocol::QueuesRequest request;
  if (auto s = protocol::decode_queues(body, request); !s) {
    send_error(request.request_id, s.code, s.detail);
    return;
  }
  // Listing shows what the token may see; the rest need admin on the queue.
  if (request.op != protocol::QueueOp::list &&
      !permitted(request.request_id, Permission::admin, request.queue))
    return;
  LiveConfig* live = broker_.live_config();
  if (live == nullptr) {
    send_error(request.request_id, errc::unsupported, "this broker has no queue lifecycle");
    return;
  }
  protocol::QueuesResult result;
  result.request_id = request.request_id;
  const auto visible = [this](std::string_view q) { return broker_.auth().can_see(grant_, q); };
  if (auto problem = live->run(request, visible, mono_us(), result)) {
    send_error(request.request_id, problem.code, problem.detail);
    return;
  }
  protocol::encode_queues_result(out(), result);
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
  if (auto problem =
          dead_letters->run(request, frame > 4096 ? frame - 4096 : 0, dead_letter_result_)) {
    send_error(request.request_id, problem.code, problem.detail);
    return;
  }
  protocol::DeadLettersResultWriter writer(out(), request.request_id);
  for (const DeadLetter& e : dead_letter_result_.entries) writer.add(e.view());
  writer.finish(dead_letter_result_.affected, dead_letter_result_.next_after);
  dead_letter_result_.entries.clear();
}

void Session::handle_triggers(std::string_view body) {
  protocol::TriggerRequest request;
  if (auto s = protocol::decode_triggers(body, request); !s) {
    send_error(request.request_id, s.code, s.detail);
    return;
  }
  const Triggers* triggers = broker_.triggers();
  protocol::TriggerResult result;
  result.request_id = request.request_id;
  if (request.name.empty()) {  // list every trigger this token may administer
    if (triggers != nullptr)
      for (const auto& [name, trigger] : triggers->running())
        if (broker_.auth().check(grant_, Permission::admin, trigger->options().settings.queue) ==
            errc::ok)
          result.entries.push_back(trigger->entry());
    protocol::encode_triggers_result(out(), result);
    return;
  }
  Trigger* trigger = triggers != nullptr ? triggers->find(request.name) : nullptr;
  if (trigger == nullptr) {
    send_error(request.request_id, errc::not_found,
               "no trigger named " + std::string(request.name));
    return;
  }
  if (!permitted(request.request_id, Permission::admin, trigger->options().settings.queue)) return;
  switch (request.op) {
    case protocol::TriggerOp::list:
      break;
    case protocol::TriggerOp::pause:
    case protocol::TriggerOp::resume:
      trigger->set_paused(request.op == protocol::TriggerOp::pause);
      break;
    case protocol::TriggerOp::invoke:
      // Answered when the function answers (or the trigger's timeout passes);
      // other requests on this connection are answered meanwhile.
      trigger->test_invoke(
          std::string(request.body),
          [weak = weak_from_this(), request_id = request.request_id,
           name = std::string(request.name)](OutboundResponse&& response) {
            const auto self = weak.lock();
            if (self == nullptr || self->closed_) return;
            protocol::TriggerResult answer;
            answer.request_id = request_id;
            const Triggers* now = self->broker_.triggers();
            if (const Trigger* t = now != nullptr ? now->find(name) : nullptr)
              answer.entries.push_back(t->entry());
            answer.invoked = true;
            answer.invocation.outcome = static_cast<std::uint8_t>(response.outcome);
            answer.invocation.status = static_cast<std::uint16_t>(response.status);
            answer.invocation.took_us = static_cast<std::uint64_t>(response.took.count());
            answer.invocation.error = response.error;
            answer.invocation.body = response.body;
            protocol::encode_triggers_result(self->out(), answer);
            self->schedule_flush();
          });
      return;
  }
  result.entries.push_back(trigger->entry());
  protocol::encode_triggers_result(out(), result);
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

}  // namespace sluice::net
