#include "copy/transfer_source.h"

#include <algorithm>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "copy/transfer_messages.h"
#include "image/image_records.h"
#include "strata/aws_error.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::copy {
namespace {

class SourceSession {
 public:
  SourceSession(Store& store, SharedBuckets& buckets, Connection& connection, bool faults_allowed)
      : store_(store), buckets_(buckets), c_(connection), faults_allowed_(faults_allowed) {}

  void Run() {
    absl::Status s = Serve();
    if (!s.ok() && !absl::IsUnavailable(s)) (void)c_.Send(FrameType::kError, EncodeError(s));
  }

 private:
  absl::Status Serve() {
    STRATA_ASSIGN_OR_RETURN(Frame first, c_.Receive());
    if (first.type != FrameType::kHello) return absl::InvalidArgumentError("expected HELLO");
    STRATA_ASSIGN_OR_RETURN(hello_, DecodeHello(first.payload));
    if (!faults_allowed_) {
      // A peer process does not get to damage what this one sends.
      hello_.link.corrupt_rate = 0;
      hello_.link.drop_rate = 0;
    }
    if (hello_.version != kProtocolVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("transfer protocol version ", hello_.version, " is not ", kProtocolVersion));
    }
    STRATA_ASSIGN_OR_RETURN(region_, store_.GetRegion(hello_.region));
    bucket_ = buckets_.Get(hello_.copy_key, hello_.copy_bytes_per_second);
    random_.seed(hello_.seed);
    for (;;) {
      STRATA_ASSIGN_OR_RETURN(Frame frame, c_.Receive());
      switch (frame.type) {
        case FrameType::kOpen:
          STRATA_RETURN_IF_ERROR(OnOpen(frame.payload));
          break;
        case FrameType::kGet:
          STRATA_RETURN_IF_ERROR(OnGet(frame.payload));
          break;
        case FrameType::kDescribeImage:
          STRATA_RETURN_IF_ERROR(OnDescribeImage(frame.payload));
          break;
        default:
          return absl::InvalidArgumentError("expected OPEN, GET or DESCRIBE_IMAGE");
      }
    }
  }

  absl::Status OnOpen(absl::string_view payload) {
    STRATA_ASSIGN_OR_RETURN(Open open, DecodeOpen(payload));
    absl::StatusOr<SnapshotInfo> info = region_->DescribeSnapshot(open.snapshot_id);
    const bool allowed =
        info.ok() &&
        (info->owner == hello_.account ||
         std::count(info->shared_with.begin(), info->shared_with.end(), hello_.account) > 0 ||
         std::count(info->shared_with.begin(), info->shared_with.end(), "all") > 0);
    if (!allowed) {
      return absl::NotFoundError(absl::StrCat("The snapshot '", open.snapshot_id,
                                              "' does not exist in region ", region_->name()));
    }
    if (info->state != SnapshotState::kCompleted) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot ", open.snapshot_id, " is not completed"));
    }
    // An encrypted snapshot's data leaves only for an account that may decrypt it.
    STRATA_RETURN_IF_ERROR(region_->CheckSnapshotKeyAccess(hello_.account, open.snapshot_id));
    // The changes against the first usable base, O(chunks changed); else every chunk held.
    absl::StatusOr<ChunkListing> chosen = absl::NotFoundError("no base");
    std::string base;
    for (const std::string& candidate : open.base_candidates) {
      chosen = region_->ListChunks(open.snapshot_id, candidate);
      if (chosen.ok()) {
        base = candidate;
        break;
      }
    }
    if (!chosen.ok()) chosen = region_->ListChunks(open.snapshot_id, "");
    if (!chosen.ok()) return chosen.status();
    Manifest m;
    m.lineage = chosen->lineage;
    m.base_snapshot_id = base;
    m.volume_size_bytes = chosen->volume_size_bytes;
    m.chunk_size_bytes = chosen->chunk_size_bytes;
    m.encrypted = info->encrypted;
    m.chunks = std::move(chosen->chunks);
    if (open.count_skipped && !base.empty()) {
      STRATA_ASSIGN_OR_RETURN(ChunkListing held, region_->ListChunks(open.snapshot_id, ""));
      uint64_t sent = 0;
      for (const ChunkListing::Chunk& c : m.chunks) sent += c.zero ? 0 : 1;
      m.skipped_chunks = held.chunks.size() - std::min<uint64_t>(held.chunks.size(), sent);
    }
    STRATA_ASSIGN_OR_RETURN(snapshot_, region_->OpenSnapshot(open.snapshot_id));
    chunk_size_ = m.chunk_size_bytes;
    return c_.Send(FrameType::kManifest, EncodeManifest(m), bucket_.get());
  }

  absl::Status OnDescribeImage(absl::string_view payload) {
    const std::string image_id(payload);
    absl::StatusOr<ImageInfo> image = region_->images().DescribeImage(image_id);
    if (!image.ok() || !image->launchable_by(hello_.account)) {
      return WithAwsErrorCode(
          absl::NotFoundError(absl::StrCat("The image id '[", image_id,
                                           "]' does not exist in region ", region_->name())),
          "InvalidAMIID.NotFound");
    }
    return c_.Send(FrameType::kImage, image::EncodeImage(*image), bucket_.get());
  }

  absl::Status OnGet(absl::string_view payload) {
    STRATA_ASSIGN_OR_RETURN(std::vector<uint64_t> indexes, DecodeGet(payload));
    if (snapshot_ == nullptr) return absl::InvalidArgumentError("GET before OPEN");
    std::uniform_real_distribution<double> uniform(0, 1);
    std::string raw;
    for (uint64_t index : indexes) {
      const uint64_t offset = index * chunk_size_;
      if (offset >= snapshot_->size_bytes()) {
        return absl::InvalidArgumentError(absl::StrCat("chunk ", index, " is past the end"));
      }
      raw.assign(std::min(chunk_size_, snapshot_->size_bytes() - offset), '\0');
      STRATA_RETURN_IF_ERROR(
          snapshot_->Read(offset, std::span(reinterpret_cast<std::byte*>(raw.data()), raw.size())));
      ChunkFrame frame = PackChunk(index, raw);
      if (hello_.link.corrupt_rate > 0 && uniform(random_) < hello_.link.corrupt_rate &&
          !frame.data.empty()) {
        frame.data[random_() % frame.data.size()] ^= 0x5a;  // Damaged in flight.
      }
      STRATA_RETURN_IF_ERROR(c_.Send(FrameType::kChunk, EncodeChunk(frame), bucket_.get()));
      if (hello_.link.drop_rate > 0 && uniform(random_) < hello_.link.drop_rate) {
        c_.Cut();  // The link goes down.
        return absl::UnavailableError("link dropped (fault injection)");
      }
    }
    return c_.Send(FrameType::kBatchEnd, "", bucket_.get());
  }

  Store& store_;
  SharedBuckets& buckets_;
  Connection& c_;
  const bool faults_allowed_;
  Hello hello_;
  Region* region_ = nullptr;
  std::shared_ptr<TokenBucket> bucket_;  // Shared with the copy's other streams.
  std::mt19937_64 random_;
  std::unique_ptr<Snapshot> snapshot_;
  uint64_t chunk_size_ = 0;
};

}  // namespace

void ServeConnection(Store& store, SharedBuckets& buckets, std::unique_ptr<Connection> connection,
                     bool faults_allowed) {
  SourceSession(store, buckets, *connection, faults_allowed).Run();
}

}  // namespace strata::copy
