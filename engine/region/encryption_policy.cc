#include "region/encryption_policy.h"

#include "absl/strings/str_cat.h"
#include "util/coding.h"
#include "util/status_macros.h"

namespace strata::region {
namespace {

// Binds a wrapped data key to its domain: unwrapping it for another domain fails.
EncryptionContext DataKeyContext(uint32_t domain) {
  return {{"strata:domain", absl::StrCat(domain)}};
}

}  // namespace

absl::StatusOr<uint32_t> EncryptionPolicy::NewDomain() {
  for (int attempt = 0;; ++attempt) {
    STRATA_ASSIGN_OR_RETURN(std::optional<std::string> stored, catalog_.Get(meta::NextDomainKey()));
    uint32_t domain = 1;  // Domain 0 is plaintext.
    if (stored.has_value()) {
      util::Decoder in(*stored);
      if (!in.GetFixed32(domain) || !in.done()) return absl::DataLossError("corrupt next_domain");
    }
    std::string value;
    util::PutFixed32(value, domain + 1);
    meta::WriteBatch batch;
    batch.Expect(meta::NextDomainKey(), stored.value_or(""));
    batch.Put(meta::NextDomainKey(), value);
    absl::Status written = catalog_.Write(batch);
    if (written.ok()) return domain;
    if (!absl::IsAborted(written) || attempt == 8) return written;  // Else taken meanwhile.
  }
}

absl::Status EncryptionPolicy::LoadDomainKey(const meta::EncryptionRecord& encryption,
                                             const std::string& owner) {
  if (keys_.Get(encryption.domain).ok()) return absl::OkStatus();
  absl::StatusOr<Decrypted> key =
      kms_.Decrypt(owner, encryption.wrapped_key, DataKeyContext(encryption.domain), "");
  if (!key.ok()) {
    keys_.SetUnavailable(encryption.domain, key.status());
    return key.status();
  }
  return keys_.Add(encryption.domain, key->plaintext);
}

absl::Status EncryptionPolicy::CheckDecrypt(const std::string& account,
                                            const meta::EncryptionRecord& encryption) {
  if (!encryption.encrypted()) return absl::OkStatus();
  return kms_.Decrypt(account, encryption.wrapped_key, DataKeyContext(encryption.domain), "")
      .status();
}

absl::StatusOr<meta::EncryptionRecord> EncryptionPolicy::Choose(
    const CreateVolumeRequest& request, const meta::EncryptionRecord& base) {
  STRATA_ASSIGN_OR_RETURN(EbsEncryptionDefaults defaults, GetEbsEncryptionDefaults(request.owner));
  const bool encrypted = request.encrypted || base.encrypted() || defaults.enabled;
  if (!encrypted) {
    if (!request.kms_key_id.empty()) {
      return absl::InvalidArgumentError("a KMS key is given only with encryption on");
    }
    return meta::EncryptionRecord();
  }
  std::string key_ref = request.kms_key_id;
  if (key_ref.empty()) {
    key_ref = base.encrypted()              ? base.kms_key_arn
              : defaults.kms_key_id.empty() ? "alias/aws/ebs"
                                            : defaults.kms_key_id;
  }
  STRATA_ASSIGN_OR_RETURN(KmsKeyInfo key, kms_.DescribeKey(request.owner, key_ref));
  if (base.encrypted() && key.arn == base.kms_key_arn) {
    // The snapshot's key: the same data key and dedup domain (its lineage), if the owner may
    // use that key (its own, or shared by policy or grant).
    STRATA_ASSIGN_OR_RETURN(Decrypted data_key, kms_.Decrypt(request.owner, base.wrapped_key,
                                                             DataKeyContext(base.domain), ""));
    STRATA_RETURN_IF_ERROR(keys_.Add(base.domain, data_key.plaintext));
    return base;
  }
  // A new data key: a new dedup domain. Re-encrypting reads the snapshot's data, so the owner
  // must be allowed to decrypt under the snapshot's key (its own, or shared by policy or grant),
  // as AWS requires kms:Decrypt on the source key: naming a key of one's own is not a way round.
  if (base.encrypted()) {
    STRATA_ASSIGN_OR_RETURN(Decrypted base_key, kms_.Decrypt(request.owner, base.wrapped_key,
                                                             DataKeyContext(base.domain), ""));
    STRATA_RETURN_IF_ERROR(keys_.Add(base.domain, base_key.plaintext));
  }
  meta::EncryptionRecord out;
  STRATA_ASSIGN_OR_RETURN(out.domain, NewDomain());
  for (int attempt = 0;; ++attempt) {
    STRATA_ASSIGN_OR_RETURN(DataKey data_key, kms_.GenerateDataKey(request.owner, key.arn, 64,
                                                                   DataKeyContext(out.domain)));
    absl::Status added = keys_.Add(out.domain, data_key.plaintext);
    if (!added.ok() && attempt == 0) continue;  // Equal XTS halves: astronomically rare; retry.
    STRATA_RETURN_IF_ERROR(added);
    out.kms_key_arn = data_key.key_arn;
    out.wrapped_key = std::move(data_key.ciphertext);
    return out;
  }
}

absl::StatusOr<EbsEncryptionDefaults> EncryptionPolicy::GetEbsEncryptionDefaults(
    const std::string& account) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> value,
                          catalog_.Get(meta::EbsDefaultsKey(account)));
  EbsEncryptionDefaults out;
  if (!value.has_value()) return out;
  util::Decoder in(*value);
  if (!in.GetBool(out.enabled) || !in.GetLengthPrefixed(out.kms_key_id) || !in.done()) {
    return absl::DataLossError(absl::StrCat("corrupt EBS encryption defaults of ", account));
  }
  return out;
}

absl::Status EncryptionPolicy::SetEbsEncryptionDefaults(const std::string& account,
                                                        const EbsEncryptionDefaults& defaults) {
  if (!defaults.kms_key_id.empty()) {
    STRATA_RETURN_IF_ERROR(kms_.DescribeKey(account, defaults.kms_key_id).status());
  }
  std::string value;
  value.push_back(defaults.enabled ? 1 : 0);
  util::PutLengthPrefixed(value, defaults.kms_key_id);
  meta::WriteBatch batch;
  batch.Put(meta::EbsDefaultsKey(account), value);
  return catalog_.Write(batch);
}

}  // namespace strata::region
