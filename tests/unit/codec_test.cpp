// Codec: every frame round-trips, the splitter works one byte at a time, every
// truncation and limit is a typed error, and no byte sequence crashes it.
#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sluice/protocol/codec.hpp"

using namespace sluice::protocol;
using sluice::errc;

namespace {

/// Splits `bytes` into frames with a decoder fed `piece` bytes at a time.
std::vector<std::pair<std::uint8_t, std::string>> split(const std::string& bytes, std::size_t piece,
                                                        std::uint32_t max_frame = 1u << 20) {
  FrameDecoder decoder(max_frame);
  std::vector<std::pair<std::uint8_t, std::string>> frames;
  for (std::size_t at = 0; at < bytes.size(); at += piece) {
    decoder.feed(std::string_view(bytes).substr(at, piece));
    Frame frame;
    errc code{};
    while (decoder.next(frame, code) == FrameDecoder::Result::frame)
      frames.emplace_back(frame.type, std::string(frame.body));
  }
  CHECK(decoder.buffered() == 0);
  return frames;
}

/// The body of the single frame in `bytes`.
std::string body_of(const std::string& bytes) {
  auto frames = split(bytes, bytes.size());
  REQUIRE(frames.size() == 1);
  return frames[0].second;
}

std::string one_message(std::string_view payload, std::vector<Header> headers = {}) {
  std::string out;
  encode_message(out, headers, payload);
  return out;
}

std::string publish_frame(std::uint64_t request_id, std::string_view queue,
                          const std::vector<std::string>& payloads) {
  std::string out;
  auto frame = begin_publish(out, request_id, queue);
  for (const auto& p : payloads) encode_message(out, {}, p);
  end_publish(out, frame, static_cast<std::uint32_t>(payloads.size()));
  return out;
}

/// One encoded frame of every type, with its decoder applied to a body.
struct Sample {
  const char* name;
  std::string frame;
  std::function<Status(std::string_view)> decode;
};

std::vector<Sample> samples() {
  std::vector<Sample> s;
  static std::vector<std::string_view> messages;
  static std::vector<AckEntry> acks;
  static std::vector<NackEntry> nacks;
  static std::vector<ExtendEntry> extends;
  static std::vector<SettleFailure> failures;
  static std::vector<Delivery> deliveries;
  static std::vector<QueueStatsView> stats;
  std::uint64_t req = 0;
  std::uint32_t sub = 0;
  std::string f;

  encode_hello(f, Hello{1, 1, "client", "token"});
  s.push_back({"hello", f, [](std::string_view b) {
                 Hello h;
                 return decode_hello(b, h);
               }});
  f.clear();
  encode_hello_ok(f, HelloOk{1, 4096, 1024, "sluiced"});
  s.push_back({"hello_ok", f, [](std::string_view b) {
                 HelloOk h;
                 return decode_hello_ok(b, h);
               }});
  s.push_back({"publish", publish_frame(7, "orders", {"a", "bc"}), [](std::string_view b) {
                 Publish p;
                 return decode_publish(b, Limits{}, p, messages);
               }});
  f.clear();
  std::array<std::uint64_t, 2> ids{1, 2};
  encode_confirm(f, 7, 50, ids);
  s.push_back({"confirm", f, [](std::string_view b) {
                 Confirm c;
                 return decode_confirm(b, c);
               }});
  f.clear();
  encode_subscribe(f, Subscribe{3, 9, "orders", 64, 1000, 50'000, 5});
  s.push_back({"subscribe", f, [](std::string_view b) {
                 Subscribe x;
                 return decode_subscribe(b, x);
               }});
  f.clear();
  encode_unsubscribe(f, Unsubscribe{4, 9});
  s.push_back({"unsubscribe", f, [](std::string_view b) {
                 Unsubscribe x;
                 return decode_unsubscribe(b, x);
               }});
  f.clear();
  std::array<AckEntry, 2> ack_entries{AckEntry{1, 10}, AckEntry{2, 20}};
  encode_ack(f, 5, ack_entries);
  s.push_back({"ack", f, [req](std::string_view b) mutable { return decode_ack(b, req, acks); }});
  f.clear();
  std::array<NackEntry, 1> nack_entries{NackEntry{1, 10, 500, 0, "timeout"}};
  encode_nack(f, 6, nack_entries);
  s.push_back(
      {"nack", f, [req](std::string_view b) mutable { return decode_nack(b, req, nacks); }});
  f.clear();
  std::array<ExtendEntry, 1> extend_entries{ExtendEntry{1, 10, 2000}};
  encode_extend(f, 8, extend_entries);
  s.push_back(
      {"extend", f, [req](std::string_view b) mutable { return decode_extend(b, req, extends); }});
  f.clear();
  std::array<SettleFailure, 1> settle{SettleFailure{1, errc::stale_lease}};
  encode_settled(f, 8, settle);
  s.push_back({"settled", f,
               [req](std::string_view b) mutable { return decode_settled(b, req, failures); }});
  f.clear();
  encode_ok(f, 11);
  s.push_back({"ok", f, [req](std::string_view b) mutable { return decode_ok(b, req); }});
  f.clear();
  encode_ping(f, 12);
  s.push_back({"ping", f, [req](std::string_view b) mutable { return decode_ping(b, req); }});
  f.clear();
  DeliverFrameWriter writer;
  writer.open(f, 9);
  const std::string m1 = one_message("payload-1", {{"k", "v"}});
  const std::string m2 = one_message("payload-2");
  writer.add(f, Delivery{1, 100, 1, 123456, m1});
  writer.add(f, Delivery{2, 200, 3, 123457, m2});
  s.push_back({"deliver", f,
               [sub](std::string_view b) mutable { return decode_deliver(b, sub, deliveries); }});
  f.clear();
  encode_stats(f, StatsRequest{13, "orders"});
  s.push_back({"stats", f, [](std::string_view b) {
                 StatsRequest x;
                 return decode_stats(b, x);
               }});
  f.clear();
  {
    StatsResultWriter w(f, 14);
    std::array<std::pair<StatField, std::uint64_t>, 2> fields{
        std::pair{StatField::ready, std::uint64_t{5}}, std::pair{StatField::consumers, 2ull}};
    w.add_queue("orders", fields);
    w.finish();
  }
  s.push_back({"stats_result", f,
               [req](std::string_view b) mutable { return decode_stats_result(b, req, stats); }});
  f.clear();
  {
    Configure c;
    c.request_id = 17;
    c.queue = "orders";
    c.settings = {{"dispatch_rate", "200"}, {"overflow", "reject"}};
    encode_configure(f, c);
  }
  s.push_back({"configure", f, [](std::string_view b) {
                 Configure c;
                 return decode_configure(b, c);
               }});
  f.clear();
  encode_error(f, 15, errc::stale_lease, "lease expired");
  s.push_back({"error", f, [](std::string_view b) {
                 ErrorFrame e;
                 return decode_error(b, e);
               }});
  f.clear();
  encode_triggers(f, TriggerRequest{18, TriggerOp::invoke, "resize", "{}"});
  s.push_back({"triggers", f, [](std::string_view b) {
                 TriggerRequest r;
                 return decode_triggers(b, r);
               }});
  f.clear();
  {
    TriggerResult r;
    r.request_id = 19;
    r.entries.push_back({"resize", "images", "http://fn/", false, 1, true, 4, 2, 90, {80, 10}});
    r.invoked = true;
    r.invocation = {0, 200, 1500, "", "ok"};
    encode_triggers_result(f, r);
  }
  s.push_back({"triggers_result", f, [](std::string_view b) {
                 TriggerResult r;
                 return decode_triggers_result(b, r);
               }});
  f.clear();
  encode_queues(f, QueuesRequest{20, QueueOp::create, "jobs", 0, {{"max_attempts", "3"}}});
  s.push_back({"queues", f, [](std::string_view b) {
                 QueuesRequest r;
                 return decode_queues(b, r);
               }});
  f.clear();
  encode_queues_result(f, QueuesResult{21, 1, {{"jobs", true, 5, 2}}});
  s.push_back({"queues_result", f, [](std::string_view b) {
                 QueuesResult r;
                 return decode_queues_result(b, r);
               }});
  return s;
}

}  // namespace

TEST_CASE("every sample frame decodes") {
  for (const auto& sample : samples()) {
    CAPTURE(sample.name);
    CHECK(sample.decode(body_of(sample.frame)));
  }
}

TEST_CASE("hello and hello_ok round-trip") {
  std::string out;
  encode_hello(out, Hello{1, 3, "my-client", "secret"});
  Hello h;
  const std::string body = body_of(out);
  REQUIRE(decode_hello(body, h));
  CHECK(h.min_version == 1);
  CHECK(h.max_version == 3);
  CHECK(h.client_name == "my-client");
  CHECK(h.token == "secret");

  out.clear();
  encode_hello(out, Hello{3, 1, "", ""});
  CHECK(decode_hello(body_of(out), h).code == errc::invalid_argument);
}

TEST_CASE("publish round-trips headers and payloads, and confirm carries ids") {
  std::string out;
  auto frame = begin_publish(out, 42, "orders.eu");
  std::vector<Header> headers{{"trace-id", "abc"}, {"tenant", "t1"}};
  encode_message(out, headers, "first");
  encode_message(out, {}, std::string(1000, 'x'));
  encode_message(out, {}, "");
  end_publish(out, frame, 3);

  const std::string body = body_of(out);
  Publish p;
  std::vector<std::string_view> messages;
  REQUIRE(decode_publish(body, Limits{}, p, messages));
  CHECK(p.request_id == 42);
  CHECK(p.queue == "orders.eu");
  REQUIRE(messages.size() == 3);
  MessageParts parts;
  REQUIRE(parse_message(messages[0], parts));
  CHECK(parts.payload == "first");
  std::vector<std::pair<std::string, std::string>> seen;
  for_each_header(parts, [&](Header h) { seen.emplace_back(h.key, h.value); });
  CHECK(seen ==
        std::vector<std::pair<std::string, std::string>>{{"trace-id", "abc"}, {"tenant", "t1"}});
  REQUIRE(parse_message(messages[1], parts));
  CHECK(parts.payload.size() == 1000);
  REQUIRE(parse_message(messages[2], parts));
  CHECK(parts.payload.empty());

  out.clear();
  std::array<std::uint64_t, 3> ids{100, 101, 102};
  encode_confirm(out, 42, 17, ids);
  Confirm c;
  const std::string confirm_body = body_of(out);
  REQUIRE(decode_confirm(confirm_body, c));
  CHECK(c.request_id == 42);
  CHECK(c.pressure == 17);
  REQUIRE(c.count == 3);
  CHECK(c.message_id(0) == 100);
  CHECK(c.message_id(2) == 102);
  CHECK(c.message_id(3) == 0);
}

TEST_CASE("publish enforces names, payload limit and message grammar") {
  Publish p;
  std::vector<std::string_view> messages;
  SUBCASE("bad queue name") {
    for (std::string_view name :
         {std::string_view(""), std::string_view("has space"), std::string_view("slash/no"),
          std::string_view("x\0y", 3), std::string_view("."), std::string_view("..")}) {
      CAPTURE(name);
      CHECK(decode_publish(body_of(publish_frame(1, name, {"a"})), Limits{}, p, messages).code ==
            errc::invalid_queue_name);
    }
    CHECK(decode_publish(body_of(publish_frame(1, std::string(201, 'q'), {"a"})), Limits{}, p,
                         messages)
              .code == errc::invalid_queue_name);
    CHECK(decode_publish(body_of(publish_frame(1, std::string(200, 'q'), {"a"})), Limits{}, p,
                         messages));
    // Dots are fine where a path normaliser leaves them alone.
    for (std::string_view name : {"...", ".a", "a.", "..b", "orders.v2"})
      CHECK(valid_queue_name(name));
  }
  SUBCASE("payload over the limit") {
    Limits limits;
    limits.max_payload_bytes = 10;
    CHECK(decode_publish(body_of(publish_frame(1, "q", {std::string(10, 'a')})), limits, p,
                         messages));
    CHECK(
        decode_publish(body_of(publish_frame(1, "q", {std::string(11, 'a')})), limits, p, messages)
            .code == errc::payload_too_large);
  }
  SUBCASE("empty batch") {
    CHECK(decode_publish(body_of(publish_frame(1, "q", {})), Limits{}, p, messages).code ==
          errc::invalid_argument);
  }
  SUBCASE("count larger than the frame can hold") {
    std::string out = publish_frame(1, "q", {"a"});
    const std::size_t count_at = 5 + 8 + 2 + 1;
    const std::uint32_t huge = 0xFFFFFFFF;
    std::memcpy(out.data() + count_at, &huge, 4);
    CHECK(decode_publish(body_of(out), Limits{}, p, messages).code == errc::malformed_frame);
    CHECK(messages.capacity() < 1000);  // never reserved from a hostile count
  }
  SUBCASE("unknown message property") {
    std::string out = publish_frame(1, "q", {"a"});
    out[5 + 8 + 2 + 1 + 4] = 1;  // property count of the first message
    CHECK(decode_publish(body_of(out), Limits{}, p, messages).code == errc::malformed_frame);
  }
  SUBCASE("too many headers") {
    std::vector<Header> headers(65, Header{"k", "v"});
    std::string out;
    auto frame = begin_publish(out, 1, "q");
    encode_message(out, headers, "x");
    end_publish(out, frame, 1);
    CHECK(decode_publish(body_of(out), Limits{}, p, messages).code == errc::invalid_argument);
  }
  SUBCASE("empty header key") {
    std::vector<Header> headers{Header{"", "v"}};
    std::string out;
    auto frame = begin_publish(out, 1, "q");
    encode_message(out, headers, "x");
    end_publish(out, frame, 1);
    CHECK(decode_publish(body_of(out), Limits{}, p, messages).code == errc::invalid_argument);
  }
}

TEST_CASE("subscribe, ack, nack, extend, settled round-trip") {
  std::string out;
  encode_subscribe(out, Subscribe{3, 9, "jobs", 64, 1500, 2'500, 7});
  Subscribe s;
  std::string body = body_of(out);
  REQUIRE(decode_subscribe(body, s));
  CHECK(s.request_id == 3);
  CHECK(s.subscription_id == 9);
  CHECK(s.queue == "jobs");
  CHECK(s.max_in_flight == 64);
  CHECK(s.lease_ms == 1500);
  CHECK(s.rate_milli == 2500);
  CHECK(s.burst == 7);

  out.clear();
  encode_subscribe(out, Subscribe{3, 9, "jobs", 64, 0, 99, 1});  // under 0.1/s
  CHECK(decode_subscribe(body_of(out), s).code == errc::invalid_argument);
  out.clear();
  encode_subscribe(out, Subscribe{3, 9, "jobs", 64, 0, 1000, 0});  // a rate needs a burst
  CHECK(decode_subscribe(body_of(out), s).code == errc::invalid_argument);

  out.clear();
  encode_subscribe(out, Subscribe{3, 9, "jobs", 0, 0, 0, 1});
  CHECK(decode_subscribe(body_of(out), s).code == errc::invalid_argument);

  std::uint64_t req = 0;
  out.clear();
  std::vector<AckEntry> acks{{1, 11}, {2, 22}, {3, 33}};
  encode_ack(out, 77, acks);
  std::vector<AckEntry> acks_back;
  REQUIRE(decode_ack(body_of(out), req, acks_back));
  CHECK(req == 77);
  REQUIRE(acks_back.size() == 3);
  CHECK(acks_back[2].message_id == 3);
  CHECK(acks_back[2].lease_token == 33);

  out.clear();
  std::vector<NackEntry> nacks{{5, 55, 250, kNackDeadLetter, "bad input"}};
  encode_nack(out, 78, nacks);
  std::vector<NackEntry> nacks_back;
  body = body_of(out);
  REQUIRE(decode_nack(body, req, nacks_back));
  REQUIRE(nacks_back.size() == 1);
  CHECK(nacks_back[0].delay_ms == 250);
  CHECK(nacks_back[0].flags == kNackDeadLetter);
  CHECK(nacks_back[0].reason == "bad input");

  out.clear();
  std::vector<ExtendEntry> extends{{6, 66, 30000}};
  encode_extend(out, 79, extends);
  std::vector<ExtendEntry> extends_back;
  REQUIRE(decode_extend(body_of(out), req, extends_back));
  CHECK(extends_back.at(0).lease_ms == 30000);

  out.clear();
  std::vector<SettleFailure> failures{{6, errc::stale_lease}};
  encode_settled(out, 80, failures);
  std::vector<SettleFailure> failures_back;
  REQUIRE(decode_settled(body_of(out), req, failures_back));
  CHECK(req == 80);
  CHECK(failures_back.at(0).code == errc::stale_lease);
}

TEST_CASE("configure round-trips and is bounded") {
  std::string out;
  Configure c;
  c.request_id = 3;
  c.queue = "q";
  c.settings = {{"max_in_flight", "5"}};
  encode_configure(out, c);
  Configure back;
  const std::string body = body_of(out);
  REQUIRE(decode_configure(body, back));
  CHECK(back.request_id == 3);
  CHECK(back.queue == "q");
  REQUIRE(back.settings.size() == 1);
  CHECK(back.settings[0].first == "max_in_flight");
  CHECK(back.settings[0].second == "5");

  out.clear();
  c.settings.assign(65, {"a", "b"});
  encode_configure(out, c);
  CHECK(decode_configure(body_of(out), back).code == errc::invalid_argument);
  out.clear();
  c.settings.clear();
  encode_configure(out, c);
  CHECK(decode_configure(body_of(out), back).code == errc::invalid_argument);
}

TEST_CASE("deliver frames grow in place and round-trip") {
  std::string out;
  encode_ping(out, 1);  // a frame before, as in a session's outbound buffer
  DeliverFrameWriter writer;
  writer.open(out, 5);
  const std::string m = one_message("hello", {{"a", "b"}});
  for (std::uint64_t i = 1; i <= 100; ++i) writer.add(out, Delivery{i, i * 10, 1, 1000 + i, m});
  CHECK(writer.subscription_id() == 5);

  auto frames = split(out, 7);
  REQUIRE(frames.size() == 2);
  std::uint32_t sub = 0;
  std::vector<Delivery> deliveries;
  REQUIRE(decode_deliver(frames[1].second, sub, deliveries));
  CHECK(sub == 5);
  REQUIRE(deliveries.size() == 100);
  CHECK(deliveries[99].message_id == 100);
  CHECK(deliveries[99].lease_token == 1000);
  CHECK(deliveries[99].publish_time_us == 1100);
  MessageParts parts;
  REQUIRE(parse_message(deliveries[0].message, parts));
  CHECK(parts.payload == "hello");
  CHECK(parts.header_count == 1);
}

TEST_CASE("stats_result and error round-trip") {
  std::string out;
  {
    StatsResultWriter w(out, 14);
    std::array<std::pair<StatField, std::uint64_t>, 2> a{std::pair{StatField::ready, 5ull},
                                                         std::pair{StatField::consumers, 2ull}};
    w.add_queue("a", a);
    w.add_queue("b", {});
    w.finish();
  }
  std::uint64_t req = 0;
  std::vector<QueueStatsView> stats;
  const std::string body = body_of(out);
  REQUIRE(decode_stats_result(body, req, stats));
  CHECK(req == 14);
  REQUIRE(stats.size() == 2);
  CHECK(stats[0].name == "a");
  CHECK(stats[0].get(StatField::ready) == 5);
  CHECK(stats[0].get(StatField::consumers) == 2);
  CHECK(stats[0].get(StatField::acked_total) == 0);
  CHECK(stats[1].fields.empty());

  out.clear();
  encode_error(out, 15, errc::unknown_frame_type, "frame type 0x77");
  ErrorFrame e;
  const std::string error_body = body_of(out);
  REQUIRE(decode_error(error_body, e));
  CHECK(e.request_id == 15);
  CHECK(e.code == errc::unknown_frame_type);
  CHECK(e.message == "frame type 0x77");
  CHECK(e.retry_after_ms == 0);

  out.clear();
  encode_error(out, 16, errc::queue_full, "queue is full", 250);
  const std::string full_body = body_of(out);
  REQUIRE(decode_error(full_body, e));
  CHECK(e.code == errc::queue_full);
  CHECK(e.retry_after_ms == 250);
}

TEST_CASE("queues and queues_result round-trip, a request is checked") {
  std::string f;
  encode_queues(f, QueuesRequest{7, QueueOp::remove, "jobs", kQueuesForce, {}});
  QueuesRequest request;
  std::string body = body_of(f);
  REQUIRE(decode_queues(body, request));
  CHECK(request.request_id == 7);
  CHECK(request.op == QueueOp::remove);
  CHECK(request.queue == "jobs");
  CHECK(request.flags == kQueuesForce);
  const auto refused = [&](QueuesRequest r) {
    f.clear();
    encode_queues(f, r);
    return decode_queues(body_of(f), request).code;
  };
  CHECK(refused({8, QueueOp::list, "", 0, {}}) == errc::ok);  // every queue
  CHECK(refused({8, QueueOp::purge, "", 0, {}}) == errc::invalid_queue_name);
  CHECK(refused({8, QueueOp::create, "a b", 0, {}}) == errc::invalid_queue_name);
  CHECK(refused({8, static_cast<QueueOp>(9), "q", 0, {}}) == errc::invalid_argument);
  CHECK(refused({8, QueueOp::purge, "q", 0, {{"max_attempts", "3"}}}) == errc::invalid_argument);
  CHECK(refused({8, QueueOp::purge, "q", kQueuesForce, {}}) == errc::invalid_argument);
  CHECK(refused({8, QueueOp::remove, "q", 0x02, {}}) == errc::invalid_argument);

  QueuesResult out{9, 3, {{"a", false, 0, 0}, {"b.v2", true, 12, 4}}};
  f.clear();
  encode_queues_result(f, out);
  QueuesResult in;
  body = body_of(f);
  REQUIRE(decode_queues_result(body, in));
  CHECK(in.request_id == 9);
  CHECK(in.affected == 3);
  REQUIRE(in.entries.size() == 2);
  CHECK(in.entries[1].name == "b.v2");
  CHECK(in.entries[1].durable);
  CHECK(in.entries[1].messages == 12);
  CHECK(in.entries[1].consumers == 4);
}

TEST_CASE("triggers and triggers_result round-trip, a request is checked") {
  std::string f;
  encode_triggers(f, TriggerRequest{7, TriggerOp::pause, "resize", ""});
  TriggerRequest request;
  std::string body = body_of(f);  // the request's views point into it
  REQUIRE(decode_triggers(body, request));
  CHECK(request.request_id == 7);
  CHECK(request.op == TriggerOp::pause);
  CHECK(request.name == "resize");
  f.clear();
  encode_triggers(f, TriggerRequest{8, TriggerOp::resume, "", ""});
  CHECK(decode_triggers(body_of(f), request).code == errc::invalid_argument);  // needs a name
  f.clear();
  encode_triggers(f, TriggerRequest{9, TriggerOp::list, std::string(101, 'n'), ""});
  CHECK(decode_triggers(body_of(f), request).code == errc::invalid_argument);
  f.clear();
  encode_triggers(f, TriggerRequest{10, static_cast<TriggerOp>(9), "x", ""});
  CHECK(decode_triggers(body_of(f), request).code == errc::invalid_argument);

  TriggerResult out;
  out.request_id = 11;
  out.entries.push_back({"a", "qa", "http://a/", true, 2, false, 3, 1, 5, {1, 2, 3, 4, 5, 6}});
  out.entries.push_back({"b", "qb", "https://b/", false, 0, true, 9, 0, 0, {}});
  f.clear();
  encode_triggers_result(f, out);
  TriggerResult in;
  body = body_of(f);
  REQUIRE(decode_triggers_result(body, in));
  CHECK(in.request_id == 11);
  REQUIRE(in.entries.size() == 2);
  CHECK(in.entries[0].name == "a");
  CHECK(in.entries[0].url == "http://a/");
  CHECK(in.entries[0].paused);
  CHECK(in.entries[0].breaker == 2);
  CHECK(in.entries[0].invocations == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6});
  CHECK(in.entries[1].adaptive);
  CHECK(in.entries[1].limit == 9);
  CHECK_FALSE(in.invoked);
  // A test invocation's answer body is cut to 64 KiB.
  out.entries.clear();
  out.invoked = true;
  const std::string big(kMaxInvokeAnswerBytes + 10, 'b');
  out.invocation = {1, 0, 30'000'000, "timed out", big};
  f.clear();
  encode_triggers_result(f, out);
  body = body_of(f);
  REQUIRE(decode_triggers_result(body, in));
  REQUIRE(in.invoked);
  CHECK(in.invocation.outcome == 1);
  CHECK(in.invocation.took_us == 30'000'000);
  CHECK(in.invocation.error == "timed out");
  CHECK(in.invocation.body.size() == kMaxInvokeAnswerBytes);
}

TEST_CASE("the splitter gives the same frames for any piece size") {
  std::string stream;
  for (const auto& sample : samples()) stream += sample.frame;
  const auto whole = split(stream, stream.size());
  REQUIRE(whole.size() == samples().size());
  for (std::size_t piece : {1, 2, 3, 5, 64, 4096}) {
    CAPTURE(piece);
    CHECK(split(stream, piece) == whole);
  }
}

TEST_CASE("the splitter refuses a zero or oversized length before buffering the frame") {
  FrameDecoder decoder(4096);
  Frame frame;
  errc code{};
  SUBCASE("zero length") {
    decoder.feed(std::string("\0\0\0\0\x01", 5));
    CHECK(decoder.next(frame, code) == FrameDecoder::Result::error);
    CHECK(code == errc::malformed_frame);
  }
  SUBCASE("length over the limit, with only the prefix received") {
    const std::uint32_t length = 4097;
    std::string prefix(4, '\0');
    std::memcpy(prefix.data(), &length, 4);
    decoder.feed(prefix);
    CHECK(decoder.next(frame, code) == FrameDecoder::Result::error);
    CHECK(code == errc::frame_too_large);
  }
  SUBCASE("length at the limit is accepted") {
    const std::uint32_t length = 4096;
    std::string bytes(4, '\0');
    std::memcpy(bytes.data(), &length, 4);
    bytes += std::string(4096, '\x50');
    decoder.feed(bytes.substr(0, 100));
    CHECK(decoder.next(frame, code) == FrameDecoder::Result::need_more);
    decoder.feed(bytes.substr(100));
    CHECK(decoder.next(frame, code) == FrameDecoder::Result::frame);
    CHECK(frame.body.size() == 4095);
  }
}

TEST_CASE("every truncation of every frame body is a typed error, never a crash") {
  for (const auto& sample : samples()) {
    CAPTURE(sample.name);
    const std::string body = body_of(sample.frame);
    for (std::size_t n = 0; n < body.size(); ++n) {
      CAPTURE(n);
      // A copy of exactly n bytes, so reading past it would be caught by ASan/valgrind.
      const std::unique_ptr<char[]> copy(new char[n + 1]);
      std::memcpy(copy.get(), body.data(), n);
      const Status status = sample.decode(std::string_view(copy.get(), n));
      CHECK_FALSE(status);
      CHECK(status.code != errc::ok);
      CHECK(std::strlen(status.detail) > 0);
    }
    // And a trailing byte is refused too: the grammar is exact.
    CHECK(sample.decode(body + '\0').code == errc::malformed_frame);
  }
}

TEST_CASE("random bytes and random mutations never crash the codec") {
  const auto all = samples();
  for (std::uint32_t seed : {1u, 2u, 3u, 4u}) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> byte(0, 255);
    // Mutated valid frames through the splitter and the matching decoder.
    for (int round = 0; round < 2000; ++round) {
      const auto& sample = all[rng() % all.size()];
      std::string body = body_of(sample.frame);
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips && !body.empty(); ++i) body[rng() % body.size()] = char(byte(rng));
      const Status status = sample.decode(body);
      if (!status) CHECK(status.code != errc::ok);
    }
    // Pure garbage through the splitter: frames, need_more or one error; never more memory
    // than the limit allows.
    FrameDecoder decoder(1024);
    std::string garbage(64 * 1024, '\0');
    for (auto& c : garbage) c = char(byte(rng));
    std::size_t at = 0;
    bool failed = false;
    while (at < garbage.size() && !failed) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 300, garbage.size() - at);
      decoder.feed(std::string_view(garbage).substr(at, n));
      at += n;
      Frame frame;
      errc code{};
      for (;;) {
        auto result = decoder.next(frame, code);
        if (result == FrameDecoder::Result::need_more) break;
        if (result == FrameDecoder::Result::error) {
          CHECK((code == errc::frame_too_large || code == errc::malformed_frame));
          failed = true;
          break;
        }
        CHECK(frame.body.size() < 1024);
      }
      CHECK(decoder.buffered() <= 1024 + 300);
    }
  }
}

