#include "ebs_service.h"

#include <openssl/sha.h>

#include <ctime>
#include <variant>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "query.h"

namespace strata::api {
namespace {

using json = nlohmann::json;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMaxDirectVolumeGiB = 65536;

struct EbsError {
  int status;
  std::string type;
  std::string message;
};
using Result = std::variant<HttpResponse, EbsError>;

EbsError Validation(const std::string& m) { return {400, "ValidationException", m}; }
EbsError NotFound(const std::string& m) { return {404, "ResourceNotFoundException", m}; }

EbsError FromStatus(const absl::Status& s) {
  const std::string m(s.message());
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      return NotFound(m);
    case absl::StatusCode::kInvalidArgument:
      return Validation(m);
    case absl::StatusCode::kFailedPrecondition:
      return {409, "ConflictException", m};
    case absl::StatusCode::kPermissionDenied:
      return {403, "AccessDeniedException", m};
    case absl::StatusCode::kResourceExhausted:
      return {503, "ServiceQuotaExceededException", m};
    default:
      return {500, "InternalServerException", m};
  }
}

std::string Sha256Raw(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<char*>(digest), sizeof(digest));
}

uint64_t NowMicros() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

HttpResponse Json(int status, const json& body) {
  return HttpResponse{status, {{"Content-Type", "application/json"}}, body.dump()};
}

bool Owns(Store& store, const Account& account, const std::string& owner) {
  if (!owner.empty()) return owner == account.id;
  std::vector<Account> all = store.ListAccounts();
  return !all.empty() && all.front().id == account.id;
}

}  // namespace

absl::StatusOr<StartSnapshotArgs> ParseStartSnapshot(const std::string& text) {
  json body =
      json::parse(text.empty() ? std::string("{}") : text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    return absl::InvalidArgumentError("the request body is not a JSON object");
  }
  StartSnapshotArgs args;
  if (!body.contains("VolumeSize") || !body["VolumeSize"].is_number_integer()) {
    return absl::InvalidArgumentError("VolumeSize (GiB, an integer) is required");
  }
  args.volume_size_gib = body["VolumeSize"].get<int64_t>();
  if (args.volume_size_gib < 1 ||
      args.volume_size_gib > static_cast<int64_t>(kMaxDirectVolumeGiB)) {
    return absl::InvalidArgumentError(
        absl::StrCat("VolumeSize must be from 1 to ", kMaxDirectVolumeGiB, " GiB"));
  }
  auto string_field = [&](const char* name, std::string& out) -> absl::Status {
    if (!body.contains(name)) return absl::OkStatus();
    if (!body[name].is_string())
      return absl::InvalidArgumentError(absl::StrCat(name, " must be a string"));
    out = body[name].get<std::string>();
    return absl::OkStatus();
  };
  for (auto [name, out] :
       {std::pair<const char*, std::string*>{"ParentSnapshotId", &args.parent_snapshot_id},
        {"Description", &args.description},
        {"ClientToken", &args.client_token}}) {
    if (absl::Status s = string_field(name, *out); !s.ok()) return s;
  }
  if (body.contains("Encrypted") &&
      (!body["Encrypted"].is_boolean() || body["Encrypted"].get<bool>())) {
    return absl::InvalidArgumentError("encrypted direct snapshots come with the encryption issue");
  }
  if (body.contains("Timeout")) {
    if (!body["Timeout"].is_number_integer())
      return absl::InvalidArgumentError("Timeout must be an integer");
    args.timeout_minutes = body["Timeout"].get<int64_t>();
    if (args.timeout_minutes < 10 || args.timeout_minutes > 4320) {
      return absl::InvalidArgumentError("Timeout must be from 10 to 4320 minutes");
    }
  }
  if (body.contains("Tags")) {
    if (!body["Tags"].is_array()) return absl::InvalidArgumentError("Tags must be a list");
    for (const json& tag : body["Tags"]) {
      if (!tag.is_object() || !tag.contains("Key") || !tag["Key"].is_string() ||
          (tag.contains("Value") && !tag["Value"].is_string())) {
        return absl::InvalidArgumentError("each tag is {\"Key\": string, \"Value\": string}");
      }
      args.tags[tag["Key"].get<std::string>()] = tag.value("Value", "");
    }
  }
  return args;
}

