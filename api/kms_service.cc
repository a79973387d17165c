#include "kms_service.h"

#include <functional>
#include <map>
#include <optional>
#include <variant>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace strata::api {
namespace {

using json = nlohmann::json;

// A failed call: HTTP status, KMS error type, message.
struct KmsError {
  int status = 400;
  std::string type;
  std::string message;
};

// The JSON type of every request field Strata's KMS reads, as AWS's KMS model gives it. A field
// of another type is a SerializationException, as on AWS, before any operation runs; past this
// check every read of a field is of the type it has.
enum class FieldType { kString, kInteger, kBoolean, kObject, kArray };

const std::map<std::string, FieldType>& FieldTypes() {
  static const auto* types = new std::map<std::string, FieldType>{
      {"AliasName", FieldType::kString},
      {"BypassPolicyLockoutSafetyCheck", FieldType::kBoolean},
      {"CiphertextBlob", FieldType::kString},
      {"CustomerMasterKeySpec", FieldType::kString},
      {"Description", FieldType::kString},
      {"DestinationEncryptionContext", FieldType::kObject},
      {"DestinationKeyId", FieldType::kString},
      {"DryRun", FieldType::kBoolean},
      {"EncryptionContext", FieldType::kObject},
      {"GrantId", FieldType::kString},
      {"GrantToken", FieldType::kString},
      {"GrantTokens", FieldType::kArray},
      {"GranteePrincipal", FieldType::kString},
      {"KeyId", FieldType::kString},
      {"KeySpec", FieldType::kString},
      {"KeyUsage", FieldType::kString},
      {"Limit", FieldType::kInteger},
      {"Marker", FieldType::kString},
      {"MultiRegion", FieldType::kBoolean},
      {"Name", FieldType::kString},
      {"NumberOfBytes", FieldType::kInteger},
      {"Operations", FieldType::kArray},
      {"Origin", FieldType::kString},
      {"PendingWindowInDays", FieldType::kInteger},
      {"Plaintext", FieldType::kString},
      {"Policy", FieldType::kString},
      {"PolicyName", FieldType::kString},
      {"RetiringPrincipal", FieldType::kString},
      {"RotationPeriodInDays", FieldType::kInteger},
      {"SourceEncryptionContext", FieldType::kObject},
      {"SourceKeyId", FieldType::kString},
      {"Tags", FieldType::kArray},
      {"TargetKeyId", FieldType::kString},
  };
  return *types;
}

bool HasType(const json& value, FieldType type) {
  switch (type) {
    case FieldType::kString:
      return value.is_string();
    case FieldType::kInteger:
      return value.is_number_integer();
    case FieldType::kBoolean:
      return value.is_boolean();
    case FieldType::kObject:
      return value.is_object();
    case FieldType::kArray:
      return value.is_array();
  }
  return false;
}

const char* TypeName(FieldType type) {
  switch (type) {
    case FieldType::kString:
      return "a string";
    case FieldType::kInteger:
      return "an integer";
    case FieldType::kBoolean:
      return "a boolean";
    case FieldType::kObject:
      return "an object";
    case FieldType::kArray:
      return "a list";
  }
  return "?";
}

// Why `body` does not fit the model (a field of the wrong type, or a tag or list element of
// the wrong shape), or nullopt when it does. Unknown fields are ignored, as AWS does.
std::optional<std::string> Misfit(const json& body) {
  for (const auto& [name, value] : body.items()) {
    auto it = FieldTypes().find(name);
    if (it == FieldTypes().end() || value.is_null()) continue;
    if (!HasType(value, it->second)) return absl::StrCat(name, " must be ", TypeName(it->second));
  }
  for (const char* list : {"Operations", "GrantTokens"}) {
    if (!body.contains(list)) continue;
    for (const json& e : body[list]) {
      if (!e.is_string()) return absl::StrCat("each of ", list, " must be a string");
    }
  }
  for (const char* context :
       {"EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext"}) {
    if (!body.contains(context)) continue;
    for (const auto& [k, v] : body[context].items()) {
      if (!v.is_string()) return absl::StrCat(context, " values must be strings");
    }
  }
  if (body.contains("Tags")) {
    for (const json& t : body["Tags"]) {
      if (!t.is_object() || (t.contains("TagKey") && !t["TagKey"].is_string()) ||
          (t.contains("TagValue") && !t["TagValue"].is_string())) {
        return std::string("each tag is {\"TagKey\": string, \"TagValue\": string}");
      }
    }
  }
  return std::nullopt;
}

KmsError FromStatus(const absl::Status& s) {
  std::string type = KmsErrorCode(s);
  if (type.empty()) {
    switch (s.code()) {
      case absl::StatusCode::kNotFound:
        type = "NotFoundException";
        break;
      case absl::StatusCode::kInvalidArgument:
        type = "ValidationException";
        break;
      case absl::StatusCode::kPermissionDenied:
        type = "AccessDeniedException";
        break;
      case absl::StatusCode::kDataLoss:
        type = "InvalidCiphertextException";
        break;
      case absl::StatusCode::kFailedPrecondition:
        type = "KMSInvalidStateException";
        break;
      default:
        type = "KMSInternalException";
    }
  }
  const int status = type == "KMSInternalException" ? 500 : 400;
  return {status, type, std::string(s.message())};
}

double Seconds(uint64_t micros) { return static_cast<double>(micros) / 1e6; }

json KeyMetadata(const KmsKeyInfo& k) {
  json m = {{"AWSAccountId", k.account},
            {"KeyId", k.key_id},
            {"Arn", k.arn},
            {"CreationDate", Seconds(k.creation_micros)},
            {"Enabled", k.state == KmsKeyState::kEnabled},
            {"Description", k.description},
            {"KeyUsage", "ENCRYPT_DECRYPT"},
            {"KeyState", KmsKeyStateName(k.state)},
            {"Origin", "AWS_KMS"},
            {"KeyManager", k.manager},
            {"CustomerMasterKeySpec", "SYMMETRIC_DEFAULT"},
            {"KeySpec", "SYMMETRIC_DEFAULT"},
            {"EncryptionAlgorithms", {"SYMMETRIC_DEFAULT"}},
            {"MultiRegion", false}};
  if (k.state == KmsKeyState::kPendingDeletion) {
    m["DeletionDate"] = Seconds(k.deletion_micros);
    m["PendingDeletionWindowInDays"] =
        static_cast<int>((k.deletion_micros - k.creation_micros) / (86400ull * 1000000));
  }
  return m;
}

json GrantJson(const KmsGrant& g) {
  return {{"KeyId", g.key_id},
          {"GrantId", g.grant_id},
          {"Name", g.name},
          {"CreationDate", Seconds(g.creation_micros)},
          {"GranteePrincipal", g.grantee},
          {"RetiringPrincipal", g.retiring},
          {"IssuingAccount", absl::StrCat("arn:aws:iam::", g.issuing_account, ":root")},
          {"Operations", g.operations}};
}

class KmsCall {
 public:
  using Result = std::variant<nlohmann::json, KmsError>;

