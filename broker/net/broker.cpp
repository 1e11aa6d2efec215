#include "broker.hpp"

#include "durable_store.hpp"

namespace sluice::net {

CloseReason close_reason_of(errc code) noexcept {
  switch (code) {
    case errc::ok:
      return CloseReason::peer;
    case errc::timed_out:
      return CloseReason::timeout;
    case errc::unauthenticated:
    case errc::forbidden:
      return CloseReason::auth;
    case errc::shutting_down:
      return CloseReason::shutdown;
    case errc::too_many_connections:
      return CloseReason::refused;
    default:
      return CloseReason::protocol_error;
  }
}

Broker::Broker(boost::asio::io_context& io, engine::Engine& engine, BrokerOptions options,
               DurableStore* store)
    : io_(io), engine_(engine), options_(std::move(options)), store_(store), deadline_timer_(io) {
  engine_.set_deadline_listener([this](engine::Micros at) { arm(at); });
}

Broker::~Broker() {
  engine_.set_deadline_listener(nullptr);
}

void Broker::arm(engine::Micros at) {
  if (stopping_) return;
  // steady_clock's epoch is the one mono_us() counts from. Re-arming cancels
  // the wait before (its handler sees operation_aborted).
  deadline_timer_.expires_at(std::chrono::steady_clock::time_point(std::chrono::microseconds(at)));
  deadline_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stopping_) return;  // re-armed earlier, or stopping
    engine_.advance(mono_us());   // tells arm() the next deadline
  });
}

DeadLetters* Broker::dead_letters() const noexcept {
  return store_ != nullptr ? &store_->dead_letters() : nullptr;
}

void Broker::stop() {
  stopping_ = true;
  deadline_timer_.cancel();
}

}  // namespace sluice::net
