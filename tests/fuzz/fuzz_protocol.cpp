// libFuzzer target: any bytes through the frame splitter (in uneven pieces)
// and every frame decoder, plus every decoder on the raw input. The codec must
// never crash, read out of bounds (ASan), or hit undefined behaviour (UBSan).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/protocol/codec.hpp"

using namespace sluice::protocol;

namespace {

void decode_body(std::uint8_t type, std::string_view body) {
  static std::vector<std::string_view> messages;
  static std::vector<AckEntry> acks;
  static std::vector<NackEntry> nacks;
  static std::vector<ExtendEntry> extends;
  static std::vector<SettleFailure> failures;
  static std::vector<Delivery> deliveries;
  static std::vector<QueueStatsView> stats;
  std::uint64_t request_id = 0;
  std::uint32_t subscription_id = 0;
  switch (static_cast<FrameType>(type)) {
    case FrameType::hello: {
      Hello h;
      (void)decode_hello(body, h);
      break;
    }
    case FrameType::hello_ok: {
      HelloOk h;
      (void)decode_hello_ok(body, h);
      break;
    }
    case FrameType::publish: {
      Publish p;
      if (decode_publish(body, Limits{}, p, messages)) {
        for (auto m : messages) {
          MessageParts parts;
          if (parse_message(m, parts)) {
            for_each_header(parts, [](const Header&) {});
            SystemHeaders sys;
            (void)read_system_headers(parts, sys);
          }
        }
      }
      break;
    }
    case FrameType::confirm: {
      Confirm c;
      if (decode_confirm(body, c)) {
        for (std::uint32_t i = 0; i <= c.count; ++i) (void)c.message_id(i);
        for (std::uint32_t i = 0; i <= c.duplicate_count; ++i) (void)c.duplicate_index(i);
      }
      break;
    }
    case FrameType::subscribe: {
      Subscribe s;
      (void)decode_subscribe(body, s);
      break;
    }
    case FrameType::unsubscribe: {
      Unsubscribe u;
      (void)decode_unsubscribe(body, u);
      break;
    }
    case FrameType::ack:
      (void)decode_ack(body, request_id, acks);
      break;
    case FrameType::nack:
      (void)decode_nack(body, request_id, nacks);
      break;
    case FrameType::extend:
      (void)decode_extend(body, request_id, extends);
      break;
    case FrameType::settled:
      (void)decode_settled(body, request_id, failures);
      break;
    case FrameType::ok:
      (void)decode_ok(body, request_id);
      break;
    case FrameType::ping:
      (void)decode_ping(body, request_id);
      break;
    case FrameType::deliver:
      if (decode_deliver(body, subscription_id, deliveries)) {
        for (const auto& d : deliveries) {
          MessageParts parts;
          if (parse_message(d.message, parts)) for_each_header(parts, [](const Header&) {});
        }
      }
      break;
    case FrameType::stats: {
      StatsRequest s;
      (void)decode_stats(body, s);
      break;
    }
    case FrameType::configure: {
      Configure c;
      (void)decode_configure(body, c);
      break;
    }
    case FrameType::stats_result:
      if (decode_stats_result(body, request_id, stats))
        for (const auto& q : stats) (void)q.get(StatField::ready);
      break;
    case FrameType::error: {
      ErrorFrame e;
      (void)decode_error(body, e);
      break;
    }
    case FrameType::dead_letters: {
      DeadLetterRequest r;
      (void)decode_dead_letters(body, r);
      break;
    }
    case FrameType::triggers: {
      TriggerRequest r;
      (void)decode_triggers(body, r);
      break;
    }
    case FrameType::queues: {
      QueuesRequest r;
      (void)decode_queues(body, r);
      break;
    }
    case FrameType::queues_result: {
      QueuesResult r;
      if (decode_queues_result(body, r)) {
        std::string again;
        encode_queues_result(again, r);  // what decodes encodes again
      }
      break;
    }
    case FrameType::triggers_result: {
      TriggerResult r;
      if (decode_triggers_result(body, r)) {
        std::string again;
        encode_triggers_result(again, r);  // what decodes encodes again
      }
      break;
    }
    case FrameType::dead_letters_result: {
      DeadLetterResult r;
      if (decode_dead_letters_result(body, r))
        for (const auto& e : r.entries) {
          MessageParts parts;
          (void)parse_message(e.message, parts);
        }
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // 1. As a stream: split by the decoder, fed in pieces whose sizes come from the input.
  FrameDecoder decoder(64 * 1024);
  std::size_t at = 0;
  bool broken = false;
  while (at < input.size() && !broken) {
    const std::size_t piece = 1 + static_cast<unsigned char>(input[at]) % 97;
    decoder.feed(input.substr(at, piece));
    at += piece;
    Frame frame;
    sluice::errc code{};
    for (;;) {
      const auto result = decoder.next(frame, code);
      if (result == FrameDecoder::Result::frame) {
        // A buffer of exactly the body's size: a read past it is an ASan report,
        // not a quiet read of the decoder's spare capacity.
        const std::vector<char> body(frame.body.begin(), frame.body.end());
        decode_body(frame.type, std::string_view(body.data(), body.size()));
        continue;
      }
      broken = result == FrameDecoder::Result::error;
      break;
    }
  }
  // 2. As a body of every type.
  if (size > 0) {
    // Exactly `size - 1` bytes in a buffer of their own, so any over-read is caught.
    std::vector<char> copy(input.begin() + 1, input.end());
    const std::string_view body(copy.data(), copy.size());
    decode_body(data[0], body);
    MessageParts parts;
    if (parse_message(body, parts)) for_each_header(parts, [](const Header&) {});
  }
  return 0;
}
