// The archive tier's formats (docs/formats/archive.md).
#include "region/archive_format.h"

#include <xxhash.h>

#include <cstring>

#include "absl/base/internal/endian.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "util/status_macros.h"

namespace strata::region {
namespace {

using nlohmann::json;

constexpr int kManifestFormat = 1;
constexpr size_t kEntryHeaderBytes = 8 + 4 + 4;

const char* StateName(TierState s) {
  switch (s) {
    case TierState::kArchiving:
      return "archiving";
    case TierState::kArchived:
      return "archived";
    case TierState::kRestoring:
      return "restoring";
    case TierState::kRestored:
      return "restored";
    case TierState::kStandard:
      return "standard";
  }
  return "standard";
}

TierState StateFromName(const std::string& name) {
  for (TierState s : {TierState::kArchiving, TierState::kArchived, TierState::kRestoring,
                      TierState::kRestored, TierState::kStandard}) {
    if (name == StateName(s)) return s;
  }
  throw json::other_error::create(0, "unknown tier state " + name, nullptr);
}

std::string RecordToBase64(const meta::SnapshotRecord& r) { return absl::Base64Escape(r.Encode()); }

meta::SnapshotRecord RecordFromBase64(const std::string& text) {
  std::string bytes;
  if (!absl::Base64Unescape(text, &bytes)) {
    throw json::other_error::create(0, "snapshot record is not base64", nullptr);
  }
  absl::StatusOr<meta::SnapshotRecord> r = meta::SnapshotRecord::Decode(bytes);
  if (!r.ok()) throw json::other_error::create(0, std::string(r.status().message()), nullptr);
  return *std::move(r);
}

json Parse(absl::string_view bytes) {
  json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw json::other_error::create(0, "not JSON", nullptr);
  return j;
}

}  // namespace

std::string ArchiveRecord::Encode() const {
  return json{{"snapshot", RecordToBase64(snapshot)},
              {"state", StateName(state)},
              {"operation", operation},
              {"status", status},
              {"detail", detail},
              {"start", start_micros},
              {"due", due_micros},
              {"archived", archived_micros},
              {"restore_days", restore_days},
              {"restore_expiry", restore_expiry_micros},
              {"restore_seq", restore_seq},
              {"restore_tree", restore_tree},
              {"chunks", chunk_count},
              {"stored_bytes", stored_bytes}}
      .dump();
}

absl::StatusOr<ArchiveRecord> ArchiveRecord::Decode(absl::string_view bytes) {
  try {
    const json j = Parse(bytes);
    ArchiveRecord r;
    r.snapshot = RecordFromBase64(j.at("snapshot"));
    r.state = StateFromName(j.at("state"));
    r.operation = j.at("operation");
    r.status = j.at("status");
    r.detail = j.at("detail");
    r.start_micros = j.at("start");
    r.due_micros = j.at("due");
    r.archived_micros = j.at("archived");
    r.restore_days = j.at("restore_days");
    r.restore_expiry_micros = j.at("restore_expiry");
    r.restore_seq = j.at("restore_seq");
    r.restore_tree = j.at("restore_tree");
    r.chunk_count = j.at("chunks");
    r.stored_bytes = j.at("stored_bytes");
    return r;
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("catalog: corrupt archive tier record: ", e.what()));
  }
}

std::string ArchivePartName(const std::string& snapshot_id, uint64_t part) {
  return absl::StrFormat("%s.part-%06d", snapshot_id, part);
}

std::string ArchiveManifestName(const std::string& snapshot_id) {
  return absl::StrCat(snapshot_id, ".manifest");
}

std::string ArchiveManifest::Encode() const {
  json parts_json = json::array();
  for (const Part& p : parts) {
    parts_json.push_back({{"name", p.name}, {"bytes", p.bytes}, {"xxh3", p.xxh3}});
  }
  return json{{"format", kManifestFormat},      {"snapshot", RecordToBase64(snapshot)},
              {"chunk_size", chunk_size_bytes}, {"chunks", chunk_count},
              {"stored_bytes", stored_bytes},   {"parts", parts_json}}
      .dump();
}

absl::StatusOr<ArchiveManifest> ArchiveManifest::Decode(absl::string_view bytes) {
  try {
    const json j = Parse(bytes);
    if (j.at("format") != kManifestFormat) {
      return absl::DataLossError(
          absl::StrCat("archive manifest: format ", j.at("format").dump(), " is not known"));
    }
    ArchiveManifest m;
    m.snapshot = RecordFromBase64(j.at("snapshot"));
    m.chunk_size_bytes = j.at("chunk_size");
    m.chunk_count = j.at("chunks");
    m.stored_bytes = j.at("stored_bytes");
    for (const json& p : j.at("parts")) {
      m.parts.push_back({p.at("name"), p.at("bytes"), p.at("xxh3")});
    }
    return m;
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("archive manifest: corrupt: ", e.what()));
  }
}

uint64_t ArchiveChecksum(absl::string_view bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

void AppendArchiveEntry(std::string& part, uint64_t chunk_index, uint32_t domain,
                        absl::string_view stored) {
  char header[kEntryHeaderBytes];
  absl::little_endian::Store64(header, chunk_index);
  absl::little_endian::Store32(header + 8, domain);
  absl::little_endian::Store32(header + 12, static_cast<uint32_t>(stored.size()));
  part.append(header, sizeof(header));
  part.append(stored.data(), stored.size());
}

absl::Status ForEachArchiveEntry(
    const ArchiveManifest::Part& expected, absl::string_view part,
    const std::function<absl::Status(uint64_t, uint32_t, absl::string_view)>& visit) {
  if (part.size() != expected.bytes || ArchiveChecksum(part) != expected.xxh3) {
    return absl::DataLossError(absl::StrCat("archive part ", expected.name, ": ", part.size(),
                                            " bytes that do not match its manifest (",
                                            expected.bytes, " bytes and its checksum)"));
  }
  while (!part.empty()) {
    if (part.size() < kEntryHeaderBytes) {
      return absl::DataLossError(absl::StrCat("archive part ", expected.name, ": truncated"));
    }
    const uint64_t index = absl::little_endian::Load64(part.data());
    const uint32_t domain = absl::little_endian::Load32(part.data() + 8);
    const uint32_t length = absl::little_endian::Load32(part.data() + 12);
    part.remove_prefix(kEntryHeaderBytes);
    if (part.size() < length) {
      return absl::DataLossError(absl::StrCat("archive part ", expected.name, ": truncated"));
    }
    STRATA_RETURN_IF_ERROR(visit(index, domain, part.substr(0, length)));
    part.remove_prefix(length);
  }
  return absl::OkStatus();
}

}  // namespace strata::region
