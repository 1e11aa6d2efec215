// TLS on both listeners with certificates openssl makes at run time: the
// client library, sluicectl and curl connect and verify; plaintext to the TLS
// port, a wrong CA and a wrong name fail cleanly; SIGHUP picks up a new
// certificate.
#include <doctest/doctest.h>
#include <signal.h>

#include <fstream>

#include "function_server.hpp"
#include "test_broker.hpp"

using sluice::test::run_command;
namespace client = sluice::client;
namespace fs = std::filesystem;

namespace {

/// Two CAs and, for each, a server certificate for localhost and 127.0.0.1.
class Certificates {
 public:
  Certificates() : dir_("sluice-tls") {
    make_ca("ca1");
    make_ca("ca2");
    make_server("ca1", "server1");
    make_server("ca2", "server2");
  }
  std::string path(const std::string& name) const { return (dir_.path / name).string(); }
  const fs::path& dir() const { return dir_.path; }

 private:
  void run(const std::string& script) {
    const auto r = run_command("cd " + dir_.path.string() + " && (" + script + ") 2>&1");
    INFO(r.out);
    REQUIRE(r.status == 0);
  }
  void make_ca(const std::string& ca) {
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-subj '/CN=Sluice test " +
        ca + "' -keyout " + ca + ".key -out " + ca +
        ".pem "
        "-addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign'");
  }
  void make_server(const std::string& ca, const std::string& name) {
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost "
        "-keyout " +
        name + ".key -out " + name +
        ".csr && "
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > " +
        name + ".ext && openssl x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca +
        ".key -CAcreateserial -days 2 -extfile " + name + ".ext -out " + name + ".pem");
  }
  sluice::test::ScopedTempDir dir_;
};

client::Options tls_options(const TestBroker& broker, const std::string& ca) {
  auto o = broker.options();
  o.tls = true;
  o.ca_file = ca;
  o.connect_timeout = 5s;
  o.request_timeout = 5s;
  return o;
}

/// curl's exit status and output (-s: quiet, -S: errors, -w: the status code).
sluice::test::CommandResult curl(const std::string& args) {
  return run_command("curl -sS --max-time 5 -o /dev/null -w '%{http_code}' " + args + " 2>&1");
}

}  // namespace

