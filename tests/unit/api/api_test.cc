// The control plane's parsers and signer: HTTP request parsing with its
// bounds, EC2 Query parameters and wildcards, and SigV4 against AWS's published test vector.

#include "http_server.h"
#include "query.h"
#include "replay_guard.h"
#include "sigv4.h"
#include "test_util.h"

namespace strata::api {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

TEST(HttpParseTest, ParsesPipelinedRequestsAndWaitsForMore) {
  HttpServerOptions options;
  std::string buffer =
      "POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-Multi: a\r\nX-Multi: b\r\n\r\nabc"
      "GET / HTTP/1.1\r\nHost: h\r\n";
  auto first = HttpServer::ParseRequest(buffer, options);
  ASSERT_THAT(first, IsOk());
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ((*first)->method, "POST");
  EXPECT_EQ((*first)->path, "/a");
  EXPECT_EQ((*first)->query, "x=1");
  EXPECT_EQ((*first)->body, "abc");
  EXPECT_EQ((*first)->Header("x-multi"), "a,b");
  auto second = HttpServer::ParseRequest(buffer, options);
  ASSERT_THAT(second, IsOk());
  EXPECT_FALSE(second->has_value());  // Incomplete: needs the blank line.
  buffer += "\r\n";
  second = HttpServer::ParseRequest(buffer, options);
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_TRUE(buffer.empty());
}

TEST(HttpParseTest, RefusesMalformedAndOversizedRequests) {
  HttpServerOptions options;
  options.max_body_bytes = 10;
  options.max_header_bytes = 100;
  for (std::string bad :
       {std::string("garbage\r\n\r\n"), std::string("GET nopath HTTP/1.1\r\n\r\n"),
        std::string("GET / HTTP/1.1\r\nno colon\r\n\r\n"),
        std::string("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
        std::string("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"),
        std::string("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "GET / HTTP/1.1\r\nX: " + std::string(200, 'a') + "\r\n\r\n", std::string(200, 'a')}) {
    EXPECT_THAT(HttpServer::ParseRequest(bad, options),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << bad.substr(0, 40);
  }
}

TEST(QueryTest, ListsStructsIntsAndBadEscapes) {
  auto p = QueryParams::Parse(
      "VolumeId.1=a&VolumeId.2=b&VolumeId.4=d&Filter.1.Name=tag%3AName&"
      "Filter.1.Value.1=web%2A&Filter.2.Name=size&Filter.2.Value.1=2&Size=x+y");
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(p->List("VolumeId"), (std::vector<std::string>{"a", "b"}));
  std::vector<Filter> filters = ParseFilters(*p);
  ASSERT_EQ(filters.size(), 2u);
  EXPECT_EQ(filters[0].name, "tag:Name");
  EXPECT_EQ(filters[0].values, (std::vector<std::string>{"web*"}));
  EXPECT_EQ(p->GetOr("Size", ""), "x y");
  EXPECT_THAT(p->GetInt("Size"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(QueryParams::Parse("a=%zz"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(QueryParams::Parse("a=%4"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(QueryTest, Wildcards) {
  EXPECT_TRUE(WildcardMatch("web-*", "web-1"));
  EXPECT_TRUE(WildcardMatch("w?b*", "web"));
  EXPECT_TRUE(WildcardMatch("*", ""));
  EXPECT_FALSE(WildcardMatch("web-?", "web-12"));
  EXPECT_FALSE(WildcardMatch("a*b", "acd"));
  EXPECT_TRUE(WildcardMatch("*a*b*c", "xxaxxbxxc"));
}

// AWS Signature Version 4 test suite, "get-vanilla".
TEST(SigV4Test, MatchesAwsTestSuiteVector) {
  HttpRequest request;
  request.method = "GET";
  request.path = "/";
  request.headers = {{"host", "example.amazonaws.com"}, {"x-amz-date", "20150830T123600Z"}};
  SigV4Authorization auth;
  auth.date = "20150830";
  auth.region = "us-east-1";
  auth.service = "service";
  const std::string canonical = CanonicalRequest(request, {"host", "x-amz-date"}, Sha256Hex(""));
  EXPECT_EQ(Sign("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830T123600Z", auth, canonical),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

TEST(SigV4Test, RefusesMissingMalformedAndStale) {
  auto lookup = [](const std::string&) -> absl::StatusOr<std::string> { return std::string("s"); };
  HttpRequest request;
  request.method = "POST";
  request.path = "/";
  auto failure = std::get<AuthFailure>(Verify(request, lookup, 0));
  EXPECT_EQ(failure.code, "AuthFailure");
  request.headers["authorization"] =
      "AWS4-HMAC-SHA256 Credential=AK/20260101/r/ec2/aws4_request, "
      "SignedHeaders=host;x-amz-date, Signature=00";
  request.headers["x-amz-date"] = "20260101T000000Z";
  request.headers["host"] = "h";
  failure = std::get<AuthFailure>(Verify(request, lookup, 1767225600 + 3600));  // An hour later.
  EXPECT_EQ(failure.code, "AuthFailure");
  failure = std::get<AuthFailure>(Verify(request, lookup, 1767225600));
  EXPECT_EQ(failure.code, "SignatureDoesNotMatch");
  request.headers["authorization"] = "Basic abc";
  failure = std::get<AuthFailure>(Verify(request, lookup, 1767225600));
  EXPECT_EQ(failure.code, "AuthFailure");
}

}  // namespace
}  // namespace strata::api

#include "ebs_service.h"

namespace strata::api {
namespace {

TEST(StartSnapshotParseTest, ChecksTypesAndRanges) {
  auto ok = ParseStartSnapshot(
      R"({"VolumeSize": 8, "Tags": [{"Key": "k", "Value": "v"}], "Timeout": 30})");
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->volume_size_gib, 8);
  EXPECT_EQ(ok->tags.at("k"), "v");
  for (const char* bad :
       {"", "[]", "not json", R"({"VolumeSize": "8"})", R"({"VolumeSize": 0})",
        R"({"VolumeSize": 8, "Description": 5})", R"({"VolumeSize": 8, "Timeout": 5})",
        R"({"VolumeSize": 8, "Tags": [{"Value": "v"}]})", R"({"VolumeSize": 8, "Tags": {}})",
        R"({"VolumeSize": 8, "Encrypted": true})"}) {
    EXPECT_THAT(ParseStartSnapshot(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

}  // namespace
}  // namespace strata::api

// The HTTP server over a loopback socket: keep-alive, pipelining, limits and the slow-client
// deadline, as a client sees them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

namespace strata::api {
namespace {

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions options) {
    options.port = 0;
    server_ = std::make_unique<HttpServer>(options, [](const HttpRequest& r) {
      return HttpResponse{200, {{"X-Path", r.path}}, r.method + " " + r.target + " " + r.body};
    });
    ASSERT_THAT(server_->Start(), IsOk());
  }
  int Connect() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server_->port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }
  static void Send(int fd, const std::string& data) {
    ASSERT_EQ(::send(fd, data.data(), data.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size()));
  }
  // Everything the server sends until it closes the connection or `timeout_ms` passes.
  static std::string ReadUntilClosed(int fd, int timeout_ms, bool* closed) {
    std::string out;
    char buf[4096];
    *closed = false;
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) {
        *closed = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, AnswersPipelinedRequestsInOrderOnOneConnection) {
  StartServer({});
  const int fd = Connect();
  Send(fd,
       "POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
       "GET /two?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
       "GET /three HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
  bool closed = false;
  const std::string got = ReadUntilClosed(fd, 5000, &closed);
  ::close(fd);
  EXPECT_TRUE(closed) << "Connection: close must end the connection";
  const size_t one = got.find("POST /one abc");
  const size_t two = got.find("GET /two?x=1 ");
  const size_t three = got.find("GET /three ");
  ASSERT_NE(one, std::string::npos) << got;
  ASSERT_NE(two, std::string::npos) << got;
  ASSERT_NE(three, std::string::npos) << got;
  EXPECT_LT(one, two);
  EXPECT_LT(two, three);
  EXPECT_NE(got.find("X-Path: /two"), std::string::npos) << got;
}

TEST_F(HttpServerTest, RefusesOversizedHeadersBodiesAndChunkedWithTheirStatus) {
  HttpServerOptions options;
  options.max_header_bytes = 1024;
  options.max_body_bytes = 100;
  StartServer(options);
  const std::pair<std::string, std::string> cases[] = {
      {"GET / HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n", "HTTP/1.1 431"},
      {"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", "HTTP/1.1 413"},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
       "HTTP/1.1 501"},
      {"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "HTTP/1.1 400"},
  };
  for (const auto& [request, status] : cases) {
    const int fd = Connect();
    Send(fd, request);
    bool closed = false;
    const std::string got = ReadUntilClosed(fd, 5000, &closed);
    ::close(fd);
    EXPECT_EQ(got.substr(0, status.size()), status) << request.substr(0, 40) << " got " << got;
    EXPECT_TRUE(closed) << "a refused request ends its connection";
  }
}

TEST_F(HttpServerTest, AClientThatTricklesItsRequestIsCutOffWithinTwiceTheTimeout) {
  HttpServerOptions options;
  options.receive_timeout_ms = 300;
  StartServer(options);
  const int fd = Connect();
  const std::string request = "GET /" + std::string(200, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n";
  // A byte every 50 ms: each read is within the socket timeout, the request as a whole is not.
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (char c : request) {
    if (::send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
      closed = true;
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      char buf[256];
      if (::recv(fd, buf, sizeof(buf), 0) <= 0) {
        closed = true;
        break;
      }
      ADD_FAILURE() << "the server answered a request that took longer than its deadline";
    }
  }
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_TRUE(closed) << "the trickling client was never cut off";
  EXPECT_LT(took, std::chrono::milliseconds(2 * 300 + 200));
}

TEST_F(HttpServerTest, ASlowClientIsCutOffAtItsDeadlineAndOthersAreServed) {
  HttpServerOptions options;
  options.receive_timeout_ms = 300;
  StartServer(options);
  const int slow = Connect();
  Send(slow, "GET / HTTP/1.1\r\nHost: h\r\n");  // Never finishes its headers.
  const int other = Connect();
  Send(other, "GET /fine HTTP/1.1\r\nConnection: close\r\n\r\n");
  bool closed = false;
  EXPECT_NE(ReadUntilClosed(other, 5000, &closed).find("GET /fine"), std::string::npos);
  const std::string got = ReadUntilClosed(slow, 5000, &closed);
  EXPECT_TRUE(closed) << "the slow client's connection must be closed at its deadline";
  EXPECT_EQ(got, "");
  ::close(slow);
  ::close(other);
}

}  // namespace
// A request signed as a client would, for `service`, with `payload_hash` as its
// x-amz-content-sha256.
HttpRequest SignedRequest(const std::string& service, const std::string& payload_hash) {
  HttpRequest request;
  request.method = "POST";
  request.path = "/";
  request.body = "Action=DescribeVolumes&Version=2016-11-15";
  request.headers = {{"host", "127.0.0.1:8150"},
                     {"x-amz-date", "20260101T000000Z"},
                     {"x-amz-content-sha256", payload_hash}};
  SigV4Authorization auth;
  auth.access_key_id = "AK";
  auth.date = "20260101";
  auth.region = "local-1";
  auth.service = service;
  const std::vector<std::string> signed_headers = {"host", "x-amz-content-sha256", "x-amz-date"};
  const std::string signature = Sign("secret", "20260101T000000Z", auth,
                                     CanonicalRequest(request, signed_headers, payload_hash));
  request.headers["authorization"] = absl::StrCat(
      "AWS4-HMAC-SHA256 Credential=AK/20260101/local-1/", service,
      "/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=", signature);
  return request;
}

TEST(SigV4Test, UnsignedPayloadOnlyForEbsUploads) {
  auto lookup = [](const std::string&) -> absl::StatusOr<std::string> {
    return std::string("secret");
  };
  const int64_t now = 1767225600;
  for (const char* service : {"ec2", "kms"}) {
    auto verified = Verify(SignedRequest(service, "UNSIGNED-PAYLOAD"), lookup, now);
    ASSERT_TRUE(std::holds_alternative<AuthFailure>(verified)) << service;
    EXPECT_EQ(std::get<AuthFailure>(verified).code, "AuthFailure");
    EXPECT_THAT(std::get<AuthFailure>(verified).message, ::testing::HasSubstr("UNSIGNED-PAYLOAD"));
    // The same request with its body signed is accepted: the refusal is of the unsigned body.
    const std::string body_hash = Sha256Hex("Action=DescribeVolumes&Version=2016-11-15");
    EXPECT_TRUE(std::holds_alternative<SigV4Authorization>(
        Verify(SignedRequest(service, body_hash), lookup, now)))
        << service;
  }
  EXPECT_TRUE(std::holds_alternative<SigV4Authorization>(
      Verify(SignedRequest("ebs", "UNSIGNED-PAYLOAD"), lookup, now)));
}

TEST(ReplayGuardTest, RefusesASignatureSeenBeforeAndForgetsItOnlyWhenTooOldAnyway) {
  ReplayGuard guard(/*capacity=*/100, /*window_seconds=*/900);
  const int64_t now = 1767225600;
  EXPECT_EQ(guard.Admit(std::string(64, 'a'), now, now), ReplayGuard::Verdict::kFresh);
  EXPECT_EQ(guard.Admit(std::string(64, 'a'), now, now + 1), ReplayGuard::Verdict::kReplayed);
  EXPECT_EQ(guard.Admit(std::string(64, 'b'), now, now + 1), ReplayGuard::Verdict::kFresh);
  // Still refused at the last second the clock check would accept it...
  EXPECT_EQ(guard.Admit(std::string(64, 'a'), now, now + 900), ReplayGuard::Verdict::kReplayed);
  // ...and forgotten after, when Verify refuses it as too old.
  EXPECT_EQ(guard.Admit(std::string(64, 'c'), now + 901, now + 901), ReplayGuard::Verdict::kFresh);
  EXPECT_EQ(guard.size(), 1u);
}

TEST(ReplayGuardTest, WhenFullForgetsTheOldestSecondAndRefusesEverythingAsOld) {
  ReplayGuard guard(/*capacity=*/4, /*window_seconds=*/900);
  const int64_t now = 1767225600;
  auto sig = [](int i) {
    return absl::StrCat(absl::Hex(i, absl::kZeroPad16), std::string(48, '0'));
  };
  ASSERT_EQ(guard.Admit(sig(1), now - 10, now), ReplayGuard::Verdict::kFresh);
  ASSERT_EQ(guard.Admit(sig(2), now - 10, now), ReplayGuard::Verdict::kFresh);
  ASSERT_EQ(guard.Admit(sig(3), now - 5, now), ReplayGuard::Verdict::kFresh);
  ASSERT_EQ(guard.Admit(sig(4), now, now), ReplayGuard::Verdict::kFresh);
  // The fifth forgets both of now - 10: from then on nothing signed then or before passes.
  ASSERT_EQ(guard.Admit(sig(5), now, now), ReplayGuard::Verdict::kFresh);
  EXPECT_EQ(guard.size(), 3u);
  EXPECT_EQ(guard.floor(), now - 10);
  EXPECT_EQ(guard.Admit(sig(1), now - 10, now), ReplayGuard::Verdict::kTooOld);  // Forgotten.
  EXPECT_EQ(guard.Admit(sig(9), now - 11, now), ReplayGuard::Verdict::kTooOld);
  EXPECT_EQ(guard.Admit(sig(3), now - 5, now), ReplayGuard::Verdict::kReplayed);  // Kept.
  EXPECT_EQ(guard.Admit(sig(6), now - 9, now), ReplayGuard::Verdict::kFresh);
}

TEST(SigV4Test, VerifyReportsTheSigningTime) {
  auto lookup = [](const std::string&) -> absl::StatusOr<std::string> {
    return std::string("secret");
  };
  const std::string body_hash = Sha256Hex("Action=DescribeVolumes&Version=2016-11-15");
  auto verified = Verify(SignedRequest("ec2", body_hash), lookup, 1767225600);
  ASSERT_TRUE(std::holds_alternative<SigV4Authorization>(verified));
  EXPECT_EQ(std::get<SigV4Authorization>(verified).signed_at, 1767225600);  // 2026-01-01.
}

}  // namespace strata::api
