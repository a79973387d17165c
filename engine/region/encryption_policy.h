#pragma once
// How a region's volumes and snapshots are encrypted (AWS's rules): whether a new volume is
// encrypted, under which KMS key, and whether it shares its snapshot's data key and dedup domain
// or gets a new one; the data keys unwrapped into DomainKeys; EBS encryption by default per
// account.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "crypto/kms_impl.h"
#include "meta/catalog.h"
#include "meta/schema.h"
#include "strata/store.h"
#include "volume/domain_keys.h"

namespace strata::region {

// Thread-safe. `catalog`, `kms` and `keys` must outlive it.
class EncryptionPolicy {
 public:
  EncryptionPolicy(meta::Catalog& catalog, crypto::KmsImpl& kms, volume::DomainKeys& keys)
      : catalog_(catalog), kms_(kms), keys_(keys) {}

  // Unwraps an encrypted domain's data key (as `owner`) into the DomainKeys, or records there
  // why it cannot be.
  absl::Status LoadDomainKey(const meta::EncryptionRecord& encryption, const std::string& owner);
  // The encryption of a new volume for `request` over a snapshot encrypted as `base` (empty for
  // a blank volume). Makes and registers a new data key when the volume needs its own domain;
  // the snapshot's key only when the owner may decrypt with it.
  [[nodiscard]] absl::StatusOr<meta::EncryptionRecord> Choose(const CreateVolumeRequest& request,
                                                              const meta::EncryptionRecord& base);
  // OK when `account` may decrypt data encrypted as `encryption` (unencrypted: always), else
  // KMS's refusal (kPermissionDenied, a disabled key's kFailedPrecondition, ...).
  [[nodiscard]] absl::Status CheckDecrypt(const std::string& account,
                                          const meta::EncryptionRecord& encryption);
  [[nodiscard]] absl::StatusOr<EbsEncryptionDefaults> GetEbsEncryptionDefaults(
      const std::string& account);
  [[nodiscard]] absl::Status SetEbsEncryptionDefaults(const std::string& account,
                                                      const EbsEncryptionDefaults& defaults);

 private:
  // Takes the next dedup domain number, recorded before it is used: read from the catalog and
  // replaced under a guard, so that nodes sharing the region never take the same number.
  absl::StatusOr<uint32_t> NewDomain();

  meta::Catalog& catalog_;
  crypto::KmsImpl& kms_;
  volume::DomainKeys& keys_;
};

}  // namespace strata::region
