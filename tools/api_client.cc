#include "api_client.h"

#include <netdb.h>
#include <openssl/rand.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/xml.h"
#include "http_server.h"
#include "nlohmann/json.hpp"
#include "sigv4.h"

namespace strata::tools {
namespace {

using json = nlohmann::json;

// Reads KEY from the [default] section of an AWS shared file.
std::string IniValue(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  bool in_default = false;
  while (std::getline(in, line)) {
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(l, "[")) {
      in_default = l == "[default]";
      continue;
    }
    if (!in_default) continue;
    const size_t eq = l.find('=');
    if (eq == absl::string_view::npos) continue;
    if (absl::StripAsciiWhitespace(l.substr(0, eq)) == key) {
      return std::string(absl::StripAsciiWhitespace(l.substr(eq + 1)));
    }
  }
  return "";
}

json ToJson(const xml::Element& node) {
  // EC2 names its lists "...Set"; an empty one has no items to tell it is a list.
  if (node.children.empty() && absl::EndsWith(node.name, "Set")) return json::array();
  if (node.children.empty()) return json(std::string(absl::StripAsciiWhitespace(node.text)));
  bool list = true;
  for (const xml::Element& c : node.children) list &= c.name == "item";
  if (list) {
    json array = json::array();
    for (const xml::Element& c : node.children) array.push_back(ToJson(c));
    return array;
  }
  json object = json::object();
  for (const xml::Element& c : node.children) object[c.name] = ToJson(c);
  return object;
}

// Sends one HTTP request and reads the response (Content-Length framed).
absl::StatusOr<std::pair<int, std::string>> Send(const std::string& host, const std::string& port,
                                                 const std::string& request) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", host));
  }
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool connected = fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0;
  ::freeaddrinfo(res);
  if (!connected) {
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot reach stratad at ", host, ":", port,
                                               ": is it running? (scripts/run.sh)"));
  }
  timeval tv{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string buffer;
  char chunk[65536];
  for (;;) {
    const size_t header_end = buffer.find("\r\n\r\n");
    if (header_end != std::string::npos) {
      const size_t cl = buffer.find("Content-Length: ");
      uint64_t length = 0;
      if (cl != std::string::npos && cl < header_end) {
        (void)absl::SimpleAtoi(buffer.substr(cl + 16, buffer.find("\r\n", cl) - cl - 16), &length);
      }
      if (buffer.size() >= header_end + 4 + length) {
        int status = 0;
        (void)absl::SimpleAtoi(buffer.substr(9, 3), &status);
        ::close(fd);
        return std::make_pair(status, buffer.substr(header_end + 4, length));
      }
    }
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      ::close(fd);
      return absl::UnavailableError("stratad closed the connection");
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

}  // namespace

absl::StatusOr<ApiEndpoint> LoadEndpoint(const std::string& data_dir, const std::string& url,
                                         const std::string& region) {
  ApiEndpoint e;
  if (!url.empty()) e.url = url;
  const char* key = std::getenv("AWS_ACCESS_KEY_ID");
  const char* secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  if (key != nullptr && secret != nullptr) {
    e.access_key_id = key;
    e.secret_access_key = secret;
  } else {
    e.access_key_id = IniValue(data_dir + "/credentials", "aws_access_key_id");
    e.secret_access_key = IniValue(data_dir + "/credentials", "aws_secret_access_key");
  }
  if (e.access_key_id.empty() || e.secret_access_key.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run stratad once on ",
        data_dir, " (it writes ", data_dir, "/credentials)"));
  }
  const char* env_region = std::getenv("AWS_DEFAULT_REGION");
  std::string config_region = IniValue(data_dir + "/config", "region");
  e.region = !region.empty()          ? region
             : env_region != nullptr  ? env_region
             : !config_region.empty() ? config_region
                                      : e.region;
  return e;
}

absl::StatusOr<std::string> Ec2XmlToJson(const std::string& document) {
  absl::StatusOr<xml::Element> root = xml::Parse(document);
  if (!root.ok()) {
    return absl::DataLossError(
        absl::StrCat("the API returned malformed XML: ", root.status().message()));
  }
  json out = ToJson(*root);
  if (out.is_object()) out.erase("requestId");
  return out.dump(2);
}

