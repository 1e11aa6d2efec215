// The broker's sans-I/O core: queues, consumers, leases and dispatch. Time
// comes in as an argument; the engine never sees a socket, thread or clock,
// which is what lets tests drive leases to the microsecond.
//
// Dispatch is eager: every operation that makes a message ready or frees
// credit delivers right away, round-robin over the queue's consumers, one
// message per consumer per turn, as far as the gates allow: the queue-wide
// concurrency cap, the queue's dispatch rate, each consumer's credit and its
// rate. Deliveries land in the consumers' sinks, which batch them into frames.
//
// Admission is the publish side: capacity with high/low watermarks, a
// broker-wide memory limit and an ingress rate. A refused publish either waits
// (overflow = block; the engine calls PublishWaiter::room later) or is
// answered queue_full with a retry-after (overflow = reject).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "journal.hpp"
#include "message_events.hpp"
#include "message_store.hpp"
#include "queue.hpp"
#include "sluice/protocol/errc.hpp"
#include "sluice/protocol/error.hpp"
#include "sluice/protocol/frames.hpp"
#include "string_map.hpp"

namespace sluice::engine {

struct SubscribeResult {
  Consumer* consumer = nullptr;
  errc code = errc::ok;
  const char* detail = "";
};

/// Whether a publish may enter a queue now.
struct Admission {
  errc code = errc::ok;    // ok, queue_full, or invalid_argument (batch over the capacity)
  Micros retry_after = 0;  // with queue_full: when trying again is worthwhile
  const char* detail = "";
  Throttle reason = Throttle::capacity;  // with queue_full
};

/// What became of one published message.
struct Published {
  std::uint64_t id = 0;
  bool duplicate = false;  // seen before (dedup id or sequence number): not enqueued again
};

/// Not thread-safe: one engine per thread (shard); every call on that thread.
class Engine {
 public:
  explicit Engine(QueueOptions defaults = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// The options of queues created from now on by first use.
  void set_defaults(const QueueOptions& options) { defaults_ = options; }
  /// Creates the queue `name` now (or finds it) and gives it `options`: the
  /// queues of the config file exist from start-up, visible in stats.
  Queue& declare(std::string_view name, const QueueOptions& options);
  /// The queue named `name`, created with default options on first use.
  /// The name must already be valid (protocol::valid_queue_name).
  Queue& queue(std::string_view name);
  /// The queue `name`, created with default options on first use unless
  /// queues are not created by use (set_auto_create) or that would make more
  /// than the queue limit: then nullptr, and `why` (if given) says which
  /// (queue_not_found, too_many_queues).
  Queue* open(std::string_view name, errc* why = nullptr);
  /// Most queues open() creates (declared queues count, and always exist). 0: no limit.
  void set_max_queues(std::size_t limit) noexcept { max_queues_ = limit; }
  /// Whether open() creates a queue that does not exist (queues.auto_create).
  void set_auto_create(bool on) noexcept { auto_create_ = on; }
  bool auto_create() const noexcept { return auto_create_; }
  std::size_t queue_count() const noexcept { return queues_.size(); }
  /// The queue if it exists.
  Queue* find(std::string_view name) const noexcept;
  /// The options of queue `name`: its own, or the defaults it would be created with.
  const QueueOptions& options_for(std::string_view name) const noexcept;
  /// Every queue, in no particular order.
  std::vector<const Queue*> queues() const;

  /// May a PUBLISH of `count` messages enter `queue` now?
  /// Yes while the queue is below its high watermark (then it stays full until
  /// below the low one) and the broker below its memory limit, and the ingress
  /// rate allows; `ok` takes the ingress tokens. A frame admitted whole may
  /// pass the watermark by itself. The caller publishes on ok, and on
  /// queue_full waits (wait_for_room) or refuses as the queue's overflow says.
  /// `count_refusal`: false for a caller that polls (a redrive), so that
  /// refused_total counts producers only.
  Admission admit(Queue& queue, std::uint64_t count, Micros now, bool count_refusal = true);
  /// Tells `waiter` (once) when `queue` may take publishes again.
  void wait_for_room(Queue& queue, PublishWaiter& waiter, Micros now);
  /// Forgets `waiter` everywhere (its connection is closing).
  void forget_waiter(PublishWaiter& waiter) noexcept;
  /// Broker-wide bound on message memory in bytes (0 = none). Messages count
  /// their encoded size plus kMessageOverhead.
  void set_memory_limit(std::uint64_t bytes) noexcept { memory_limit_ = bytes; }
  std::uint64_t memory_used() const noexcept { return memory_used_; }
  std::uint64_t memory_limit() const noexcept { return memory_limit_; }
  static constexpr std::uint64_t kMessageOverhead = 128;
  /// New options for a live queue: capacities, rates and caps apply at once;
  /// nothing held is lost or delivered twice.
  /// Returns what it refused (invalid_argument, and then it changed nothing):
  /// the key header of a queue that holds messages cannot change.
  Error reconfigure(Queue& queue, const QueueOptions& options, Micros now);

  /// Enqueues one message (its raw encoding) and dispatches. Returns its id.
  /// On a durable queue the message goes to the journal first and waits,
  /// staged, until committed() says the write is on disk; the caller confirms
  /// the publish then (the journal's sequence number tells when).
  /// The message's sluice-* headers (validated by the caller) act here: a
  /// dedup id seen within the window returns the first message's id, flagged
  /// duplicate; a delay or not-before time holds it back; a sequence number
  /// sends it through the queue's resequencer, which drops a number seen
  /// before (flagged duplicate, with the new id, on memory queues; a durable
  /// queue's stage runs after the commit, so its confirm cannot say).
  /// `redriven_from`: the dead-letter entry this message comes back from (0:
  /// a publish); its sluice-* headers were acted on the first time and are
  /// ignored now (attempts start again from 1). A durable queue's journal
  /// removes the entry in the write that stores the message.
  Published publish(Queue& queue, std::string_view message, Micros now, std::int64_t wall_us,
                    std::uint64_t redriven_from = 0);
  /// The same with the message's sluice-* headers and key already read (and
  /// checked) by the caller, with the queue's key header: the door (net's
  /// Intake) parses each message once, and the slot keeps where its key is.
  Published publish(Queue& queue, std::string_view message, const protocol::SystemHeaders& sys,
                    Micros now, std::int64_t wall_us, std::uint64_t redriven_from = 0);

  /// Durable queues write through `journal` (which must outlive the engine's
  /// use of it). Without one, no queue may be durable.
  void set_journal(Journal* journal) noexcept { journal_ = journal; }
  /// Every journal write up to `seq` is on disk: staged messages become ready.
  void committed(std::uint64_t seq, Micros now);
  /// The journal cannot take new records (storage limit or disk full): publishes
  /// to durable queues meet their overflow policy until it can again.
  void set_storage_full(bool full, Micros now);
  bool storage_full() const noexcept { return storage_full_; }
  /// A message of a durable queue read back at start-up, with the deliveries it
  /// had (counted as failed attempts) and when it may go again (0: now).
  /// `wall_now`: the wall clock now (µs), to place its dedup id in the window.
  /// `interrupted`: its last delivery was out, unsettled, when the broker
  /// stopped; finish_recovery() counts it as a failed attempt.
  void restore(Queue& queue, std::uint64_t id, std::string_view message,
               std::int64_t publish_wall_us, std::uint32_t attempts, Micros not_before, Micros now,
               std::int64_t wall_now, bool interrupted = false);
  /// After every restore() and set_next_id(): each interrupted delivery is a
  /// failed attempt with the reason "broker restarted during delivery", so it
  /// is retried after its backoff, or dead-lettered when that was its last
  /// attempt: a restart never gives a message more than max_attempts.
  void finish_recovery(Micros now);
  /// Seeds the generator behind retry jitter (tests replay schedules).
  void set_seed(std::uint64_t seed) { rng_.seed(seed); }
  /// Message ids start at `next_id` (above every stored id).
  void set_next_id(std::uint64_t next_id) noexcept {
    next_message_id_ = std::max(next_message_id_, next_id);
  }

  /// Adds a consumer with `credit` (max unacked deliveries it may hold) and a
  /// lease of `lease` (0: the queue's). Errors: invalid_argument when credit
  /// is 0 or over the queue's max_consumer_in_flight.
  /// `rate`: the consumer's own delivery rate (rate 0 = unlimited), capped by
  /// the queue's max_consumer_rate.
  SubscribeResult subscribe(Queue& queue, DeliverySink& sink, std::uint32_t subscription_id,
                            std::uint32_t credit, Micros lease, Micros now, RateLimit rate = {});
  /// Stops new deliveries to `consumer`. Its leases stay valid so it can still
  /// ack what it holds; when it holds nothing the engine calls the sink's
  /// `released` and frees it (possibly inside this call).
  void unsubscribe(Consumer& consumer);
  /// The consumer's connection is gone: everything it holds is ready again at
  /// once (at the front, in delivery order) and the consumer is freed.
  void disconnect(Consumer& consumer, Micros now);
  /// No deliveries to `consumer` until resume(); what it holds stays its own.
  void pause(Consumer& consumer) noexcept;
  /// Outbound room again: deliveries to `consumer` resume.
  void resume(Consumer& consumer, Micros now);

  /// Settles a delivery as done. stale_lease when the token does not name a
  /// live lease for `message_id` held by a consumer of `caller` (expired,
  /// settled, never issued, or another connection's).
  errc ack(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
           Micros now);
  /// Gives a delivery back as a failed attempt, with the consumer's `reason`:
  /// ready again after `delay`, or (0) after the queue's retry backoff; or to
  /// the dead-letter queue when the attempts are used up or `dead_letter` says
  /// the message is poison. Errors as ack.
  errc nack(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
            Micros delay, Micros now, std::string_view reason = {}, bool dead_letter = false);
  /// Gives a delivery back without using an attempt (the consumer was told to
  /// slow down: a trigger's 429 or 503): first in line again, after `delay`
  /// (0: at once); its next delivery has the same attempt number. Errors as ack.
  errc release(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
               Micros delay, Micros now);
  /// Moves a live lease's deadline to now + `lease`. Errors as ack; invalid_argument for 0.
  errc extend(const DeliverySink& caller, std::uint64_t message_id, std::uint64_t lease_token,
              Micros lease, Micros now);

  /// Handles every deadline at or before `now`: expired leases are failed
  /// attempts (retried after the backoff, or dead-lettered), delayed messages
  /// become ready, rate-limited queues and consumers whose tokens have come
  /// dispatch again, the resequencer releases what waited past its gap timeout.
  void advance(Micros now);
  /// The earliest pending deadline, if any.
  std::optional<Micros> next_deadline() const noexcept;
  /// The owner's one timer: `listener(at)` is called (from inside whichever
  /// engine call moved it) whenever the earliest deadline becomes earlier than
  /// the one last told, and at the end of advance() with the next one. The
  /// owner arms its timer for `at` and calls advance() when it fires; nobody
  /// else needs to look at deadlines. Called at once if one is pending.
  void set_deadline_listener(std::function<void(Micros)> listener);

  // ---- an operator's queue lifecycle ----

  /// Changes whenever a queue is removed: whoever keeps a Queue* (the door's
  /// cache) looks the name up again when it did.
  std::uint64_t removals() const noexcept { return removals_; }
  /// Drops every ready message of `queue` for good; in-flight, delayed, staged
  /// and held ones stay and settle as usual. A durable queue's records go in
  /// one journal write. Returns how many were dropped.
  std::uint64_t purge(Queue& queue, Micros now);
  /// Whether remove_queue may go ahead: queue_in_use when the queue holds
  /// messages or has consumers (unless `force`), or while writes of it are
  /// being committed (staged publishes, attempt or dead-letter records: a
  /// moment; try again).
  Error can_remove(const Queue& queue, bool force) const;
  /// Removes `queue` (can_remove said yes) and destroys it: its consumers end
  /// (their sinks hear ended()), every message goes, and with a journal its
  /// records and its dead-letter entries go in one write. Returns the
  /// messages dropped.
  std::uint64_t remove_queue(Queue& queue, Micros now);

  /// Messages the engine holds in any state.
  std::size_t messages() const noexcept { return store_.live() + parked_; }
  /// Publish time (wall µs) of the oldest message of `queue` ready for
  /// delivery, or 0 when none is. Walks every key lane of a keyed queue.
  std::int64_t oldest_ready_wall_us(const Queue& queue) const;
  /// Tells `events` about failed attempts (it must outlive the engine's use of it).
  void set_events(MessageEvents* events) noexcept { events_ = events; }

 private:
  /// The in-flight slot a token names for `message_id`, or kNil (stale).
  /// A lease past its deadline is expired here first, so a late ack is refused
  /// even when the timer has not fired yet.
  std::uint32_t live_lease(const DeliverySink& caller, std::uint64_t message_id,
                           std::uint64_t lease_token, Micros now);
  void deliver(Queue& queue, std::uint32_t slot, Consumer& consumer, Micros now);
  void dispatch(Queue& queue, Micros now);
  /// Takes a slot out of its owner's in-flight set and the deadline heap.
  /// Returns the consumer that held it.
  Consumer& end_lease(std::uint32_t slot);
  void offer_credit(Consumer& consumer);
  void expire(std::uint32_t slot, Micros now);
  /// A failed attempt of a slot no longer in flight: retry after `delay` (0:
  /// the queue's backoff), or dead-letter it when its attempts are used up or
  /// `poison`.
  void fail(std::uint32_t slot, Micros now, Micros delay, std::string_view reason, bool poison);
  void dead_letter(std::uint32_t slot, Micros now);
  /// Back in line after a failed attempt: after `delay` (0: now, first in line
  /// if `front`), once its attempt record (write `seq`, 0 = none) is on disk.
  void retry_after_record(Queue& queue, std::uint32_t slot, std::uint64_t seq, Micros delay,
                          bool front, Micros now);
  /// The message is in (committed, if durable): wait for its not-before time,
  /// then arrive_now. True when the resequencer dropped it as a duplicate.
  /// `sequence`: its sluice-seq (0: none), as read at the door.
  bool arrive(Queue& queue, std::uint32_t slot, Micros now, std::uint64_t sequence);
  /// Through the resequencer (if it carries a sequence number) into line.
  bool arrive_now(Queue& queue, std::uint32_t slot, Micros now, std::uint64_t sequence);
  /// The sequence number of a delayed publish whose time has come (0: none).
  /// The one place a header is read again: a slot does not keep the number
  /// (8 bytes a message) for a delayed message on a resequencing queue.
  std::uint64_t sequence_of(std::uint32_t slot) const noexcept;
  /// Into its key's lane (or the queue's FIFO) at the back.
  void enqueue(Queue& queue, std::uint32_t slot, Micros now);
  /// Forgets a message for good (acked, dead-lettered, duplicate): memory, lane, slot.
  /// `was_out`: it was its key's message out (acked, dead-lettered), so an
  /// ordered key may go on; false for one that never left the line (purged).
  void drop(std::uint32_t slot, Micros now, bool was_out = true);
  /// A fresh message id (the journal learns of ids in blocks).
  std::uint64_t next_id();
  /// A lease of `owner` ended: offer its credit again, or free it if it is
  /// draining and now holds nothing.
  void credit_returned(Consumer& owner);
  void free_consumer(Consumer& consumer);
  /// Tells the deadline listener when `at` is earlier than what it was told.
  void deadline_moved(Micros at);
  /// Puts `slot` on the deadline heap (its deadline set) and tells the listener.
  void watch_deadline(std::uint32_t slot);
  /// Asks advance() to look at `queue` again at `at` (a rate bucket refills).
  void schedule_wakeup(Queue& queue, Micros at);
  void on_wakeup(Queue& queue, Micros now);
  /// Below the low watermark (and the memory limit) with ingress tokens: tell the waiters.
  void release_waiters(Queue& queue, Micros now);
  /// The same for every queue with waiters (shared memory or storage freed).
  void release_all_waiters(Micros now);
  bool below_low_watermark(const Queue& queue) const noexcept;
  Micros retry_after(const Queue& queue) const noexcept;
  void apply_rates(Queue& queue, Micros now);
  /// Puts a slot among the ready: its key's lane on a keyed queue, or the queue's FIFO.
  void make_ready(Queue& queue, std::uint32_t slot, bool front);
  /// Whether a message made ready now would go out at once (so parking it is wasted work).
  bool would_dispatch(const Queue& queue) const noexcept;
  /// The next ready message of an unkeyed queue, in a slot (a parked one gets one).
  std::uint32_t take_ready(Queue& queue);
  /// Empties an unkeyed queue's ready messages: slots into `slots`, parked
  /// ones dropped here (their durable ids into `durable_ids`). Returns how many were parked.
  std::uint64_t drop_parked(Queue& queue, std::vector<std::uint32_t>& slots,
                            std::vector<std::uint64_t>& durable_ids);
  /// Remembers where the key (a view into `message`) is, for the slot's copy.
  static void keep_key(Slot& s, std::string_view message, std::string_view key) noexcept;
  /// The slot's ordering key ("" when it has none).
  static std::string_view key_of(const Slot& s) noexcept;
  /// A stored message's sluice-* headers and key, for paths that did not
  /// come through the door (recovery, redrive, a raw publish).
  static protocol::SystemHeaders read_arrival(const Queue& queue,
                                              std::string_view message) noexcept;

  QueueOptions defaults_;
  MessageStore store_;
  DeadlineHeap deadlines_{store_};
  std::function<void(Micros)> on_deadline_;
  Micros told_deadline_ = kNever;  // the earliest deadline the listener knows of
  std::uint64_t next_message_id_ = 1;
  StringMap<std::unique_ptr<Queue>> queues_;

  using Wakeup = std::pair<Micros, Queue*>;
  std::vector<Wakeup> wakeups_;  // min-heap on time (std::greater); stale entries are harmless
  std::vector<Queue*> blocked_queues_;  // queues with waiters
  std::uint64_t memory_limit_ = 0;
  std::size_t max_queues_ = 0;
  bool auto_create_ = true;
  std::uint64_t removals_ = 0;
  std::uint64_t memory_used_ = 0;
  std::size_t parked_ = 0;  // ready messages held in spools, without a slot
  bool memory_full_ = false;

  Journal* journal_ = nullptr;
  /// Durable publishes waiting for their journal write, in journal order.
  struct Staged {
    std::uint64_t seq;  // the journal write
    std::uint32_t slot;
    std::uint64_t sequence;  // its sluice-seq, read at the door (0: none)
  };
  std::deque<Staged> staged_;
  std::deque<std::pair<std::uint64_t, std::uint32_t>> dead_letters_;  // the same, leaving
  std::mt19937_64 rng_{0x5eed};
  std::vector<std::uint32_t> released_;     // scratch for the resequencer
  std::vector<std::uint32_t> interrupted_;  // restored deliveries for finish_recovery()
  /// Durable messages given back (a failed attempt) whose attempt record is
  /// not on disk yet: counted delayed, they go on once it is (committed()),
  /// so a crash can never show a consumer an attempt number lower than one
  /// it has seen. In journal order.
  struct RetryRecord {
    std::uint64_t seq;
    std::uint32_t slot;
    bool front;  // then first in line (and of its key), not behind the ready
  };
  std::deque<RetryRecord> retry_records_;
  std::uint64_t durable_seq_ = 0;  // every journal write up to here is on disk
  bool storage_full_ = false;
  std::uint64_t ids_reserved_ = 0;  // the journal knows ids below this are taken
  MessageEvents* events_ = nullptr;
  // Wall clock minus engine clock (µs), learnt from publish and restore: the
  // publish-to-delivery latency compares a wall time with an engine time.
  std::int64_t wall_offset_ = 0;
  // Delivery time of leases that were extended (their deadline no longer
  // tells it), by slot; the rest compute it from deadline - lease.
  std::unordered_map<std::uint32_t, Micros> extended_;  // bounded by the leases in flight
};

}  // namespace sluice::engine
