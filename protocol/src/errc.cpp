#include "sluice/protocol/errc.hpp"

#include <string>

namespace sluice {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::ok:
      return "ok";
    case errc::malformed_frame:
      return "malformed_frame";
    case errc::frame_too_large:
      return "frame_too_large";
    case errc::unknown_frame_type:
      return "unknown_frame_type";
    case errc::unsupported_version:
      return "unsupported_version";
    case errc::handshake_required:
      return "handshake_required";
    case errc::invalid_queue_name:
      return "invalid_queue_name";
    case errc::payload_too_large:
      return "payload_too_large";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::stale_lease:
      return "stale_lease";
    case errc::unknown_subscription:
      return "unknown_subscription";
    case errc::duplicate_subscription:
      return "duplicate_subscription";
    case errc::unsupported:
      return "unsupported";
    case errc::queue_full:
      return "queue_full";
    case errc::unauthenticated:
      return "unauthenticated";
    case errc::forbidden:
      return "forbidden";
    case errc::shutting_down:
      return "shutting_down";
    case errc::internal:
      return "internal";
    case errc::too_many_connections:
      return "too_many_connections";
    case errc::connection_lost:
      return "connection_lost";
    case errc::timed_out:
      return "timed_out";
    case errc::too_many_queues:
      return "too_many_queues";
    case errc::not_found:
      return "not_found";
    case errc::outcome_unknown:
      return "outcome_unknown";
    case errc::queue_not_found:
      return "queue_not_found";
    case errc::queue_in_use:
      return "queue_in_use";
    case errc::queue_exists:
      return "queue_exists";
  }
  return "unknown";
}

unsigned http_status(errc code) noexcept {
  switch (code) {
    case errc::ok:
      return 200;
    case errc::malformed_frame:
    case errc::unknown_frame_type:
    case errc::unsupported_version:
    case errc::handshake_required:
    case errc::invalid_queue_name:
    case errc::invalid_argument:
      return 400;
    case errc::unauthenticated:
      return 401;
    case errc::forbidden:
      return 403;
    case errc::not_found:
    case errc::queue_not_found:
    case errc::unknown_subscription:
      return 404;
    case errc::timed_out:
      return 408;
    case errc::stale_lease:
    case errc::duplicate_subscription:
    case errc::too_many_queues:
    case errc::queue_in_use:
    case errc::queue_exists:
      return 409;
    case errc::frame_too_large:
    case errc::payload_too_large:
      return 413;
    case errc::queue_full:
      return 429;
    case errc::unsupported:
      return 501;
    case errc::connection_lost:
    case errc::outcome_unknown:
      return 502;
    case errc::shutting_down:
    case errc::too_many_connections:
      return 503;
    case errc::internal:
      return 500;
  }
  return 500;
}

bool closes_connection(errc code) noexcept {
  switch (code) {
    case errc::frame_too_large:
    case errc::unsupported_version:
    case errc::handshake_required:
    case errc::shutting_down:
    case errc::too_many_connections:
    case errc::unauthenticated:
    case errc::timed_out:
      return true;
    default:
      return false;
  }
}

namespace {
class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "sluice"; }
  std::string message(int value) const override {
    return std::string(to_string(static_cast<errc>(value)));
  }
};
}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

}  // namespace sluice