  KmsCall(const HttpRequest& request, const Account& account, Region& region)
      : request_(request), caller_(account.id), kms_(region.kms()) {}

  HttpResponse Run() {
    const std::string target = request_.Header("x-amz-target");
    if (!absl::StartsWith(target, "TrentService.")) {
      return Fail(
          {400, "UnknownOperationException", "X-Amz-Target must be TrentService.OPERATION"});
    }
    body_ = json::parse(request_.body.empty() ? "{}" : request_.body, nullptr, false);
    if (body_.is_discarded() || !body_.is_object()) {
      return Fail({400, "SerializationException", "the request body is not a JSON object"});
    }
    if (std::optional<std::string> misfit = Misfit(body_); misfit.has_value()) {
      return Fail({400, "SerializationException", *misfit});
    }
    static const auto* ops = new std::map<std::string, std::function<Result(KmsCall&)>>{
        {"CreateKey", &KmsCall::CreateKey},
        {"DescribeKey", &KmsCall::DescribeKey},
        {"ListKeys", &KmsCall::ListKeys},
        {"EnableKey", &KmsCall::EnableKey},
        {"DisableKey", &KmsCall::DisableKey},
        {"ScheduleKeyDeletion", &KmsCall::ScheduleKeyDeletion},
        {"CancelKeyDeletion", &KmsCall::CancelKeyDeletion},
        {"EnableKeyRotation", &KmsCall::EnableKeyRotation},
        {"DisableKeyRotation", &KmsCall::DisableKeyRotation},
        {"GetKeyRotationStatus", &KmsCall::GetKeyRotationStatus},
        {"RotateKeyOnDemand", &KmsCall::RotateKeyOnDemand},
        {"ListKeyRotations", &KmsCall::ListKeyRotations},
        {"CreateAlias", &KmsCall::CreateAlias},
        {"UpdateAlias", &KmsCall::UpdateAlias},
        {"DeleteAlias", &KmsCall::DeleteAlias},
        {"ListAliases", &KmsCall::ListAliases},
        {"PutKeyPolicy", &KmsCall::PutKeyPolicy},
        {"GetKeyPolicy", &KmsCall::GetKeyPolicy},
        {"ListKeyPolicies", &KmsCall::ListKeyPolicies},
        {"CreateGrant", &KmsCall::CreateGrant},
        {"ListGrants", &KmsCall::ListGrants},
        {"RetireGrant", &KmsCall::RetireGrant},
        {"RevokeGrant", &KmsCall::RevokeGrant},
        {"ListResourceTags", &KmsCall::ListResourceTags},
        {"Encrypt", &KmsCall::Encrypt},
        {"Decrypt", &KmsCall::Decrypt},
        {"ReEncrypt", &KmsCall::ReEncrypt},
        {"GenerateDataKey", &KmsCall::GenerateDataKey},
        {"GenerateDataKeyWithoutPlaintext", &KmsCall::GenerateDataKeyWithoutPlaintext},
    };
    const std::string op = target.substr(13);
    auto it = ops->find(op);
    if (it == ops->end()) {
      return Fail({400, "UnknownOperationException",
                   absl::StrCat("operation ", op, " is not served by Strata's KMS")});
    }
    Result result = KmsError{500, "KMSInternalException", "internal error"};
    try {
      result = it->second(*this);
    } catch (const json::exception& e) {
      // Misfit checks every field read; this is the last net, never a crash of stratad.
      result = KmsError{400, "SerializationException", e.what()};
    }
    if (const KmsError* e = std::get_if<KmsError>(&result)) return Fail(*e);
    return HttpResponse{
        200, {{"Content-Type", "application/x-amz-json-1.1"}}, std::get<json>(result).dump()};
  }