namespace {

// POSTs `body` to `service` at the endpoint, signed with SigV4 (`headers`, lowercase, are sent
// and signed beside host and x-amz-date): the HTTP status and the response body.
absl::StatusOr<std::pair<int, std::string>> SignedPost(const ApiEndpoint& endpoint,
                                                       const std::string& service,
                                                       std::map<std::string, std::string> headers,
                                                       const std::string& body) {
  absl::string_view rest = endpoint.url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError("the endpoint must be http://HOST:PORT");
  }
  const std::string hostport(rest.substr(0, rest.find('/')));
  const size_t colon = hostport.rfind(':');
  const std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  const std::string port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  char stamp[32];
  const time_t now = ::time(nullptr);
  tm utc{};
  gmtime_r(&now, &utc);
  strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  headers["host"] = hostport;
  headers["x-amz-date"] = stamp;
  // Signed and new for every call, as the SDKs do: two identical calls within a second differ,
  // so the server's replay guard tells them from a replay.
  unsigned char nonce[16];
  if (RAND_bytes(nonce, sizeof(nonce)) != 1) return absl::InternalError("RAND_bytes failed");
  headers["amz-sdk-invocation-id"] =
      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(nonce), sizeof(nonce)));
  api::HttpRequest request;
  request.method = "POST";
  request.path = "/";
  request.headers = headers;
  request.body = body;
  api::SigV4Authorization auth;
  auth.access_key_id = endpoint.access_key_id;
  auth.date = std::string(stamp, 8);
  auth.region = endpoint.region;
  auth.service = service;
  std::vector<std::string> signed_headers;
  std::string wire = "POST / HTTP/1.1\r\n";
  for (const auto& [name, value] : headers) {  // Sorted, as SigV4 wants them.
    signed_headers.push_back(name);
    absl::StrAppend(&wire, name, ": ", value, "\r\n");
  }
  const std::string signature =
      api::Sign(endpoint.secret_access_key, stamp, auth,
                api::CanonicalRequest(request, signed_headers, api::Sha256Hex(body)));
  absl::StrAppend(&wire, "Authorization: AWS4-HMAC-SHA256 Credential=", endpoint.access_key_id, "/",
                  auth.date, "/", auth.region, "/", service,
                  "/aws4_request, SignedHeaders=", absl::StrJoin(signed_headers, ";"),
                  ", Signature=", signature, "\r\nContent-Length: ", body.size(),
                  "\r\nConnection: close\r\n\r\n", body);
  return Send(host, port, wire);
}

}  // namespace

absl::StatusOr<ApiResult> CallEc2(const ApiEndpoint& endpoint, const std::string& action,
                                  const std::map<std::string, std::string>& params) {
  std::vector<std::string> pairs = {"Action=" + action, "Version=2016-11-15"};
  for (const auto& [k, v] : params)
    pairs.push_back(api::UriEncode(k, false) + "=" + api::UriEncode(v, false));
  absl::StatusOr<std::pair<int, std::string>> response = SignedPost(
      endpoint, "ec2", {{"content-type", "application/x-www-form-urlencoded; charset=utf-8"}},
      absl::StrJoin(pairs, "&"));
  if (!response.ok()) return response.status();
  ApiResult result;
  result.http_status = response->first;
  absl::StatusOr<std::string> converted = Ec2XmlToJson(response->second);
  if (!converted.ok()) return converted.status();
  result.json = *converted;
  if (result.http_status >= 300) {
    json parsed = json::parse(result.json, nullptr, false);
    if (parsed.is_object() && parsed.contains("Errors")) {
      const json& error = parsed["Errors"]["Error"];
      result.error_code = error.value("Code", "Error");
      result.error_message = error.value("Message", "");
    } else {
      result.error_code = "Error";
      result.error_message = response->second;
    }
  }
  return result;
}

absl::StatusOr<ApiResult> CallCloudWatch(const ApiEndpoint& endpoint, const std::string& operation,
                                         const std::string& body) {
  absl::StatusOr<std::pair<int, std::string>> response =
      SignedPost(endpoint, "monitoring",
                 {{"content-type", "application/x-amz-json-1.0"},
                  {"x-amz-target", "GraniteServiceVersion20100801." + operation}},
                 body);
  if (!response.ok()) return response.status();
  ApiResult result;
  result.http_status = response->first;
  result.json = response->second;
  if (result.http_status >= 300) {
    json parsed = json::parse(result.json, nullptr, false);
    result.error_code = parsed.is_object() ? parsed.value("__type", "Error") : "Error";
    result.error_message = parsed.is_object() ? parsed.value("message", "") : response->second;
  }
  return result;
}

}  // namespace strata::tools