class EbsCall {
 public:
  EbsCall(EbsService& service, const HttpRequest& request, const Account& account, Region& region)
      : service_(service), request_(request), account_(account), region_(region) {}

  Result Run() {
    std::vector<std::string> parts = absl::StrSplit(request_.path, '/', absl::SkipEmpty());
    absl::StatusOr<QueryParams> query = QueryParams::Parse(request_.query);
    if (!query.ok()) return Validation(std::string(query.status().message()));
    query_ = *std::move(query);
    const std::string& m = request_.method;
    if (parts.empty() || parts[0] != "snapshots") return NotFound("no such EBS direct API path");
    if (m == "POST" && parts.size() == 1) return StartSnapshot();
    if (m == "POST" && parts.size() == 3 && parts[1] == "completion")
      return CompleteSnapshot(parts[2]);
    if (m == "PUT" && parts.size() == 4 && parts[2] == "blocks")
      return PutSnapshotBlock(parts[1], parts[3]);
    if (m == "GET" && parts.size() == 3 && parts[2] == "blocks")
      return ListSnapshotBlocks(parts[1]);
    if (m == "GET" && parts.size() == 4 && parts[2] == "blocks")
      return GetSnapshotBlock(parts[1], parts[3]);
    if (m == "GET" && parts.size() == 3 && parts[2] == "changedblocks")
      return ListChangedBlocks(parts[1]);
    return NotFound(absl::StrCat("no EBS direct API at ", m, " ", request_.path));
  }

 private:
  // A snapshot the caller may read (own or shared with it).
  absl::StatusOr<SnapshotInfo> Readable(const std::string& id) {
    absl::StatusOr<SnapshotInfo> s = region_.DescribeSnapshot(id);
    const bool visible =
        s.ok() && (Owns(service_.store_, account_, s->owner) ||
                   std::count(s->shared_with.begin(), s->shared_with.end(), account_.id) ||
                   std::count(s->shared_with.begin(), s->shared_with.end(), "all"));
    if (!visible)
      return absl::NotFoundError(absl::StrCat("The snapshot '", id, "' does not exist."));
    if (s->state != SnapshotState::kCompleted) {
      return absl::FailedPreconditionError(
          absl::StrCat("The snapshot '", id, "' is not completed."));
    }
    return s;
  }

  // The upload of a direct snapshot the caller started; expired uploads fail here.
  absl::StatusOr<std::shared_ptr<EbsService::Upload>> FindUpload(const std::string& id) {
    std::shared_ptr<EbsService::Upload> upload;
    {
      absl::MutexLock lock(&service_.mu_);
      auto it = service_.uploads_.find(id);
      if (it != service_.uploads_.end()) upload = it->second;
    }
    if (upload == nullptr || upload->account_id != account_.id ||
        upload->region != region_.name()) {
      return absl::NotFoundError(
          absl::StrCat("The snapshot '", id, "' is not being written by you."));
    }
    if (NowMicros() > upload->deadline_micros) {
      absl::MutexLock lock(&upload->mu);
      if (!upload->finished) {
        upload->finished = true;
        (void)region_.AbortDirectSnapshot(id, "the snapshot was not completed before its Timeout");
      }
      return absl::FailedPreconditionError(absl::StrCat("The snapshot '", id, "' timed out."));
    }
    return upload;
  }