 private:
  static HttpResponse Fail(const KmsError& e) {
    return KmsService::Error(e.status, e.type, e.message);
  }
  std::string Str(const char* name) const {
    return body_.contains(name) && body_[name].is_string() ? body_[name].get<std::string>() : "";
  }
  static KmsError Missing(const char* name) {
    return {400, "ValidationException", absl::StrCat(name, " is required")};
  }
  // A base64 blob field, decoded.
  std::optional<std::string> Blob(const char* name) const {
    std::string out;
    if (!body_.contains(name) || !body_[name].is_string() ||
        !absl::Base64Unescape(body_[name].get<std::string>(), &out)) {
      return std::nullopt;
    }
    return out;
  }
  std::optional<EncryptionContext> Context(const char* name) const {
    EncryptionContext out;
    if (!body_.contains(name)) return out;
    if (!body_[name].is_object()) return std::nullopt;
    for (const auto& [k, v] : body_[name].items()) {
      if (!v.is_string()) return std::nullopt;
      out[k] = v.get<std::string>();
    }
    return out;
  }
  Result KeyOp(const std::function<absl::Status(const std::string&)>& fn) {
    const std::string key = Str("KeyId");
    if (key.empty()) return Missing("KeyId");
    if (absl::Status s = fn(key); !s.ok()) return FromStatus(s);
    return json::object();
  }

