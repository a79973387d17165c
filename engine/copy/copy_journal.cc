#include "copy/copy_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace strata::copy {
namespace {

using Json = nlohmann::json;

Json ToJson(const CopyRecord& r) {
  return Json{{"destinationRegion", r.destination_region},
              {"snapshotId", r.snapshot_id},
              {"sourceRegion", r.source_region},
              {"sourceSnapshotId", r.source_snapshot_id},
              {"lineage", r.lineage},
              {"baseSourceSnapshotId", r.base_source_snapshot},
              {"baseSnapshotId", r.base_snapshot_id},
              {"state", r.state},
              {"message", r.message},
              {"logicalBytes", r.logical_bytes},
              {"chunksTotal", r.chunks_total},
              {"chunksDone", r.chunks_done},
              {"chunksSkipped", r.chunks_skipped},
              {"changedBytes", r.changed_bytes},
              {"bytesSent", r.bytes_sent},
              {"retries", r.retries},
              {"startMicros", r.start_micros},
              {"endMicros", r.end_micros},
              {"transferMicros", r.transfer_micros},
              {"completionMinutes", r.completion_minutes},
              {"rateBytesPerSecond", r.rate_bytes_per_second},
              {"link", r.link},
              {"account", r.account},
              {"builderVolumeId", r.builder_volume_id},
              {"manifestDigest", r.manifest_digest},
              {"doneRuns", r.done_runs}};
}

CopyRecord FromJson(const Json& j) {
  CopyRecord r;
  r.destination_region = j.at("destinationRegion").get<std::string>();
  r.snapshot_id = j.at("snapshotId").get<std::string>();
  r.source_region = j.at("sourceRegion").get<std::string>();
  r.source_snapshot_id = j.at("sourceSnapshotId").get<std::string>();
  r.lineage = j.at("lineage").get<std::string>();
  r.base_source_snapshot = j.at("baseSourceSnapshotId").get<std::string>();
  r.base_snapshot_id = j.at("baseSnapshotId").get<std::string>();
  r.state = j.at("state").get<std::string>();
  r.message = j.at("message").get<std::string>();
  r.logical_bytes = j.at("logicalBytes").get<uint64_t>();
  r.chunks_total = j.at("chunksTotal").get<uint64_t>();
  r.chunks_done = j.at("chunksDone").get<uint64_t>();
  r.chunks_skipped = j.at("chunksSkipped").get<uint64_t>();
  r.changed_bytes = j.at("changedBytes").get<uint64_t>();
  r.bytes_sent = j.at("bytesSent").get<uint64_t>();
  r.retries = j.at("retries").get<uint64_t>();
  r.start_micros = j.at("startMicros").get<uint64_t>();
  r.end_micros = j.at("endMicros").get<uint64_t>();
  r.transfer_micros = j.value("transferMicros", uint64_t{0});
  r.completion_minutes = j.at("completionMinutes").get<uint32_t>();
  r.rate_bytes_per_second = j.at("rateBytesPerSecond").get<uint64_t>();
  r.link = j.at("link").get<std::string>();
  r.account = j.value("account", std::string());
  r.builder_volume_id = j.value("builderVolumeId", std::string());
  r.manifest_digest = j.value("manifestDigest", std::string());
  r.done_runs = j.value("doneRuns", std::vector<std::pair<uint64_t, uint64_t>>());
  return r;
}

}  // namespace

absl::StatusOr<std::vector<CopyRecord>> CopyJournal::Read(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::vector<CopyRecord>{};
  std::stringstream text;
  text << in.rdbuf();
  try {
    std::vector<CopyRecord> out;
    for (const Json& j : Json::parse(text.str())) out.push_back(FromJson(j));
    return out;
  } catch (const Json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": not a copy journal: ", e.what()));
  }
}

absl::Status CopyJournal::Load() {
  absl::StatusOr<std::vector<CopyRecord>> all = Read(path_);
  if (!all.ok()) return all.status();
  absl::MutexLock lock(&mu_);
  for (CopyRecord& r : *all) {
    order_.push_back(r.snapshot_id);
    records_[r.snapshot_id] = std::move(r);
  }
  return absl::OkStatus();
}

absl::Status CopyJournal::Put(const CopyRecord& record) {
  absl::MutexLock lock(&mu_);
  if (!records_.contains(record.snapshot_id)) order_.push_back(record.snapshot_id);
  records_[record.snapshot_id] = record;
  return WriteLocked();
}

absl::StatusOr<CopyRecord> CopyJournal::Get(const std::string& snapshot_id) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(snapshot_id);
  if (it == records_.end()) {
    return absl::NotFoundError(absl::StrCat("no cross-region copy made ", snapshot_id));
  }
  return it->second;
}

std::vector<CopyRecord> CopyJournal::All() const {
  absl::MutexLock lock(&mu_);
  std::vector<CopyRecord> out;
  for (const std::string& id : order_) out.push_back(records_.at(id));
  return out;
}

absl::Status CopyJournal::WriteLocked() {
  Json all = Json::array();
  for (const std::string& id : order_) all.push_back(ToJson(records_.at(id)));
  const std::string text = all.dump(1);
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", tmp, ": ", std::strerror(errno)));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("write ", path_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace strata::copy

namespace strata {

absl::StatusOr<std::vector<CopyRecord>> ReadCopyRecords(const std::string& data_dir) {
  return copy::CopyJournal::Read(data_dir + "/copies.json");
}

}  // namespace strata