TEST_CASE("tls: the client library, sluicectl and curl connect, verify and work") {
  Certificates certs;
  // The broker reads the files from a place we can replace for the reload.
  fs::copy_file(certs.path("server1.pem"), certs.dir() / "live.pem");
  fs::copy_file(certs.path("server1.key"), certs.dir() / "live.key");
  TestBroker broker({"--set", "tls.cert_file=" + (certs.dir() / "live.pem").string(), "--set",
                     "tls.key_file=" + (certs.dir() / "live.key").string()});
  CHECK(broker.log().find("\"tls\":\"on\"") != std::string::npos);

  SUBCASE("publish and consume through the client library") {
    auto c = client::Connection::connect(tls_options(broker, certs.path("ca1.pem")));
    INFO(c.error().to_string());
    REQUIRE(c.ok());
    auto& conn = **c;
    for (int i = 0; i < 100; ++i)
      conn.publish_async("secure", sluice::test::text_message("m" + std::to_string(i)), nullptr);
    REQUIRE(conn.wait_confirms(10s));
    std::atomic<int> got{0};
    auto sub = conn.subscribe("secure", {.max_in_flight = 16}, [&](const client::Delivery&) {
      got.fetch_add(1);
      return client::Disposition::ack;
    });
    REQUIRE(sub.ok());
    CHECK(eventually([&] { return got.load() == 100; }));
    auto stats = conn.stats("secure");
    REQUIRE(stats.ok());
    CHECK(eventually([&] { return conn.stats("secure")->front().acked_total == 100; }));
    // By name as well as by address.
    auto by_name = tls_options(broker, certs.path("ca1.pem"));
    by_name.server_name = "localhost";
    CHECK(client::Connection::connect(by_name).ok());
  }

  SUBCASE("sluicectl with --ca-file") {
    const std::string ctl = std::string(SLUICECTL_PATH) + " --broker " + broker.address() +
                            " --ca-file " + certs.path("ca1.pem");
    auto out = run_command(ctl + " publish ctl --body hello --quiet 2>&1");
    INFO(out.out);
    CHECK(out.status == 0);
    out = run_command(ctl + " consume ctl --count 1 2>&1");
    CHECK(out.status == 0);
    CHECK(out.out.find("hello") != std::string::npos);
    out = run_command(std::string(SLUICECTL_PATH) + " --broker " + broker.address() +
                      " publish ctl --body plain 2>&1");
    CHECK(out.status != 0);  // no --tls: refused, not hung
  }

  SUBCASE("curl over HTTPS") {
    const std::string base = "https://127.0.0.1:" + std::to_string(broker.http_port());
    auto r = curl("--cacert " + certs.path("ca1.pem") + " " + base + "/healthz");
    INFO(r.out);
    CHECK(r.status == 0);
    CHECK(r.out == "200");
    r = curl("--cacert " + certs.path("ca1.pem") + " -X POST --data-binary hello " + base +
             "/v1/queues/web/messages");
    CHECK(r.out == "202");
    r = curl("--cacert " + certs.path("ca1.pem") +
             " https://localhost:" + std::to_string(broker.http_port()) + "/readyz");
    CHECK(r.out == "200");
  }

  SUBCASE("plaintext to the TLS ports fails cleanly and the broker carries on") {
    auto plain = broker.options();
    plain.connect_timeout = 3s;
    plain.request_timeout = 3s;
    auto c = client::Connection::connect(plain);
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().code == errc::connection_lost);
    auto r = curl("http://127.0.0.1:" + std::to_string(broker.http_port()) + "/healthz");
    CHECK(r.status != 0);  // an empty reply or a reset, not an answer
    CHECK(
        eventually([&] { return broker.log().find("tls_handshake_failed") != std::string::npos; }));
    CHECK(client::Connection::connect(tls_options(broker, certs.path("ca1.pem"))).ok());
  }

  SUBCASE("a wrong CA or a wrong name fails verification") {
    auto c = client::Connection::connect(tls_options(broker, certs.path("ca2.pem")));
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().detail.find("certificate verify failed") != std::string::npos);
    auto named = tls_options(broker, certs.path("ca1.pem"));
    named.server_name = "sluice.example.com";
    c = client::Connection::connect(named);
    REQUIRE_FALSE(c.ok());
    CHECK(c.error().detail.find("certificate verify failed") != std::string::npos);
    auto r = curl("--cacert " + certs.path("ca2.pem") +
                  " https://127.0.0.1:" + std::to_string(broker.http_port()) + "/healthz");
    CHECK(r.status == 60);  // curl: peer certificate cannot be authenticated
    // A TLS client at a plain port fails too (no hang).
    TestBroker plain_broker;
    c = client::Connection::connect(tls_options(plain_broker, certs.path("ca1.pem")));
    CHECK_FALSE(c.ok());
  }

  SUBCASE("SIGHUP reads a renewed certificate; open connections keep theirs") {
    auto before = client::Connection::connect(tls_options(broker, certs.path("ca1.pem")));
    REQUIRE(before.ok());
    fs::copy_file(certs.path("server2.pem"), certs.dir() / "live.pem",
                  fs::copy_options::overwrite_existing);
    fs::copy_file(certs.path("server2.key"), certs.dir() / "live.key",
                  fs::copy_options::overwrite_existing);
    ::kill(broker.pid(), SIGHUP);
    REQUIRE(eventually([&] { return broker.log().find("tls_reloaded") != std::string::npos; }));
    CHECK(client::Connection::connect(tls_options(broker, certs.path("ca2.pem"))).ok());
    CHECK_FALSE(client::Connection::connect(tls_options(broker, certs.path("ca1.pem"))).ok());
    CHECK((*before)->publish("q", sluice::test::text_message("still open")).ok());
    // A broken certificate fails the reload and changes nothing.
    std::ofstream(certs.dir() / "live.pem") << "not a certificate";
    const auto at = broker.log().size();
    ::kill(broker.pid(), SIGHUP);
    REQUIRE(
        eventually([&] { return broker.log().find("reload_failed", at) != std::string::npos; }));
    CHECK(client::Connection::connect(tls_options(broker, certs.path("ca2.pem"))).ok());
  }
}