  Result CreateKey() {
    const std::string spec = Str("KeySpec").empty() ? Str("CustomerMasterKeySpec") : Str("KeySpec");
    if (!spec.empty() && spec != "SYMMETRIC_DEFAULT") {
      return KmsError{400, "ValidationException", "Strata's KMS makes SYMMETRIC_DEFAULT keys only"};
    }
    if (!Str("KeyUsage").empty() && Str("KeyUsage") != "ENCRYPT_DECRYPT") {
      return KmsError{400, "ValidationException", "KeyUsage must be ENCRYPT_DECRYPT"};
    }
    std::map<std::string, std::string> tags;
    if (body_.contains("Tags") && body_["Tags"].is_array()) {
      for (const json& t : body_["Tags"]) {
        if (!t.is_object() || !t.contains("TagKey") || !t["TagKey"].is_string()) {
          return KmsError{400, "ValidationException", "each tag needs a TagKey"};
        }
        tags[t["TagKey"].get<std::string>()] = t.value("TagValue", "");
      }
    }
    absl::StatusOr<KmsKeyInfo> key =
        kms_.CreateKey(caller_, Str("Description"), tags, Str("Policy"));
    if (!key.ok()) return FromStatus(key.status());
    return json{{"KeyMetadata", KeyMetadata(*key)}};
  }
  Result DescribeKey() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    absl::StatusOr<KmsKeyInfo> key = kms_.DescribeKey(caller_, Str("KeyId"));
    if (!key.ok()) return FromStatus(key.status());
    return json{{"KeyMetadata", KeyMetadata(*key)}};
  }
  Result ListKeys() {
    absl::StatusOr<std::vector<KmsKeyInfo>> keys = kms_.ListKeys(caller_);
    if (!keys.ok()) return FromStatus(keys.status());
    json list = json::array();
    for (const KmsKeyInfo& k : *keys) list.push_back({{"KeyId", k.key_id}, {"KeyArn", k.arn}});
    return json{{"Keys", list}, {"Truncated", false}};
  }
  Result EnableKey() {
    return KeyOp([&](const std::string& k) { return kms_.EnableKey(caller_, k); });
  }
  Result DisableKey() {
    return KeyOp([&](const std::string& k) { return kms_.DisableKey(caller_, k); });
  }
  Result ScheduleKeyDeletion() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    const int days = body_.value("PendingWindowInDays", 30);
    absl::StatusOr<uint64_t> when = kms_.ScheduleKeyDeletion(caller_, Str("KeyId"), days);
    if (!when.ok()) return FromStatus(when.status());
    absl::StatusOr<KmsKeyInfo> key = kms_.DescribeKey(caller_, Str("KeyId"));
    if (!key.ok()) return FromStatus(key.status());
    return json{{"KeyId", key->arn},
                {"DeletionDate", Seconds(*when)},
                {"KeyState", "PendingDeletion"},
                {"PendingWindowInDays", days}};
  }
  Result CancelKeyDeletion() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    if (absl::Status s = kms_.CancelKeyDeletion(caller_, Str("KeyId")); !s.ok()) {
      return FromStatus(s);
    }
    return json{{"KeyId", kms_.DescribeKey(caller_, Str("KeyId"))->arn}};
  }
  Result EnableKeyRotation() {
    const int period = body_.value("RotationPeriodInDays", 365);
    return KeyOp(
        [&](const std::string& k) { return kms_.SetKeyRotation(caller_, k, true, period); });
  }
  Result DisableKeyRotation() {
    return KeyOp([&](const std::string& k) { return kms_.SetKeyRotation(caller_, k, false, 0); });
  }
  Result GetKeyRotationStatus() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    absl::StatusOr<KmsKeyInfo> key = kms_.DescribeKey(caller_, Str("KeyId"));
    if (!key.ok()) return FromStatus(key.status());
    json out = {{"KeyRotationEnabled", key->rotation_enabled},
                {"KeyId", key->key_id},
                {"RotationPeriodInDays", key->rotation_period_days}};
    if (!key->rotation_micros.empty()) {
      out["OnDemandRotationStartDate"] = Seconds(key->rotation_micros.back());
    }
    return out;
  }
  Result RotateKeyOnDemand() {
    Result r = KeyOp([&](const std::string& k) { return kms_.RotateKeyOnDemand(caller_, k); });
    if (std::holds_alternative<KmsError>(r)) return r;
    return json{{"KeyId", kms_.DescribeKey(caller_, Str("KeyId"))->key_id}};
  }
  Result ListKeyRotations() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    absl::StatusOr<KmsKeyInfo> key = kms_.DescribeKey(caller_, Str("KeyId"));
    if (!key.ok()) return FromStatus(key.status());
    json list = json::array();
    for (uint64_t when : key->rotation_micros) {
      list.push_back(
          {{"KeyId", key->key_id}, {"RotationDate", Seconds(when)}, {"RotationType", "ON_DEMAND"}});
    }
    return json{{"Rotations", list}, {"Truncated", false}};
  }
  Result CreateAlias() {
    if (Str("AliasName").empty()) return Missing("AliasName");
    if (Str("TargetKeyId").empty()) return Missing("TargetKeyId");
    if (absl::Status s = kms_.CreateAlias(caller_, Str("AliasName"), Str("TargetKeyId")); !s.ok()) {
      return FromStatus(s);
    }
    return json::object();
  }
  Result UpdateAlias() {
    if (Str("AliasName").empty()) return Missing("AliasName");
    if (Str("TargetKeyId").empty()) return Missing("TargetKeyId");
    if (absl::Status s = kms_.UpdateAlias(caller_, Str("AliasName"), Str("TargetKeyId")); !s.ok()) {
      return FromStatus(s);
    }
    return json::object();
  }
  Result DeleteAlias() {
    if (Str("AliasName").empty()) return Missing("AliasName");
    if (absl::Status s = kms_.DeleteAlias(caller_, Str("AliasName")); !s.ok()) return FromStatus(s);
    return json::object();
  }
  Result ListAliases() {
    absl::StatusOr<std::vector<KmsAlias>> aliases = kms_.ListAliases(caller_, Str("KeyId"));
    if (!aliases.ok()) return FromStatus(aliases.status());
    json list = json::array();
    for (const KmsAlias& a : *aliases) {
      list.push_back(
          {{"AliasName", a.name},
           {"AliasArn", absl::StrCat("arn:aws:kms:", region_name(), ":", a.account, ":", a.name)},
           {"TargetKeyId", a.key_id}});
    }
    return json{{"Aliases", list}, {"Truncated", false}};
  }
  std::string region_name() const {
    const std::string auth = request_.Header("authorization");
    // Credential=KEY/DATE/REGION/kms/aws4_request
    const size_t at = auth.find("Credential=");
    if (at == std::string::npos) return "";
    std::vector<std::string> parts;
    std::string cred = auth.substr(at + 11, auth.find(',', at) - at - 11);
    size_t start = 0;
    for (size_t i = 0; i <= cred.size(); ++i) {
      if (i == cred.size() || cred[i] == '/') {
        parts.push_back(cred.substr(start, i - start));
        start = i + 1;
      }
    }
    return parts.size() > 2 ? parts[2] : "";
  }
  Result PutKeyPolicy() {
    if (Str("Policy").empty()) return Missing("Policy");
    if (!Str("PolicyName").empty() && Str("PolicyName") != "default") {
      return KmsError{400, "ValidationException", "PolicyName must be default"};
    }
    return KeyOp(
        [&](const std::string& k) { return kms_.PutKeyPolicy(caller_, k, Str("Policy")); });
  }
  Result GetKeyPolicy() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    absl::StatusOr<std::string> policy = kms_.GetKeyPolicy(caller_, Str("KeyId"));
    if (!policy.ok()) return FromStatus(policy.status());
    return json{{"Policy", *policy}, {"PolicyName", "default"}};
  }
  Result ListKeyPolicies() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    absl::StatusOr<KmsKeyInfo> key = kms_.DescribeKey(caller_, Str("KeyId"));
    if (!key.ok()) return FromStatus(key.status());
    return json{{"PolicyNames", {"default"}}, {"Truncated", false}};
  }
  Result CreateGrant() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    std::vector<std::string> ops;
    if (body_.contains("Operations") && body_["Operations"].is_array()) {
      for (const json& o : body_["Operations"]) {
        if (o.is_string()) ops.push_back(o.get<std::string>());
      }
    }
    absl::StatusOr<KmsGrant> grant = kms_.CreateGrant(
        caller_, Str("KeyId"), Str("GranteePrincipal"), ops, Str("RetiringPrincipal"), Str("Name"));
    if (!grant.ok()) return FromStatus(grant.status());
    return json{{"GrantId", grant->grant_id}, {"GrantToken", grant->grant_token}};
  }
  Result ListGrants() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    absl::StatusOr<std::vector<KmsGrant>> grants = kms_.ListGrants(caller_, Str("KeyId"));
    if (!grants.ok()) return FromStatus(grants.status());
    json list = json::array();
    for (const KmsGrant& g : *grants) {
      if (!Str("GrantId").empty() && g.grant_id != Str("GrantId")) continue;
      list.push_back(GrantJson(g));
    }
    return json{{"Grants", list}, {"Truncated", false}};
  }
  Result RetireGrant() {
    if (Str("GrantToken").empty() && (Str("KeyId").empty() || Str("GrantId").empty())) {
      return KmsError{400, "ValidationException", "give GrantToken, or KeyId and GrantId"};
    }
    if (absl::Status s = kms_.RetireGrant(caller_, Str("GrantToken"), Str("KeyId"), Str("GrantId"));
        !s.ok()) {
      return FromStatus(s);
    }
    return json::object();
  }
  Result RevokeGrant() {
    if (Str("GrantId").empty()) return Missing("GrantId");
    return KeyOp(
        [&](const std::string& k) { return kms_.RevokeGrant(caller_, k, Str("GrantId")); });
  }
  Result ListResourceTags() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    absl::StatusOr<KmsKeyInfo> key = kms_.DescribeKey(caller_, Str("KeyId"));
    if (!key.ok()) return FromStatus(key.status());
    json list = json::array();
    for (const auto& [k, v] : key->tags) list.push_back({{"TagKey", k}, {"TagValue", v}});
    return json{{"Tags", list}, {"Truncated", false}};
  }
  Result Encrypt() {
    if (Str("KeyId").empty()) return Missing("KeyId");
    std::optional<std::string> plain = Blob("Plaintext");
    std::optional<EncryptionContext> context = Context("EncryptionContext");
    if (!plain.has_value()) return Missing("Plaintext");
    if (!context.has_value()) return KmsError{400, "ValidationException", "bad EncryptionContext"};
    SecretBytes secret(std::move(*plain));
    absl::StatusOr<std::string> blob = kms_.Encrypt(caller_, Str("KeyId"), secret, *context);
    if (!blob.ok()) return FromStatus(blob.status());
    return json{{"CiphertextBlob", absl::Base64Escape(*blob)},
                {"KeyId", kms_.DescribeKey(caller_, Str("KeyId"))->arn},
                {"EncryptionAlgorithm", "SYMMETRIC_DEFAULT"}};
  }
  Result Decrypt() {
    std::optional<std::string> blob = Blob("CiphertextBlob");
    std::optional<EncryptionContext> context = Context("EncryptionContext");
    if (!blob.has_value()) return Missing("CiphertextBlob");
    if (!context.has_value()) return KmsError{400, "ValidationException", "bad EncryptionContext"};
    absl::StatusOr<Decrypted> plain = kms_.Decrypt(caller_, *blob, *context, Str("KeyId"));
    if (!plain.ok()) return FromStatus(plain.status());
    return json{{"Plaintext", absl::Base64Escape(plain->plaintext.str())},
                {"KeyId", plain->key_arn},
                {"EncryptionAlgorithm", "SYMMETRIC_DEFAULT"}};
  }
  Result ReEncrypt() {
    std::optional<std::string> blob = Blob("CiphertextBlob");
    std::optional<EncryptionContext> from = Context("SourceEncryptionContext");
    std::optional<EncryptionContext> to = Context("DestinationEncryptionContext");
    if (!blob.has_value()) return Missing("CiphertextBlob");
    if (Str("DestinationKeyId").empty()) return Missing("DestinationKeyId");
    if (!from.has_value() || !to.has_value()) {
      return KmsError{400, "ValidationException", "bad encryption context"};
    }
    absl::StatusOr<Decrypted> source = kms_.Decrypt(caller_, *blob, *from, Str("SourceKeyId"));
    if (!source.ok()) return FromStatus(source.status());
    absl::StatusOr<std::string> moved =
        kms_.ReEncrypt(caller_, *blob, *from, Str("DestinationKeyId"), *to);
    if (!moved.ok()) return FromStatus(moved.status());
    return json{{"CiphertextBlob", absl::Base64Escape(*moved)},
                {"SourceKeyId", source->key_arn},
                {"KeyId", kms_.DescribeKey(caller_, Str("DestinationKeyId"))->arn},
                {"SourceEncryptionAlgorithm", "SYMMETRIC_DEFAULT"},
                {"DestinationEncryptionAlgorithm", "SYMMETRIC_DEFAULT"}};
  }
  Result DataKey(bool with_plaintext) {
    if (Str("KeyId").empty()) return Missing("KeyId");
    size_t bytes = 0;
    const std::string spec = Str("KeySpec");
    if (spec == "AES_256") {
      bytes = 32;
    } else if (spec == "AES_128") {
      bytes = 16;
    } else if (!spec.empty()) {
      return KmsError{400, "ValidationException", "KeySpec must be AES_256 or AES_128"};
    }
    if (body_.contains("NumberOfBytes")) {
      if (bytes != 0) {
        return KmsError{400, "ValidationException", "give KeySpec or NumberOfBytes, not both"};
      }
      const int64_t n =
          body_["NumberOfBytes"].is_number_integer() ? body_["NumberOfBytes"].get<int64_t>() : 0;
      if (n < 1 || n > 1024) {
        return KmsError{400, "ValidationException", "NumberOfBytes must be 1 to 1024"};
      }
      bytes = static_cast<size_t>(n);
    }
    if (bytes == 0)
      return KmsError{400, "ValidationException", "KeySpec or NumberOfBytes is required"};
    std::optional<EncryptionContext> context = Context("EncryptionContext");
    if (!context.has_value()) return KmsError{400, "ValidationException", "bad EncryptionContext"};
    absl::StatusOr<strata::DataKey> key =
        kms_.GenerateDataKey(caller_, Str("KeyId"), bytes, *context);
    if (!key.ok()) return FromStatus(key.status());
    json out = {{"CiphertextBlob", absl::Base64Escape(key->ciphertext)}, {"KeyId", key->key_arn}};
    if (with_plaintext) out["Plaintext"] = absl::Base64Escape(key->plaintext.str());
    return out;
  }
  Result GenerateDataKey() { return DataKey(true); }
  Result GenerateDataKeyWithoutPlaintext() { return DataKey(false); }

  const HttpRequest& request_;
  const std::string caller_;
  Kms& kms_;
  json body_;
};

}  // namespace

HttpResponse KmsService::Error(int status, const std::string& type, const std::string& message) {
  return HttpResponse{status,
                      {{"Content-Type", "application/x-amz-json-1.1"}},
                      json({{"__type", type}, {"message", message}}).dump()};
}

HttpResponse KmsService::Handle(const HttpRequest& request, const Account& account,
                                Region& region) {
  return KmsCall(request, account, region).Run();
}

}  // namespace strata::api
