// sluice-trigger-bench: the pieces of `bench/bench.py trigger`.
//
//   function --port-file F      a no-op HTTP function: answers every POST 200 at once,
//                               counts requests and messages, and times messages that
//                               carry a bench-sent-ns header (publish -> function)
//   produce --broker H:P --queue Q (--messages N | --rate R --duration S)
//                               publishes 100-byte messages stamped with bench-sent-ns
//   pull --http PORT --queue Q --connections C --batch B --messages N
//                               HTTP pull consumers (receive + ack, keep-alive), the
//                               alternative to a trigger; prints what they got as JSON
//
// The stamp is steady-clock (CLOCK_MONOTONIC) nanoseconds, one clock for every
// process on the machine. The function answers GET /_stats with its counts and
// latency percentiles, and POST /_reset forgets them.
#include <utility>  // before Asio: Boost 1.74 + C++20 needs it

#include <boost/asio.hpp>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "sluice/client/client.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;
using json = nlohmann::json;
using sluice::bench::now_ns;

namespace {

constexpr std::string_view kStamp = "bench-sent-ns";

/// The value of header `name` (case-insensitive) in an HTTP head, or "".
std::string_view header_value(std::string_view head, std::string_view name) {
  std::size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const std::size_t start = at + 2;
    const std::size_t end = head.find("\r\n", start);
    const std::string_view line =
        head.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    const std::size_t colon = line.find(':');
    if (colon == name.size() &&
        std::equal(name.begin(), name.end(), line.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      return value;
    }
    at = end;
  }
  return {};
}

std::uint64_t to_u64(std::string_view text) {
  std::uint64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') break;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return n;
}

/// Occurrences of `needle` in `hay`.
std::size_t count_of(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (std::size_t at = hay.find(needle); at != std::string_view::npos;
       at = hay.find(needle, at + needle.size()))
    ++n;
  return n;
}

// ---------------------------------------------------------------- function

struct FunctionStats {
  std::uint64_t requests = 0;
  std::uint64_t messages = 0;
  std::uint64_t first_ns = 0;  // steady clock of the first and last request
  std::uint64_t last_ns = 0;
  std::vector<std::uint32_t> latency_us;

  json to_json() {
    std::sort(latency_us.begin(), latency_us.end());
    return {{"requests", requests},
            {"messages", messages},
            {"first_ns", first_ns},
            {"last_ns", last_ns},
            {"samples", latency_us.size()},
            {"p50_us", sluice::bench::percentile(latency_us, 0.50)},
            {"p99_us", sluice::bench::percentile(latency_us, 0.99)},
            {"p999_us", sluice::bench::percentile(latency_us, 0.999)},
            {"max_us", latency_us.empty() ? 0u : latency_us.back()}};
  }
};

class FunctionConnection : public std::enable_shared_from_this<FunctionConnection> {
 public:
  FunctionConnection(tcp::socket socket, FunctionStats& stats)
      : socket_(std::move(socket)), stats_(stats) {
    socket_.set_option(tcp::no_delay(true));
  }
  void read() {
    const std::size_t old = in_.size();
    in_.resize(old + 65536);
    socket_.async_read_some(
        asio::buffer(in_.data() + old, 65536),
        [self = shared_from_this(), old](boost::system::error_code ec, std::size_t n) {
          self->in_.resize(old + (ec ? 0 : n));
          if (!ec) self->handle();
        });
  }

 private:
  void handle() {
    std::size_t at = 0;
    for (;;) {
      const std::string_view rest(in_.data() + at, in_.size() - at);
      const std::size_t head_end = rest.find("\r\n\r\n");
      if (head_end == std::string_view::npos) break;
      const std::string_view head = rest.substr(0, head_end);
      const std::size_t length = to_u64(header_value(head, "content-length"));
      if (rest.size() < head_end + 4 + length) break;
      const std::string_view body = rest.substr(head_end + 4, length);
      answer(head, body);
      at += head_end + 4 + length;
    }
    in_.erase(0, at);
    if (out_.empty()) return read();
    asio::async_write(socket_, asio::buffer(out_),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                        self->out_.clear();
                        if (!ec) self->read();
                      });
  }