  Result StartSnapshot() {
    absl::StatusOr<StartSnapshotArgs> args = ParseStartSnapshot(request_.body);
    if (!args.ok()) return Validation(std::string(args.status().message()));
    const int64_t size_gib = args->volume_size_gib;
    const int64_t timeout = args->timeout_minutes;
    CreateSnapshotRequest request;
    request.owner = account_.id;
    request.description = args->description;
    request.tags = args->tags;
    const std::string parent = args->parent_snapshot_id;
    if (!parent.empty()) {
      absl::StatusOr<SnapshotInfo> p = Readable(parent);
      if (!p.ok()) return FromStatus(p.status());
      if (static_cast<uint64_t>(size_gib) * kGiB < p->volume_size_bytes) {
        return Validation("VolumeSize is smaller than the parent snapshot's");
      }
    }
    const std::string token = args->client_token;
    if (!token.empty()) {
      absl::MutexLock lock(&service_.mu_);
      if (auto it = service_.client_tokens_.find(account_.id + "/" + token);
          it != service_.client_tokens_.end()) {
        absl::StatusOr<SnapshotInfo> s = region_.DescribeSnapshot(it->second);
        if (s.ok()) return Json(201, SnapshotJson(*s, parent));
      }
    }
    absl::StatusOr<Region::DirectSnapshot> direct =
        region_.StartDirectSnapshot(static_cast<uint64_t>(size_gib) * kGiB, parent, request);
    if (!direct.ok()) return FromStatus(direct.status());
    auto upload = std::make_shared<EbsService::Upload>();
    upload->account_id = account_.id;
    upload->region = region_.name();
    upload->builder_volume_id = direct->builder_volume_id;
    upload->size_bytes = static_cast<uint64_t>(size_gib) * kGiB;
    upload->deadline_micros = NowMicros() + static_cast<uint64_t>(timeout) * 60 * 1000000;
    {
      absl::MutexLock lock(&service_.mu_);
      service_.uploads_[direct->snapshot.id] = upload;
      if (!token.empty()) service_.client_tokens_[account_.id + "/" + token] = direct->snapshot.id;
    }
    return Json(201, SnapshotJson(direct->snapshot, parent));
  }

  json SnapshotJson(const SnapshotInfo& s, const std::string& parent) {
    json out = {{"SnapshotId", s.id},
                {"OwnerId", account_.id},
                {"Status", SnapshotStateName(s.state)},
                {"StartTime", static_cast<double>(s.start_time_micros) / 1e6},
                {"VolumeSize", (s.volume_size_bytes + kGiB - 1) / kGiB},
                {"BlockSize", kApiBlockBytes},
                {"Description", s.description}};
    if (!parent.empty()) out["ParentSnapshotId"] = parent;
    json tags = json::array();
    for (const auto& [k, v] : s.tags) tags.push_back({{"Key", k}, {"Value", v}});
    out["Tags"] = tags;
    return out;
  }

  absl::StatusOr<uint64_t> BlockIndex(const std::string& text) {
    uint64_t index = 0;
    if (!absl::SimpleAtoi(text, &index)) {
      return absl::InvalidArgumentError(absl::StrCat("BlockIndex \"", text, "\" is not a number"));
    }
    return index;
  }

  Result PutSnapshotBlock(const std::string& id, const std::string& index_text) {
    absl::StatusOr<uint64_t> index = BlockIndex(index_text);
    if (!index.ok()) return Validation(std::string(index.status().message()));
    absl::StatusOr<std::shared_ptr<EbsService::Upload>> upload = FindUpload(id);
    if (!upload.ok()) return FromStatus(upload.status());
    if (request_.body.size() != kApiBlockBytes ||
        request_.Header("x-amz-data-length") != absl::StrCat(kApiBlockBytes)) {
      return Validation(
          absl::StrCat("each block is ", kApiBlockBytes, " bytes (x-amz-Data-Length and body)"));
    }
    if (request_.Header("x-amz-checksum-algorithm") != "SHA256") {
      return Validation("x-amz-Checksum-Algorithm must be SHA256");
    }
    const std::string digest = Sha256Raw(request_.body);
    if (request_.Header("x-amz-checksum") != absl::Base64Escape(digest)) {
      return Validation("the block's SHA256 checksum does not match its data");
    }
    if ((*index + 1) * kApiBlockBytes > (*upload)->size_bytes) {
      return Validation(absl::StrCat("block ", *index, " is past the end of the snapshot"));
    }
    absl::MutexLock lock(&(*upload)->mu);
    if ((*upload)->finished)
      return EbsError{409, "ConflictException", "the snapshot is already completed"};
    absl::StatusOr<Volume*> builder = region_.GetVolume((*upload)->builder_volume_id);
    if (!builder.ok()) return FromStatus(builder.status());
    if (absl::Status s =
            (*builder)->Write(*index * kApiBlockBytes,
                              std::as_bytes(std::span(request_.body.data(), request_.body.size())));
        !s.ok()) {
      return FromStatus(s);
    }
    (*upload)->block_sha256[*index] = digest;
    return HttpResponse{201,
                        {{"Content-Type", "application/json"},
                         {"x-amz-Checksum", absl::Base64Escape(digest)},
                         {"x-amz-Checksum-Algorithm", "SHA256"}},
                        "{}"};
  }

