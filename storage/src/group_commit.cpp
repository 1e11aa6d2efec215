#include "sluice/storage/group_commit.hpp"

#include <boost/lockfree/spsc_queue.hpp>

#include <algorithm>
#include <cerrno>
#include <iterator>

namespace sluice::storage {

struct GroupCommitter::Queue {
  explicit Queue(std::size_t capacity) : ring(capacity) {}
  boost::lockfree::spsc_queue<StorageOp> ring;

  /// Moves [first, last) into the ring as far as it has room; returns the
  /// end of what went in. Boost 1.74's push(const T&) copy-constructs, which
  /// for a record is a second allocation and copy of its bytes; its range
  /// push constructs each element from *it, so move iterators move.
  template <class It>
  It push(It first, It last) {
    return ring.push(std::make_move_iterator(first), std::make_move_iterator(last)).base();
  }
};

GroupCommitter::GroupCommitter(Env& env, OnCommit on_commit, Options options)
    : env_(env),
      on_commit_(std::move(on_commit)),
      options_(options),
      queue_(std::make_unique<Queue>(options.capacity)) {
  Txn txn;
  if (!txn.begin(env_, false) && !txn.open_db("committer", tick_db_)) (void)txn.commit();
  thread_ = std::thread([this] { run(); });
}

GroupCommitter::~GroupCommitter() {
  // Everything submitted goes to the storage thread before it is told to stop.
  while (!backlog_.empty()) {
    pump();
    if (!backlog_.empty()) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  stopping_.store(true);
  wake();
  thread_.join();
}

void GroupCommitter::wake() {
  // Wakes the storage thread only if it sleeps (no syscall otherwise).
  submitted_.fetch_add(1, std::memory_order_release);
  submitted_.notify_one();
}

std::uint64_t GroupCommitter::submit(StorageOp&& op) {
  // The ring carries operations in sequence order: nothing may pass the backlog.
  if (!backlog_.empty()) pump();
  if (!backlog_.empty() || queue_->push(&op, &op + 1) == &op) backlog_.push_back(std::move(op));
  wake();
  return next_seq_++;
}

void GroupCommitter::pump() {
  if (backlog_.empty()) return;
  backlog_.erase(backlog_.begin(), queue_->push(backlog_.begin(), backlog_.end()));
  wake();
}

CommitStats GroupCommitter::stats() const noexcept {
  CommitStats s{commits_.load(), operations_.load(), failures_.load(), waiting_.load(), 0};
  const std::uint64_t n = std::min<std::uint64_t>(batch_count_.load(), batches_.size());
  if (n != 0) {
    std::vector<std::uint32_t> sizes(n);
    for (std::size_t i = 0; i < n; ++i) sizes[i] = batches_[i].load(std::memory_order_relaxed);
    std::nth_element(sizes.begin(), sizes.begin() + static_cast<std::ptrdiff_t>(n / 2),
                     sizes.end());
    s.median_batch = sizes[n / 2];
  }
  return s;
}

void GroupCommitter::record_batch(std::size_t operations) {
  const std::uint64_t i = batch_count_.load(std::memory_order_relaxed);
  batches_[i % batches_.size()].store(static_cast<std::uint32_t>(operations),
                                      std::memory_order_relaxed);
  batch_count_.store(i + 1, std::memory_order_release);
  commits_.fetch_add(1, std::memory_order_relaxed);
  operations_.fetch_add(operations, std::memory_order_relaxed);
}

namespace {
/// `op` and, depth first, everything in its `also` (which may nest).
Status apply_one(Txn& txn, const StorageOp& op) {
  Status status;
  switch (op.kind) {
    case StorageOp::Kind::put:
      status = txn.put(op.db, op.key, op.value, op.append);
      break;
    case StorageOp::Kind::erase:
      status = txn.erase(op.db, op.key);
      break;
    case StorageOp::Kind::erase_pair:
      status = txn.erase(op.db, op.key);
      if (!status) status = txn.erase(op.pair_db, op.key);
      break;
  }
  for (std::size_t i = 0; i < op.also.size() && !status; ++i) status = apply_one(txn, op.also[i]);
  return status;
}
}  // namespace

Status GroupCommitter::apply(const std::vector<Sequenced>& ops, bool (*include)(const StorageOp&),
                             std::size_t& applied) {
  applied = 0;
  Txn txn;
  Status status = txn.begin(env_, false);
  for (std::size_t i = 0; i < ops.size() && !status; ++i) {
    const StorageOp& op = ops[i].op;
    if (!include(op)) continue;
    status = apply_one(txn, op);
    ++applied;
  }
  if (!status && applied != 0) status = txn.commit();
  txn.abort();  // after a failure, or a no-op after commit
  if (status) {
    applied = 0;
    failures_.fetch_add(1, std::memory_order_relaxed);
  } else if (applied != 0) {
    record_batch(applied);
  }
  return status;
}

void GroupCommitter::report_progress(std::uint64_t received, const std::vector<Sequenced>& pending,
                                     const std::vector<Sequenced>& waiting, bool full) {
  CommitResult result;
  result.durable_seq = received;
  if (!pending.empty()) result.durable_seq = pending.front().seq - 1;
  result.settled_seq = result.durable_seq;
  if (!waiting.empty()) result.durable_seq = std::min(result.durable_seq, waiting.front().seq - 1);
  result.full = full;
  waiting_.store(waiting.size(), std::memory_order_relaxed);
  on_commit_(result);
}

bool GroupCommitter::over_soft_limit() {
  if (options_.soft_limit == 0) return false;
  EnvUsage usage;
  if (env_.usage(usage, false)) return true;
  if (usage.file_bytes() <= options_.soft_limit) return false;  // cheap and common
  if (env_.usage(usage, true)) return true;
  return usage.used_bytes() > options_.soft_limit;
}

void GroupCommitter::tick() {
  static std::uint64_t counter = 0;
  ++counter;
  Txn txn;
  if (txn.begin(env_, false)) return;
  if (!txn.put(tick_db_, "tick", {reinterpret_cast<const char*>(&counter), sizeof counter}))
    (void)txn.commit();
}

void GroupCommitter::run() {
  std::vector<Sequenced> pending;  // taken off the ring, not yet tried, in order
  std::vector<Sequenced> batch;
  // New records kept back while full, in order: bounded like the backlog
  // (the broker admits no more than its limits hold; see submit()).
  std::vector<Sequenced> waiting;
  std::uint64_t received = 0;  // sequence number of the last op taken off the ring
  std::uint64_t seen = 0;
  bool full = false;
  bool reported_full = false;
  Status last_error;
  auto retry_at = std::chrono::steady_clock::time_point::min();
  auto backoff_until = std::chrono::steady_clock::time_point::min();  // after a failed commit
  for (;;) {
    const std::uint64_t before = received;
    queue_->ring.consume_all([&](StorageOp& op) {
      pending.push_back({++received, std::move(op)});
    });
    const bool took = received != before;  // ring room freed: the engine may pump its backlog
    batch.clear();
    if (std::chrono::steady_clock::now() < backoff_until) {
      // Even small operations failed to commit (an I/O error, or no page
      // left at all): wait a little before trying again, in order.
      if (took) report_progress(received, pending, waiting, full);
      if (stopping_.load()) return;  // acks not stored: redelivered after a restart, not lost
      std::this_thread::sleep_until(backoff_until);
      continue;
    }
    if (full && std::chrono::steady_clock::now() >= retry_at) {
      tick();
      full = over_soft_limit();
      retry_at = std::chrono::steady_clock::now() + kRetryInterval;
      if (!full) {
        // What waited goes first (lower sequence numbers than anything pending),
        // batch by batch like the rest.
        pending.insert(pending.begin(), std::make_move_iterator(waiting.begin()),
                       std::make_move_iterator(waiting.end()));
        waiting.clear();
      }
    }
    // Take what is pending: while full, new records join the waiting line
    // (publishes are confirmed in their order) and the rest goes ahead.
    std::uint64_t grows_bytes = 0;
    std::size_t taken = 0;
    for (; taken < pending.size(); ++taken) {
      Sequenced& s = pending[taken];
      if (s.op.grows) {
        if (full) {
          waiting.push_back(std::move(s));
          continue;
        }
        if (grows_bytes != 0 && grows_bytes + s.op.value.size() > options_.max_batch_bytes) break;
        grows_bytes += s.op.value.size();
      }
      batch.push_back(std::move(s));
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(taken));
    waiting_.store(waiting.size(), std::memory_order_relaxed);
    if (batch.empty()) {
      if (full != reported_full || took) {
        // Room again with nothing waiting for it, or ops taken off the ring
        // into the waiting line: either way the engine must hear (to push
        // back less, or to pump its backlog into the freed ring).
        reported_full = full;
        report_progress(received, pending, waiting, full);
      }
      if (stopping_.load()) {
        // Whatever arrived before the stop is committed first.
        if (queue_->ring.read_available() != 0 || !pending.empty()) continue;
        return;  // what still waits for room was never reported durable
      }
      if (!full) {
        submitted_.wait(seen, std::memory_order_acquire);  // until something new arrives
      } else {
        // Storage full (rare): new records are retried at retry_at, but what
        // arrives meanwhile (acks: erases, which free space and may have an
        // answer waiting on them) goes at once. A 1 ms poll: atomic waits
        // have no timeout.
        while (std::chrono::steady_clock::now() < retry_at &&
               submitted_.load(std::memory_order_acquire) == seen && !stopping_.load())
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      seen = submitted_.load(std::memory_order_acquire);
      continue;
    }
    CommitResult result;
    std::size_t applied = 0;
    const auto started = std::chrono::steady_clock::now();
    result.error = apply(
        batch, [](const StorageOp&) { return true; }, applied);
    if (result.error) {
      // Map or disk full, or an I/O error: let through what frees space or
      // needs little, and keep the new records back, in order.
      last_error = result.error;
      const Status second = apply(
          batch, [](const StorageOp& op) { return !op.grows; }, applied);
      const auto by_seq = [](const Sequenced& a, const Sequenced& b) { return a.seq < b.seq; };
      std::vector<Sequenced> small;
      for (auto& s : batch) {
        if (s.op.grows)
          waiting.push_back(std::move(s));
        else if (second)
          small.push_back(std::move(s));
      }
      std::sort(waiting.begin(), waiting.end(), by_seq);
      if (second) {
        // Small operations never wait behind `full` (they are what frees
        // space); they go back first in line, and the next try comes after
        // a pause. Nothing newer passes them.
        pending.insert(pending.begin(), std::make_move_iterator(small.begin()),
                       std::make_move_iterator(small.end()));
        std::sort(pending.begin(), pending.end(), by_seq);
        backoff_until = std::chrono::steady_clock::now() + kRetryInterval;
      }
      full = true;
      retry_at = std::chrono::steady_clock::now() + kRetryInterval;
    } else if (grows_bytes != 0 && over_soft_limit()) {
      full = true;  // committed, but the next records wait
      retry_at = std::chrono::steady_clock::now() + kRetryInterval;
      last_error = StorageError{ENOSPC, "storage.max_size reached"};
    }
    result.operations = applied;
    result.duration_us =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                       std::chrono::steady_clock::now() - started)
                                       .count());
    // Everything before the first op still waiting (or not yet tried) is durable.
    std::uint64_t durable = received;
    if (!pending.empty()) durable = pending.front().seq - 1;
    result.settled_seq = durable;
    if (!waiting.empty()) durable = std::min(durable, waiting.front().seq - 1);
    result.durable_seq = durable;
    result.full = full;
    reported_full = full;
    if (full && !result.error) result.error = last_error;
    waiting_.store(waiting.size(), std::memory_order_relaxed);
    on_commit_(result);
  }
}

}  // namespace sluice::storage