  void answer(std::string_view head, std::string_view body) {
    const std::uint64_t now = now_ns();
    if (head.starts_with("GET /_stats")) {
      const std::string text = stats_.to_json().dump();
      out_ += "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
              std::to_string(text.size()) + "\r\n\r\n" + text;
      return;
    }
    if (head.starts_with("POST /_reset")) {
      stats_ = {};
      out_ += "HTTP/1.1 204 No Content\r\n\r\n";
      return;
    }
    ++stats_.requests;
    if (stats_.first_ns == 0) stats_.first_ns = now;
    stats_.last_ns = now;
    // A JSON batch holds one "attempt" key per message; a raw request is one message.
    const bool batch = !body.empty() && body.front() == '[';
    stats_.messages += batch ? count_of(body, "\"attempt\":") : 1;
    if (const std::uint64_t sent = to_u64(header_value(head, kStamp)); sent != 0 && now > sent)
      stats_.latency_us.push_back(static_cast<std::uint32_t>((now - sent) / 1000));
    out_ += "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  }

  tcp::socket socket_;
  FunctionStats& stats_;
  std::string in_;
  std::string out_;
};

int run_function(const std::string& port_file) {
  asio::io_context io;
  tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  FunctionStats stats;
  std::ofstream(port_file) << acceptor.local_endpoint().port() << "\n";
  std::function<void()> accept = [&] {
    acceptor.async_accept([&](boost::system::error_code ec, tcp::socket socket) {
      if (!ec) std::make_shared<FunctionConnection>(std::move(socket), stats)->read();
      accept();
    });
  };
  accept();
  io.run();
  return 0;
}

// ---------------------------------------------------------------- produce

int run_produce(const std::string& broker, const std::string& queue, double messages, double rate,
                double duration) {
  sluice::client::Options options;
  const auto colon = broker.rfind(':');
  options.host = broker.substr(0, colon);
  options.port = static_cast<std::uint16_t>(std::stoi(broker.substr(colon + 1)));
  options.max_unconfirmed = 10'000;
  auto conn = sluice::client::Connection::connect(options);
  if (!conn) {
    std::fprintf(stderr, "produce: %s\n", conn.error().to_string().c_str());
    return 1;
  }
  const std::string payload(100, 'x');
  const auto total = static_cast<std::uint64_t>(rate > 0 ? rate * duration : messages);
  std::atomic<std::uint64_t> failed{0};
  const std::uint64_t start = now_ns();
  for (std::uint64_t i = 0; i < total; ++i) {
    if (rate > 0) {
      // Paced: message i leaves at start + i / rate (no catching up in bursts beyond that).
      const auto due = start + static_cast<std::uint64_t>(static_cast<double>(i) * 1e9 / rate);
      while (now_ns() < due) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    sluice::client::Message m;
    m.payload = payload;
    m.headers.emplace_back(std::string(kStamp), std::to_string(now_ns()));
    (*conn)->publish_async(queue, m, [&failed](const sluice::client::Error& e, std::uint64_t) {
      if (e) failed.fetch_add(1);
    });
  }
  if (!(*conn)->wait_confirms(std::chrono::minutes(5)) || failed.load() != 0) {
    std::fprintf(stderr, "produce: %llu publishes failed\n", (unsigned long long)failed.load());
    return 1;
  }
  std::printf("%s\n",
              json({{"published", total}, {"seconds", (now_ns() - start) / 1e9}}).dump().c_str());
  return 0;
}

// ---------------------------------------------------------------- pull

/// One keep-alive HTTP/1.1 connection, request by request.
class HttpConnection {
 public:
  HttpConnection(asio::io_context& io, std::uint16_t port) : socket_(io) {
    socket_.connect({asio::ip::make_address("127.0.0.1"), port});
    socket_.set_option(tcp::no_delay(true));
  }
  /// POSTs `body` to `target`; the response body ("" and status 0 on a broken connection).
  std::pair<int, std::string> post(const std::string& target, const std::string& body) {
    std::string request = "POST " + target +
                          " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          "Content-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
    boost::system::error_code ec;
    asio::write(socket_, asio::buffer(request), ec);
    if (ec) return {0, {}};
    const std::size_t head_end =
        asio::read_until(socket_, asio::dynamic_buffer(in_), "\r\n\r\n", ec);
    if (ec) return {0, {}};
    const std::string head = in_.substr(0, head_end);
    const std::size_t length = to_u64(header_value(head, "content-length"));
    if (in_.size() < head_end + length)
      asio::read(socket_, asio::dynamic_buffer(in_),
                 asio::transfer_exactly(head_end + length - in_.size()), ec);
    if (ec) return {0, {}};
    std::string out = in_.substr(head_end, length);
    in_.erase(0, head_end + length);
    return {static_cast<int>(to_u64(head.substr(9, 3))), std::move(out)};
  }

 private:
  tcp::socket socket_;
  std::string in_;
};

int run_pull(std::uint16_t http_port, const std::string& queue, int connections, int batch,
             std::uint64_t messages) {
  std::atomic<std::uint64_t> got{0};
  std::mutex mutex;
  std::vector<std::uint32_t> latency_us;
  const std::uint64_t start = now_ns();
  std::atomic<std::uint64_t> last_ns{0};
  std::vector<std::thread> threads;
  const std::string receive_body = json({{"max_messages", batch}, {"wait_ms", 1000}}).dump();
  for (int c = 0; c < connections; ++c) {
    threads.emplace_back([&] {
      asio::io_context io;
      HttpConnection http(io, http_port);
      std::vector<std::uint32_t> mine;
      while (got.load() < messages) {
        auto [status, body] = http.post("/v1/queues/" + queue + "/receive", receive_body);
        if (status != 200) break;
        const json answer = json::parse(body, nullptr, false);
        if (!answer.contains("messages")) break;
        const std::uint64_t now = now_ns();
        json receipts = json::array();
        for (const auto& m : answer["messages"]) {
          receipts.push_back(m["receipt"]);
          if (m.contains("headers") && m["headers"].contains(kStamp)) {
            const std::uint64_t sent = to_u64(m["headers"][std::string(kStamp)].get<std::string>());
            if (sent != 0 && now > sent)
              mine.push_back(static_cast<std::uint32_t>((now - sent) / 1000));
          }
        }
        if (receipts.empty()) continue;
        if (http.post("/v1/queues/" + queue + "/ack", json({{"receipts", receipts}}).dump())
                .first != 200)
          break;
        got.fetch_add(receipts.size());
        last_ns.store(now_ns());
      }
      std::lock_guard lock(mutex);
      latency_us.insert(latency_us.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  std::sort(latency_us.begin(), latency_us.end());
  const double seconds = static_cast<double>(last_ns.load() - start) / 1e9;
  std::printf("%s\n", json({{"messages", got.load()},
                            {"seconds", seconds},
                            {"rate", static_cast<double>(got.load()) / seconds},
                            {"samples", latency_us.size()},
                            {"p50_us", sluice::bench::percentile(latency_us, 0.50)},
                            {"p99_us", sluice::bench::percentile(latency_us, 0.99)},
                            {"p999_us", sluice::bench::percentile(latency_us, 0.999)}})
                          .dump()
                          .c_str());
  return got.load() >= messages ? 0 : 1;
}

int usage() {
  std::fputs(
      "usage: sluice-trigger-bench function --port-file FILE\n"
      "       sluice-trigger-bench produce --broker HOST:PORT --queue Q (--messages N | --rate R "
      "--duration S)\n"
      "       sluice-trigger-bench pull --http PORT --queue Q --connections C --batch B "
      "--messages N\n",
      stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string role = argv[1];
  std::string port_file, broker, queue = "bench";
  double messages = 0, rate = 0, duration = 0, http_port = 0, connections = 1, batch = 1;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return usage();
    const std::string value = argv[++i];
    double* number = arg == "--messages"      ? &messages
                     : arg == "--rate"        ? &rate
                     : arg == "--duration"    ? &duration
                     : arg == "--http"        ? &http_port
                     : arg == "--connections" ? &connections
                     : arg == "--batch"       ? &batch
                                              : nullptr;
    if (number != nullptr) {
      if (!sluice::bench::parse_number(value, *number)) return usage();
    } else if (arg == "--port-file") {
      port_file = value;
    } else if (arg == "--broker") {
      broker = value;
    } else if (arg == "--queue") {
      queue = value;
    } else {
      return usage();
    }
  }
  if (role == "function" && !port_file.empty()) return run_function(port_file);
  if (role == "produce" && !broker.empty() && (messages > 0 || (rate > 0 && duration > 0)))
    return run_produce(broker, queue, messages, rate, duration);
  if (role == "pull" && http_port > 0 && messages > 0)
    return run_pull(static_cast<std::uint16_t>(http_port), queue, static_cast<int>(connections),
                    static_cast<int>(batch), static_cast<std::uint64_t>(messages));
  return usage();
}