TEST_CASE("tls: a missing or mismatched certificate stops sluiced at start with the reason") {
  Certificates certs;
  auto r = run_command(std::string(SLUICED_PATH) +
                       " --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --set tls.cert_file=" +
                       certs.path("server1.pem") +
                       " --set tls.key_file=" + certs.path("server2.key") + " 2>&1");
  CHECK(r.status == 2);
  CHECK(r.out.find("does not match") != std::string::npos);
  r = run_command(std::string(SLUICED_PATH) +
                  " --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --set tls.cert_file=/nonexistent"
                  " --set tls.key_file=/nonexistent 2>&1");
  CHECK(r.status == 2);
  CHECK(r.out.find("tls.cert_file /nonexistent") != std::string::npos);
}

TEST_CASE(
    "tls: a trigger verifies its https function against ca_file, and verify = off skips that") {
  Certificates certs;
  // The function's certificate is ca1's, for localhost (resolved asynchronously).
  sluice::test::FunctionServer function(certs.path("server1.pem"), certs.path("server1.key"));
  std::vector<std::string> flags;
  const auto trigger = [&](const std::string& name, const std::string& ca, const char* verify) {
    for (const std::string& setting :
         {"queue=" + name, "url=" + function.url(), "ca_file=" + certs.path(ca),
          std::string("verify=") + verify}) {
      flags.push_back("--set");
      flags.push_back("triggers." + name + "." + setting);
    }
  };
  trigger("trusted", "ca1.pem", "on");
  trigger("untrusted", "ca2.pem", "on");  // another CA: the handshake must fail
  trigger("unverified", "ca2.pem", "off");
  TestBroker broker(flags);
  auto producer = broker.connect("producer");
  for (const char* queue : {"trusted", "untrusted", "unverified"})
    for (int i = 0; i < 3; ++i)
      REQUIRE(producer->publish(queue, sluice::test::text_message(queue)).ok());
  // The trusted and unverified triggers deliver over HTTPS; the untrusted one never does.
  CHECK(sluice::test::eventually([&] { return function.seen().size() == 6; }, 20s, 100ms));
  const auto metric = [&](const std::string& series) {
    const std::string text = sluice::test::http_request(broker.http_port(), "GET", "/metrics").body;
    const auto at = text.find("\n" + series + " ");
    return at == std::string::npos ? -1.0 : std::stod(text.substr(at + series.size() + 2));
  };
  CHECK(sluice::test::eventually(
      [&] {
        return metric(
                   "sluice_trigger_invocations_total{trigger=\"untrusted\",outcome=\"connect_"
                   "error\"}") >= 1;
      },
      20s, 100ms));
  CHECK(metric("sluice_trigger_invocations_total{trigger=\"untrusted\",outcome=\"ok\"}") == 0);
  auto stats = producer->stats("untrusted");
  REQUIRE(stats.ok());
  CHECK(stats->front().acked_total == 0);
  for (const char* queue : {"trusted", "unverified"}) {
    CAPTURE(queue);
    CHECK(sluice::test::eventually([&] {
      auto s = producer->stats(queue);
      return s.ok() && s->front().acked_total == 3;
    }));
  }
}
