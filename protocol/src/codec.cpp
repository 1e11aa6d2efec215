#include "sluice/protocol/codec.hpp"

#include <algorithm>
#include <cstring>

#include "sluice/protocol/wire.hpp"

namespace sluice::protocol {

std::string_view to_string(FrameType type) noexcept {
  switch (type) {
    case FrameType::hello:
      return "hello";
    case FrameType::publish:
      return "publish";
    case FrameType::subscribe:
      return "subscribe";
    case FrameType::unsubscribe:
      return "unsubscribe";
    case FrameType::ack:
      return "ack";
    case FrameType::nack:
      return "nack";
    case FrameType::extend:
      return "extend";
    case FrameType::stats:
      return "stats";
    case FrameType::configure:
      return "configure";
    case FrameType::ping:
      return "ping";
    case FrameType::hello_ok:
      return "hello_ok";
    case FrameType::confirm:
      return "confirm";
    case FrameType::deliver:
      return "deliver";
    case FrameType::ok:
      return "ok";
    case FrameType::settled:
      return "settled";
    case FrameType::stats_result:
      return "stats_result";
    case FrameType::dead_letters:
      return "dead_letters";
    case FrameType::dead_letters_result:
      return "dead_letters_result";
    case FrameType::triggers:
      return "triggers";
    case FrameType::triggers_result:
      return "triggers_result";
    case FrameType::queues:
      return "queues";
    case FrameType::queues_result:
      return "queues_result";
    case FrameType::error:
      return "error";
  }
  return "unknown";
}

// ---------------------------------------------------------------- splitter

FrameDecoder::FrameDecoder(std::uint32_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

std::span<char> FrameDecoder::prepare(std::size_t min_bytes) {
  if (buf_.size() - end_ < min_bytes) {
    // Slide what is left to the front before growing: most of the time a read
    // ends on a frame boundary and nothing needs moving.
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (buf_.size() - end_ < min_bytes) buf_.resize(std::max(buf_.size() * 2, end_ + min_bytes));
  }
  return {buf_.data() + end_, buf_.size() - end_};
}

void FrameDecoder::feed(std::string_view bytes) {
  auto space = prepare(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

FrameDecoder::Result FrameDecoder::next(Frame& frame, errc& error_code) noexcept {
  const std::size_t available = end_ - begin_;
  if (available < 4) return Result::need_more;
  std::uint32_t length;
  std::memcpy(&length, buf_.data() + begin_, 4);
  if (length == 0) {
    error_code = errc::malformed_frame;
    return Result::error;
  }
  if (length > max_frame_bytes_) {
    error_code = errc::frame_too_large;
    return Result::error;
  }
  if (available - 4 < length) return Result::need_more;
  frame.type = static_cast<std::uint8_t>(buf_[begin_ + 4]);
  frame.body = std::string_view(buf_.data() + begin_ + kFrameHeaderBytes, length - 1);
  begin_ += 4 + std::size_t{length};
  if (begin_ == end_) begin_ = end_ = 0;  // cheap reset keeps the next read at the front
  return Result::frame;
}

}  // namespace sluice::protocol
