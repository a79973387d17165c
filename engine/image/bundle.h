#pragma once
// Image bundles (CreateStoreImageTask / CreateRestoreImageTask), after the classic AMI bundle:
// the image's data compressed, encrypted, split into 10 MiB parts, with a signed XML manifest
// that holds the image's attributes and mapping, the wrapped data key and every part's digest.
// Format: docs/images.md.

#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "strata/store.h"

namespace strata::image {

inline constexpr uint64_t kBundlePartBytes = 10ull << 20;

// Writes `image` (its Ebs snapshots' data) as a bundle: `dir`/`object_key` (the manifest) and
// `dir`/`object_key`.part.NNN. Files are written under temporary names and renamed into place,
// manifest last, so a half-written bundle is never taken for a whole one.
absl::Status WriteBundle(Region& region, const ImageInfo& image, const std::string& dir,
                         const std::string& object_key, const std::string& account,
                         const std::function<void(int)>& progress);

// What a verified bundle restores to: the image (no id, owner `account`) and, per Ebs
// mapping with a snapshot in order, the snapshot made from the bundle's data.
absl::StatusOr<ImageInfo> ReadBundle(Region& region, const std::string& dir,
                                     const std::string& object_key, const std::string& account);

}  // namespace strata::image
