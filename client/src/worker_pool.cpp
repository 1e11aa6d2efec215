#include "worker_pool.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>

namespace sluice::client {

WorkerPool::WorkerPool(Connection::Handler handler, Settle settle, std::uint32_t workers)
    : handler_(std::move(handler)), settle_(std::move(settle)) {
  threads_.reserve(workers);
  for (std::uint32_t i = 0; i < workers; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() {
  stop();
}

void WorkerPool::push(const Delivery& d) {
  Owned owned;
  owned.view = d;
  owned.payload = std::string(d.payload);
  owned.headers.reserve(d.headers.size());
  for (const auto& [k, v] : d.headers) owned.headers.emplace_back(k, v);
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(owned));
  }
  ready_.notify_one();
}

void WorkerPool::drop_queued() {
  std::lock_guard lock(mutex_);
  queue_.clear();
}

void WorkerPool::stop() {
  for (const auto& t : threads_)
    if (t.get_id() == std::this_thread::get_id()) {
      // A worker cannot wait for itself; this is a programming error, as on the I/O thread.
      std::fputs("sluice::client: unsubscribe or ~Connection inside a worker's own handler\n",
                 stderr);
      std::abort();
    }
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

void WorkerPool::run() {
  for (;;) {
    Owned job;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to run
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    // The views of the copy: the delivery's own died with the I/O thread's call.
    job.view.payload = job.payload;
    job.view.headers.clear();
    for (const auto& [k, v] : job.headers) job.view.headers.emplace_back(k, v);
    const LeaseHandle lease = handle(job.view);
    Disposition disposition = Disposition::nack;
    std::string reason;
    try {
      disposition = handler_(job.view);
    } catch (const std::exception& e) {
      reason = e.what();
    } catch (...) {
      reason = "the handler threw a non-standard exception";
    }
    if (reason.empty() && disposition == Disposition::manual) continue;
    settle_(lease, disposition, reason);
  }
}

}  // namespace sluice::client
