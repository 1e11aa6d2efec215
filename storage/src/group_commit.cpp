#include "sluice/storage/group_commit.hpp"

#include <boost/lockfree/spsc_queue.hpp>

#include <vector>

namespace sluice::storage {

struct GroupCommitter::Queue {
  explicit Queue(std::size_t capacity) : ring(capacity) {}
  boost::lockfree::spsc_queue<StorageOp> ring;
};

GroupCommitter::GroupCommitter(Env& env, OnCommit on_commit, std::size_t capacity)
    : env_(env), on_commit_(std::move(on_commit)), queue_(std::make_unique<Queue>(capacity)) {
  thread_ = std::thread([this] { run(); });
}

GroupCommitter::~GroupCommitter() {
  stopping_.store(true);
  submitted_.fetch_add(1);  // a change the storage thread waits on
  submitted_.notify_one();
  thread_.join();
}

bool GroupCommitter::submit(StorageOp&& op, std::uint64_t& seq) {
  if (!queue_->ring.push(std::move(op))) return false;
  seq = next_seq_++;
  // Wakes the storage thread only if it sleeps (no syscall otherwise).
  submitted_.fetch_add(1, std::memory_order_release);
  submitted_.notify_one();
  return true;
}

CommitStats GroupCommitter::stats() const noexcept {
  return {commits_.load(), operations_.load(), failures_.load()};
}

void GroupCommitter::run() {
  std::vector<StorageOp> batch;
  std::uint64_t done_seq = 0;  // last sequence number handled
  std::uint64_t seen = 0;
  for (;;) {
    batch.clear();
    queue_->ring.consume_all([&](StorageOp& op) { batch.push_back(std::move(op)); });
    if (batch.empty()) {
      if (stopping_.load()) return;
      submitted_.wait(seen, std::memory_order_acquire);  // until something new arrives
      seen = submitted_.load(std::memory_order_acquire);
      continue;
    }
    CommitResult result{done_seq + 1, done_seq + batch.size(), std::nullopt};
    Txn txn;
    result.error = txn.begin(env_, false);
    for (std::size_t i = 0; i < batch.size() && !result.error; ++i) {
      const StorageOp& op = batch[i];
      if (op.kind == StorageOp::Kind::put)
        result.error = txn.put(op.db, op.key, op.value);
      else
        result.error = txn.erase(op.db, op.key);
    }
    if (!result.error) result.error = txn.commit();
    txn.abort();  // after a failed put, or a no-op after commit
    done_seq = result.last_seq;
    if (result.error) {
      failures_.fetch_add(1);
    } else {
      commits_.fetch_add(1);
      operations_.fetch_add(batch.size());
    }
    on_commit_(result);
  }
}

}  // namespace sluice::storage