  Result CompleteSnapshot(const std::string& id) {
    absl::StatusOr<std::shared_ptr<EbsService::Upload>> upload = FindUpload(id);
    if (!upload.ok()) return FromStatus(upload.status());
    uint64_t count = 0;
    if (!absl::SimpleAtoi(request_.Header("x-amz-changedblockscount"), &count)) {
      return Validation("x-amz-ChangedBlocksCount is required");
    }
    absl::MutexLock lock(&(*upload)->mu);
    if ((*upload)->finished)
      return EbsError{409, "ConflictException", "the snapshot is already completed"};
    if (count != (*upload)->block_sha256.size()) {
      return Validation(absl::StrCat("ChangedBlocksCount is ", count, " but ",
                                     (*upload)->block_sha256.size(), " blocks were written"));
    }
    const std::string checksum = request_.Header("x-amz-checksum");
    if (!checksum.empty()) {
      if (request_.Header("x-amz-checksum-algorithm") != "SHA256" ||
          request_.Header("x-amz-checksum-aggregation-method") != "LINEAR") {
        return Validation(
            "the aggregate checksum must be SHA256 with the LINEAR aggregation method");
      }
      std::string linear;
      for (const auto& [index, digest] : (*upload)->block_sha256) linear += digest;  // Index order.
      if (checksum != absl::Base64Escape(Sha256Raw(linear))) {
        return Validation("the aggregate checksum does not match the blocks written");
      }
    }
    if (absl::Status s = region_.CompleteDirectSnapshot(id); !s.ok()) return FromStatus(s);
    (*upload)->finished = true;
    return Json(202, {{"Status", "pending"}});
  }

  absl::StatusOr<uint64_t> MaxResults() {
    absl::StatusOr<std::optional<int64_t>> max = query_.GetInt("maxResults");
    if (!max.ok()) return max.status();
    const int64_t v = max->value_or(10000);
    if (v < 100 || v > 10000)
      return absl::InvalidArgumentError("maxResults must be from 100 to 10000");
    return static_cast<uint64_t>(v);
  }
  // pageToken, else startingBlockIndex, as the engine's token.
  absl::StatusOr<std::string> StartToken() {
    const std::string page = query_.GetOr("pageToken", "");
    if (!page.empty()) return page;
    absl::StatusOr<std::optional<int64_t>> start = query_.GetInt("startingBlockIndex");
    if (!start.ok()) return start.status();
    if (start->has_value() && **start < 0)
      return absl::InvalidArgumentError("startingBlockIndex must be >= 0");
    return start->has_value() ? absl::StrCat(**start) : std::string();
  }

  json ListingJson(const BlockListing& listing, const char* list_name, bool changed) {
    json blocks = json::array();
    for (const BlockRef& b : listing.blocks) {
      json item = {{"BlockIndex", b.block_index}};
      if (changed) {
        if (!b.first_token.empty()) item["FirstBlockToken"] = b.first_token;
        if (!b.second_token.empty()) item["SecondBlockToken"] = b.second_token;
      } else {
        item["BlockToken"] = b.first_token;
      }
      blocks.push_back(item);
    }
    json out = {{list_name, blocks},
                {"VolumeSize", (listing.volume_size_bytes + kGiB - 1) / kGiB},
                {"BlockSize", listing.block_size_bytes},
                {"ExpiryTime", static_cast<double>(NowMicros()) / 1e6 + 3600}};
    if (!listing.next_token.empty()) out["NextToken"] = listing.next_token;
    return out;
  }