TEST_CASE("queue names") {
  CHECK(valid_queue_name("a"));
  CHECK(valid_queue_name("orders.eu-west_1:high"));
  CHECK_FALSE(valid_queue_name(""));
  CHECK_FALSE(valid_queue_name("ä"));
  CHECK_FALSE(valid_queue_name(std::string(201, 'a')));
}

TEST_CASE("every error code has a name, a category message and a closing rule") {
  for (std::uint16_t v = 0; v <= static_cast<std::uint16_t>(errc::queue_exists); ++v) {
    const auto code = static_cast<errc>(v);
    CAPTURE(v);
    CHECK(to_string(code) != "unknown");
    CHECK_FALSE(make_error_code(code).message().empty());
  }
  CHECK(closes_connection(errc::frame_too_large));
  CHECK(closes_connection(errc::handshake_required));
  CHECK_FALSE(closes_connection(errc::unknown_frame_type));
  CHECK_FALSE(closes_connection(errc::stale_lease));
}

TEST_CASE("every error code has its HTTP status, and PROTOCOL.md's table says the same") {
  std::ifstream in(SLUICE_SOURCE_DIR "/protocol/PROTOCOL.md");
  REQUIRE(in);
  int rows = 0;
  bool in_section = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("## ", 0) == 0) in_section = line == "## Error codes";
    // "| 9 | stale_lease | ... | | 409 |"
    if (!in_section || line.size() < 4 || line[0] != '|' ||
        !std::isdigit(static_cast<unsigned char>(line[2])))
      continue;
    const int code = std::atoi(line.c_str() + 2);
    const auto name_begin = line.find("| ", 2) + 2;
    const std::string name = line.substr(name_begin, line.find(' ', name_begin) - name_begin);
    const auto last = line.rfind('|', line.size() - 2);
    const int status = std::atoi(line.c_str() + last + 1);
    INFO(line);
    CHECK(sluice::to_string(static_cast<sluice::errc>(code)) == name);
    CHECK(sluice::http_status(static_cast<sluice::errc>(code)) == static_cast<unsigned>(status));
    ++rows;
  }
  CHECK(rows == 27);
}
