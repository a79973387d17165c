// ArchiveStore over an S3 bucket (radosgw for the Ceph backend): path-style requests through
// libcurl, signed by its SigV4 (CURLOPT_AWS_SIGV4) with the payload's SHA-256 in
// x-amz-content-sha256, which radosgw requires and libcurl 7.88 does not add.
#include <curl/curl.h>
#include <openssl/sha.h>

#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "archive/archive_store.h"
#include "util/status_macros.h"

namespace strata::archive {
namespace {

struct Reply {
  long code = 0;
  std::string body;
};

size_t Collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

// The text of the first <tag>...</tag> in `xml` at or after `from` ("" when none), and where
// it ended.
std::pair<std::string, size_t> Element(const std::string& xml, absl::string_view tag, size_t from) {
  const std::string open = absl::StrCat("<", tag, ">");
  const std::string close = absl::StrCat("</", tag, ">");
  const size_t start = xml.find(open, from);
  if (start == std::string::npos) return {"", std::string::npos};
  const size_t end = xml.find(close, start);
  if (end == std::string::npos) return {"", std::string::npos};
  return {xml.substr(start + open.size(), end - start - open.size()), end + close.size()};
}

class S3Archive final : public ArchiveStore {
 public:
  explicit S3Archive(S3ArchiveOptions options) : options_(std::move(options)) {}

  absl::Status Open() {
    STRATA_ASSIGN_OR_RETURN(Reply head, Request("HEAD", "", "", ""));
    if (head.code == 200) return absl::OkStatus();
    if (head.code != 404) return Failed("HEAD", "", head);
    STRATA_ASSIGN_OR_RETURN(Reply made, Request("PUT", "", "", ""));
    // 409: made meanwhile (by another node or store sharing the bucket).
    if (made.code == 200 || made.code == 409) return absl::OkStatus();
    return Failed("creating the bucket", "", made);
  }

  absl::Status Put(const std::string& name, absl::string_view data) override {
    STRATA_ASSIGN_OR_RETURN(Reply r, Request("PUT", Key(name), "", data));
    return r.code == 200 ? absl::OkStatus() : Failed("PUT", name, r);
  }

  absl::StatusOr<std::string> Get(const std::string& name) override {
    STRATA_ASSIGN_OR_RETURN(Reply r, Request("GET", Key(name), "", ""));
    if (r.code == 404) {
      return absl::NotFoundError(absl::StrCat("archive ", Describe(), ": no object ", name));
    }
    if (r.code != 200) return Failed("GET", name, r);
    return std::move(r.body);
  }

  absl::Status Delete(const std::string& name) override {
    STRATA_ASSIGN_OR_RETURN(Reply r, Request("DELETE", Key(name), "", ""));
    return r.code == 204 || r.code == 200 || r.code == 404 ? absl::OkStatus()
                                                           : Failed("DELETE", name, r);
  }

  absl::StatusOr<std::vector<std::string>> List(const std::string& prefix) override {
    std::vector<std::string> names;
    std::string token;
    for (;;) {
      std::string query = absl::StrCat("list-type=2&prefix=", Escape(Key(prefix)));
      if (!token.empty()) absl::StrAppend(&query, "&continuation-token=", Escape(token));
      STRATA_ASSIGN_OR_RETURN(Reply r, Request("GET", "", query, ""));
      if (r.code != 200) return Failed("listing", prefix, r);
      for (size_t at = 0;;) {
        auto [key, end] = Element(r.body, "Key", at);
        if (end == std::string::npos) break;
        names.push_back(key.substr(options_.prefix.size()));
        at = end;
      }
      if (Element(r.body, "IsTruncated", 0).first != "true") return names;
      token = Element(r.body, "NextContinuationToken", 0).first;
      if (token.empty()) return names;
    }
  }

  std::string Describe() const override {
    return absl::StrCat("s3 ", options_.endpoint, "/", options_.bucket, "/", options_.prefix);
  }

 private:
  std::string Key(const std::string& name) const { return options_.prefix + name; }

  static std::string Escape(const std::string& s) {
    char* escaped = curl_easy_escape(nullptr, s.data(), static_cast<int>(s.size()));
    std::string out = escaped == nullptr ? s : escaped;
    curl_free(escaped);
    return out;
  }

  absl::Status Failed(absl::string_view what, const std::string& name, const Reply& r) const {
    const std::string code = Element(r.body, "Code", 0).first;
    return absl::UnavailableError(absl::StrCat("archive ", Describe(), ": ", what, " ", name,
                                               ": HTTP ", r.code, code.empty() ? "" : " ", code));
  }

  // One request on a handle of its own (handles are not shared between threads).
  absl::StatusOr<Reply> Request(const std::string& method, const std::string& key,
                                const std::string& query, absl::string_view body) const {
    static std::once_flag init;
    std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    CURL* curl = curl_easy_init();
    if (curl == nullptr) return absl::ResourceExhaustedError("curl_easy_init failed");
    std::string url = absl::StrCat(options_.endpoint, "/", options_.bucket);
    // Each segment escaped, its slashes kept: the SigV4 canonical path is the path as sent.
    if (!key.empty()) {
      for (absl::string_view segment : absl::StrSplit(key, '/')) {
        absl::StrAppend(&url, "/", Escape(std::string(segment)));
      }
    }
    if (!query.empty()) absl::StrAppend(&url, "?", query);
    const std::string scope = absl::StrCat("aws:amz:", options_.region, ":s3");
    curl_slist* headers = nullptr;
    headers =
        curl_slist_append(headers, absl::StrCat("x-amz-content-sha256: ", Sha256Hex(body)).c_str());
    Reply reply;
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, scope.c_str());
    curl_easy_setopt(curl, CURLOPT_USERNAME, options_.access_key_id.c_str());
    curl_easy_setopt(curl, CURLOPT_PASSWORD, options_.secret_access_key.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 300'000L);
    if (method == "HEAD") {
      curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (method == "PUT") {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    } else if (method != "GET") {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    }
    const CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
      return absl::UnavailableError(absl::StrCat("archive ", Describe(), ": ", method, " ", key,
                                                 ": ", curl_easy_strerror(rc)));
    }
    return reply;
  }

  const S3ArchiveOptions options_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ArchiveStore>> OpenS3Archive(const S3ArchiveOptions& options) {
  if (options.endpoint.empty() || options.bucket.empty()) {
    return absl::InvalidArgumentError("an S3 archive needs an endpoint and a bucket");
  }
  auto store = std::make_unique<S3Archive>(options);
  STRATA_RETURN_IF_ERROR(store->Open());
  return store;
}

}  // namespace strata::archive