  Result ListSnapshotBlocks(const std::string& id) {
    absl::StatusOr<SnapshotInfo> s = Readable(id);
    if (!s.ok()) return FromStatus(s.status());
    absl::StatusOr<uint64_t> max = MaxResults();
    absl::StatusOr<std::string> token = StartToken();
    if (!max.ok()) return Validation(std::string(max.status().message()));
    if (!token.ok()) return Validation(std::string(token.status().message()));
    absl::StatusOr<BlockListing> listing = region_.ListSnapshotBlocks(id, *token, *max);
    if (!listing.ok()) return FromStatus(listing.status());
    return Json(200, ListingJson(*listing, "Blocks", false));
  }

  Result ListChangedBlocks(const std::string& second) {
    absl::StatusOr<SnapshotInfo> s = Readable(second);
    if (!s.ok()) return FromStatus(s.status());
    absl::StatusOr<uint64_t> max = MaxResults();
    absl::StatusOr<std::string> token = StartToken();
    if (!max.ok()) return Validation(std::string(max.status().message()));
    if (!token.ok()) return Validation(std::string(token.status().message()));
    const std::string first = query_.GetOr("firstSnapshotId", "");
    absl::StatusOr<BlockListing> listing;
    if (first.empty()) {  // Everything in the second snapshot counts as changed.
      listing = region_.ListSnapshotBlocks(second, *token, *max);
      if (listing.ok()) {
        for (BlockRef& b : listing->blocks) std::swap(b.first_token, b.second_token);
      }
    } else {
      absl::StatusOr<SnapshotInfo> f = Readable(first);
      if (!f.ok()) return FromStatus(f.status());
      listing = region_.ListChangedBlocks(first, second, *token, *max);
    }
    if (!listing.ok()) return FromStatus(listing.status());
    return Json(200, ListingJson(*listing, "ChangedBlocks", true));
  }

  Result GetSnapshotBlock(const std::string& id, const std::string& index_text) {
    absl::StatusOr<uint64_t> index = BlockIndex(index_text);
    if (!index.ok()) return Validation(std::string(index.status().message()));
    absl::StatusOr<SnapshotInfo> s = Readable(id);
    if (!s.ok()) return FromStatus(s.status());
    // An encrypted snapshot's data is for accounts that may decrypt under its key.
    if (absl::Status key = region_.CheckSnapshotKeyAccess(account_.id, id); !key.ok()) {
      return FromStatus(key);
    }
    const std::string token = query_.GetOr("blockToken", "");
    absl::StatusOr<BlockListing> listing = region_.ListSnapshotBlocks(id, absl::StrCat(*index), 1);
    if (!listing.ok()) return FromStatus(listing.status());
    if (listing->blocks.empty() || listing->blocks[0].block_index != *index ||
        listing->blocks[0].first_token != token) {
      return Validation("the block token is not valid for this snapshot and block index");
    }
    absl::StatusOr<std::string> data = region_.GetSnapshotBlock(id, *index);
    if (!data.ok()) return FromStatus(data.status());
    data->resize(kApiBlockBytes, '\0');  // A short last block reads as zeros up to a block.
    return HttpResponse{200,
                        {{"Content-Type", "application/octet-stream"},
                         {"x-amz-Data-Length", absl::StrCat(data->size())},
                         {"x-amz-Checksum", absl::Base64Escape(Sha256Raw(*data))},
                         {"x-amz-Checksum-Algorithm", "SHA256"}},
                        *std::move(data)};
  }

  EbsService& service_;
  const HttpRequest& request_;
  const Account& account_;
  Region& region_;
  QueryParams query_;
};

HttpResponse EbsService::Error(int status, const std::string& type, const std::string& message) {
  return HttpResponse{status,
                      {{"Content-Type", "application/json"}, {"x-amzn-ErrorType", type}},
                      json({{"Message", message}, {"__type", type}}).dump()};
}

HttpResponse EbsService::Handle(const HttpRequest& request, const Account& account,
                                Region& region) {
  Result result = EbsCall(*this, request, account, region).Run();
  if (const EbsError* e = std::get_if<EbsError>(&result))
    return Error(e->status, e->type, e->message);
  return std::get<HttpResponse>(std::move(result));
}

}  // namespace strata::api
