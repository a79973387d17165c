#pragma once
// The archive tier's object store: where ModifySnapshotTier puts a full, self-contained copy of
// a snapshot before its chunks leave the main store (docs/data-protection.md). Two kinds: a
// directory (the embedded default; every write is a temporary file, synced, renamed, and its
// directory synced) and an S3 bucket (the Ceph backend's radosgw, or any S3 endpoint) reached
// through libcurl with SigV4.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "strata/env.h"

namespace strata::archive {

// Thread-safe. Names are flat ("snap-0123.part-000000"): letters, digits, '-', '.' and '_'.
class ArchiveStore {
 public:
  virtual ~ArchiveStore() = default;
  // Stores `data` under `name`, durably, replacing an object of that name. All or nothing: a
  // reader never sees part of it.
  [[nodiscard]] virtual absl::Status Put(const std::string& name, absl::string_view data) = 0;
  // The object `name`; kNotFound when there is none.
  [[nodiscard]] virtual absl::StatusOr<std::string> Get(const std::string& name) = 0;
  // Removes `name`; OK when there is none.
  [[nodiscard]] virtual absl::Status Delete(const std::string& name) = 0;
  // The names that start with `prefix`, in no particular order.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>> List(
      const std::string& prefix) = 0;
  // "directory DIR" or "s3 ENDPOINT/BUCKET/PREFIX", for logs and errors.
  virtual std::string Describe() const = 0;
};

// Objects as files under `dir` (created when missing), through `env` (which must outlive it).
std::unique_ptr<ArchiveStore> NewDirectoryArchive(Env* env, std::string dir);

// Where an S3 archive is and how to sign for it.
struct S3ArchiveOptions {
  std::string endpoint;  // "http://127.0.0.1:7480": scheme, host and port; path-style buckets.
  std::string bucket;    // Created at open when missing.
  std::string region = "default";  // The SigV4 scope's region (radosgw: "default").
  std::string access_key_id;
  std::string secret_access_key;
  std::string prefix;  // Prepended to every name (e.g. the Strata region's name and "/").
};

// Opens (creating the bucket when it is missing) an S3 archive; fails naming the endpoint when
// it cannot be reached or refuses the keys.
[[nodiscard]] absl::StatusOr<std::unique_ptr<ArchiveStore>> OpenS3Archive(
    const S3ArchiveOptions& options);

}  // namespace strata::archive
