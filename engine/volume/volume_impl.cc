// A volume's data path: reads and writes through its head and base snapshot, the queued
// (io_uring) path, trims, flushes, changed-block tracking and the snapshot freeze with
// copy-before-write. Why one file of ~870 lines: every method here takes part in one locking
// protocol (StripeLocks below, the queued-write counts per stripe, Freeze and the pending
// snapshots' ingest); split across files, a reader checking that a queued write, a
// read-modify-write and a snapshot freeze exclude each other would have to hold them all at
// once. Everything outside that protocol lives in head.cc, sparse_bitmap.cc, domain_keys.cc
// and snapshot_tree.cc.

#include "volume/volume_impl.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "io/errno.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/tags.h"

namespace strata::volume {

std::bitset<VolumeImpl::kStripeCount> VolumeImpl::StripesOf(uint64_t first_chunk,
                                                            uint64_t last_chunk) {
  std::bitset<kStripeCount> stripes;
  if (last_chunk - first_chunk + 1 >= kStripeCount) {
    stripes.set();
  } else {
    for (uint64_t c = first_chunk; c <= last_chunk; ++c) stripes.set(c % kStripeCount);
  }
  return stripes;
}

// Locks the stripes of chunks [first, last] in ascending stripe order, shared or exclusive.
class VolumeImpl::StripeLocks {
 public:
  StripeLocks(VolumeImpl& volume, uint64_t first, uint64_t last,
              bool exclusive) ABSL_NO_THREAD_SAFETY_ANALYSIS : volume_(volume),
                                                               exclusive_(exclusive) {
    held_ = StripesOf(first, last);
    for (size_t i = held_._Find_first(); i < kStripeCount; i = held_._Find_next(i)) {
      exclusive_ ? volume_.stripes_[i].Lock() : volume_.stripes_[i].ReaderLock();
    }
    if (exclusive_) {  // Writes queued before the lock was taken land first.
      for (size_t i = held_._Find_first(); i < kStripeCount; i = held_._Find_next(i)) {
        volume_.WaitForQueuedWrites(i);
      }
    }
  }
  ~StripeLocks() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (size_t i = held_._Find_first(); i < kStripeCount; i = held_._Find_next(i)) {
      exclusive_ ? volume_.stripes_[i].Unlock() : volume_.stripes_[i].ReaderUnlock();
    }
  }

 private:
  VolumeImpl& volume_;
  const bool exclusive_;
  std::bitset<kStripeCount> held_;
};

namespace {

// Appends a run to extents whose flag is `kFlag`, merging it into the last run when the flag
// matches; false when a new run would pass `max_extents`.
template <auto kFlag, typename Extent>
bool AppendRun(std::vector<Extent>& out, uint64_t length, bool flag, size_t max_extents) {
  if (!out.empty() && out.back().*kFlag == flag) {
    out.back().length_bytes += length;
    return true;
  }
  if (out.size() == max_extents) return false;
  Extent e;
  e.length_bytes = length;
  e.*kFlag = flag;
  out.push_back(e);
  return true;
}

uint64_t ChunksFor(uint64_t size_bytes, unsigned shift) {
  return (size_bytes + (uint64_t{1} << shift) - 1) >> shift;
}

bool IsAllZero(std::span<const std::byte> data) {
  // Word-at-a-time scan; chunk sizes are multiples of 8.
  const size_t words = data.size() / 8;
  const auto* p = reinterpret_cast<const uint64_t*>(data.data());
  for (size_t i = 0; i < words; ++i) {
    if (p[i] != 0) return false;
  }
  for (size_t i = words * 8; i < data.size(); ++i) {
    if (data[i] != std::byte{0}) return false;
  }
  return true;
}

}  // namespace

VolumeImpl::VolumeImpl(const VolumeDeps& deps, meta::VolumeRecord record,
                       std::unique_ptr<Head> head)
    : deps_(deps),
      id_(record.id),
      chunk_shift_(static_cast<unsigned>(std::countr_zero(deps.chunk_size_bytes))),
      head_(std::move(head)),
      domain_(record.encryption.domain),
      size_bytes_(record.size_bytes),
      owned_(ChunksFor(record.size_bytes, chunk_shift_)),
      dirty_(std::make_unique<SparseBitmap>(ChunksFor(record.size_bytes, chunk_shift_))),
      record_(std::move(record)) {
  ConfigureLimiter();
}

VolumeImpl::~VolumeImpl() = default;

void VolumeImpl::ConfigureLimiter() {
  absl::MutexLock lock(&mu_);
  // A record from before types were checked that its type's rules refuse is held to the type's
  // defaults, else not held.
  const uint64_t iops = qos::ProvisionedIops(record_.volume_type, record_.iops);
  absl::StatusOr<qos::VolumeSpec> normal =
      qos::NormalizeForBytes(record_.volume_type, size_bytes(), iops, record_.throughput);
  if (!normal.ok()) normal = qos::NormalizeForBytes(record_.volume_type, size_bytes(), 0, 0);
  auto tag = record_.tags.find(kQosTag);
  const bool enforced =
      deps_.qos && normal.ok() && (tag == record_.tags.end() || tag->second != "off");
  limiter_.Configure(normal.ok() ? qos::LimitsOf(*normal) : qos::Limits{}, enforced);
  // A burst balance tag applies when the volume opens and when its value changes.
  auto burst = record_.tags.find(kBurstBalanceTag);
  const std::string burst_value = burst == record_.tags.end() ? "" : burst->second;
  if (burst_value != applied_burst_balance_) {
    if (std::optional<double> percent = BurstBalanceOf(burst_value)) {
      limiter_.SetBurstBalance(*percent);
    }
    applied_burst_balance_ = burst_value;
  }
}

meta::VolumeRecord VolumeImpl::record() const {
  absl::MutexLock lock(&mu_);
  meta::VolumeRecord copy = record_;
  copy.size_bytes = size_bytes();
  return copy;
}

void VolumeImpl::set_record_fields(const std::map<std::string, std::string>& tags, bool hydrating,
                                   uint64_t hydrate_bytes_per_second) {
  absl::MutexLock lock(&mu_);
  record_.tags = tags;
  record_.hydrating = hydrating;
  record_.hydrate_bytes_per_second = hydrate_bytes_per_second;
}

void VolumeImpl::set_fast_restored(bool fast_restored) {
  absl::MutexLock lock(&mu_);
  record_.fast_restored = fast_restored;
}

void VolumeImpl::set_type(const std::string& volume_type, uint64_t iops, uint64_t throughput) {
  absl::MutexLock lock(&mu_);
  record_.volume_type = volume_type;
  record_.iops = iops;
  record_.throughput = throughput;
}

void VolumeImpl::set_modification(const meta::ModificationRecord& modification) {
  absl::MutexLock lock(&mu_);
  record_.modification = modification;
}

uint64_t VolumeImpl::chunk_count() const { return ChunksFor(size_bytes(), chunk_shift_); }

uint64_t VolumeImpl::ChunkLength(uint64_t chunk_index) const {
  return std::min<uint64_t>(deps_.chunk_size_bytes, size_bytes() - (chunk_index << chunk_shift_));
}

absl::Status VolumeImpl::CheckRange(uint64_t offset_bytes, uint64_t length_bytes) const {
  if (!key_status_.ok()) return key_status_;
  if (offset_bytes % kSectorBytes != 0 || length_bytes % kSectorBytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(id_, ": offset ", offset_bytes, " and length ",
                                                   length_bytes, " must be multiples of ",
                                                   kSectorBytes));
  }
  const uint64_t size = size_bytes();
  if (offset_bytes > size || length_bytes > size - offset_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(id_, ": range ", offset_bytes, "+", length_bytes,
                                                   " is past the end (", size, " bytes)"));
  }
  return absl::OkStatus();
}

absl::Status VolumeImpl::LoadBitmaps(bool clean) {
  absl::Status bad;
  auto load = [&](SparseBitmap& bitmap) {
    return [&](absl::string_view key, absl::string_view value) {
      if (!bitmap.LoadLeaf(meta::LeafKeyIndex(key), value)) {
        bad = absl::DataLossError(absl::StrCat(id_, ": corrupt bitmap leaf in catalog"));
        return false;
      }
      return true;
    };
  };
  STRATA_RETURN_IF_ERROR(deps_.catalog->Scan(meta::OwnedPrefix(id_), "", load(owned_)));
  STRATA_RETURN_IF_ERROR(bad);
  owned_.TakeModifiedLeaves();  // Loaded leaves are already persisted.
  absl::MutexLock gate(&gate_);
  if (clean) {
    STRATA_RETURN_IF_ERROR(deps_.catalog->Scan(meta::DirtyPrefix(id_), "", load(*dirty_)));
    STRATA_RETURN_IF_ERROR(bad);
  } else {
    dirty_->Union(owned_);
    suspect_ = std::make_unique<SparseBitmap>(chunk_count());
    suspect_->Union(owned_);
  }
  return absl::OkStatus();
}

void VolumeImpl::MarkAllChanged() {
  absl::MutexLock gate(&gate_);
  for (uint64_t c = 0; c < chunk_count(); ++c) dirty_->Set(c);
}

absl::Status VolumeImpl::SaveDirtyBitmap(meta::WriteBatch& batch) {
  STRATA_RETURN_IF_ERROR(deps_.catalog->Scan(meta::DirtyPrefix(id_), "",
                                             [&](absl::string_view key, absl::string_view) {
                                               batch.Delete(std::string(key));
                                               return true;
                                             }));
  absl::ReaderMutexLock gate(&gate_);
  for (uint64_t leaf = 0; leaf < dirty_->leaf_count(); ++leaf) {
    if (std::optional<std::string> bytes = dirty_->LeafBytes(leaf); bytes.has_value()) {
      batch.Put(meta::DirtyLeafKey(id_, leaf), *std::move(bytes));
    }
  }
  return absl::OkStatus();
}

std::vector<std::shared_ptr<PendingSnapshot>> VolumeImpl::PendingList() const {
  absl::MutexLock lock(&mu_);
  return {pending_.begin(), pending_.end()};
}

bool VolumeImpl::HasPending() const {
  absl::MutexLock lock(&mu_);
  return !pending_.empty();
}

absl::Status VolumeImpl::HeadRead(uint64_t offset_bytes, std::span<std::byte> out) const {
  if (key_ == nullptr) return head_->Read(offset_bytes, out);
  const uint64_t unit = crypto::kXtsUnitBytes;
  const uint64_t begin = offset_bytes / unit * unit;
  const uint64_t end = (offset_bytes + out.size() + unit - 1) / unit * unit;
  const bool aligned = begin == offset_bytes && end == offset_bytes + out.size();
  thread_local std::vector<std::byte> scratch;
  std::span<std::byte> units = out;
  if (!aligned) {
    if (scratch.size() < end - begin) scratch.resize(end - begin);
    units = std::span(scratch).first(end - begin);
  }
  STRATA_RETURN_IF_ERROR(head_->Read(begin, units));
  DecipherUnits(begin, units);
  if (!aligned) std::memcpy(out.data(), scratch.data() + (offset_bytes - begin), out.size());
  return absl::OkStatus();
}

void VolumeImpl::DecipherUnits(uint64_t offset_bytes, std::span<std::byte> units) const {
  const uint64_t unit = crypto::kXtsUnitBytes;
  // A hole (never written, or trimmed) is an all-zero unit; ciphertext shows non-zero bytes at
  // once, so the check is cheap. Runs without holes are deciphered in one call.
  for (uint64_t at = 0; at < units.size();) {
    if (IsAllZero(units.subspan(at, unit))) {
      at += unit;
      continue;
    }
    uint64_t run_end = at + unit;
    while (run_end < units.size() && !IsAllZero(units.subspan(run_end, unit))) run_end += unit;
    const std::span<std::byte> run = units.subspan(at, run_end - at);
    key_->xts->DecryptUnits((offset_bytes + at) / unit, run, run);
    at = run_end;
  }
}

absl::Status VolumeImpl::HeadWrite(uint64_t offset_bytes, std::span<const std::byte> data) {
  if (key_ == nullptr) return head_->Write(offset_bytes, data);
  const uint64_t unit = crypto::kXtsUnitBytes;
  const uint64_t begin = offset_bytes / unit * unit;
  const uint64_t end = (offset_bytes + data.size() + unit - 1) / unit * unit;
  // Reused per thread: no allocation (nor page faults on fresh memory) per write.
  thread_local std::vector<std::byte> scratch;
  if (scratch.size() < end - begin) scratch.resize(end - begin);
  const std::span<std::byte> units = std::span(scratch).first(end - begin);
  if (begin == offset_bytes && end == offset_bytes + data.size()) {
    key_->xts->EncryptUnits(begin / unit, data, units);  // Whole units: no read.
    return head_->Write(begin, units);
  }
  if (begin != offset_bytes) STRATA_RETURN_IF_ERROR(HeadRead(begin, units.first(unit)));
  if (end != offset_bytes + data.size() && (end - unit != begin || begin == offset_bytes)) {
    STRATA_RETURN_IF_ERROR(HeadRead(end - unit, units.last(unit)));
  }
  std::memcpy(units.data() + (offset_bytes - begin), data.data(), data.size());
  key_->xts->EncryptUnits(begin / unit, units, units);
  return head_->Write(begin, units);
}

absl::Status VolumeImpl::HeadZero(uint64_t offset_bytes, uint64_t length_bytes) {
  if (key_ == nullptr) return head_->PunchHole(offset_bytes, length_bytes);
  // Whole units become holes (read as zeros); partly covered ones are rewritten.
  const uint64_t unit = crypto::kXtsUnitBytes;
  const uint64_t end = offset_bytes + length_bytes;
  const uint64_t inner_begin = (offset_bytes + unit - 1) / unit * unit;
  const uint64_t inner_end = end / unit * unit;
  if (inner_begin >= inner_end) {
    const std::vector<std::byte> zeros(length_bytes);
    return HeadWrite(offset_bytes, zeros);
  }
  STRATA_RETURN_IF_ERROR(head_->PunchHole(inner_begin, inner_end - inner_begin));
  if (offset_bytes < inner_begin) {
    const std::vector<std::byte> zeros(inner_begin - offset_bytes);
    STRATA_RETURN_IF_ERROR(HeadWrite(offset_bytes, zeros));
  }
  if (inner_end < end) {
    const std::vector<std::byte> zeros(end - inner_end);
    STRATA_RETURN_IF_ERROR(HeadWrite(inner_end, zeros));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ChunkEntry>> VolumeImpl::ResolveBaseRange(uint64_t first,
                                                                     uint64_t count) {
  std::string base;
  SnapshotTree::Ancestry ancestry;
  {
    absl::MutexLock lock(&mu_);
    base = record_.last_snapshot_id;
    ancestry = base_ancestry_;
  }
  if (base.empty()) return std::vector<ChunkEntry>(count);
  std::optional<meta::SnapshotRecord> rec = deps_.tree->Get(base);
  if (!rec.has_value())
    return absl::InternalError(absl::StrCat(id_, ": base snapshot ", base, " is gone"));
  if (ancestry == nullptr) {
    STRATA_ASSIGN_OR_RETURN(ancestry, deps_.tree->Ancestors(base));
    absl::MutexLock lock(&mu_);
    if (record_.last_snapshot_id == base) base_ancestry_ = ancestry;
  }
  // By windows, kept while the base stays (ResolveWindows): a rebase needs the chunks it
  // moves held, so what an unheld chunk resolves to stays the same under one base.
  return resolved_.Resolve(*deps_.tree, base, rec->tree, ancestry, first, count);
}

absl::StatusOr<ChunkEntry> VolumeImpl::ResolveBase(uint64_t chunk_index) {
  STRATA_ASSIGN_OR_RETURN(std::vector<ChunkEntry> entry, ResolveBaseRange(chunk_index, 1));
  return entry[0];
}

absl::Status VolumeImpl::ReadUnowned(uint64_t chunk_index, uint64_t offset_in_chunk,
                                     std::span<std::byte> out) {
  STRATA_ASSIGN_OR_RETURN(ChunkEntry entry, ResolveBase(chunk_index));
  if (!entry.has_value()) {
    std::memset(out.data(), 0, out.size());
    return absl::OkStatus();
  }
  const DomainKeys::Piece piece{*entry, offset_in_chunk, out};
  return deps_.keys->ReadPieces(*deps_.chunks, deps_.chunk_size_bytes, std::span(&piece, 1));
}

absl::Status VolumeImpl::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  if (out.empty()) return CheckRange(offset_bytes, 0);
  absl::ReaderMutexLock gate(&gate_);
  STRATA_RETURN_IF_ERROR(CheckRange(offset_bytes, out.size()));
  const uint64_t first = offset_bytes >> chunk_shift_;
  const uint64_t last = (offset_bytes + out.size() - 1) >> chunk_shift_;
  // No stripe locks: a chunk's owned bit is set only after its head bytes are complete, so a
  // reader sees either the base data or the full head data, as with any racing write.
  bool all_owned = true;
  for (uint64_t c = first; c <= last && all_owned; ++c) all_owned = owned_.Test(c);
  if (all_owned) return HeadRead(offset_bytes, out);  // The hot path: one read.
  // Owned pieces from the head; the stored chunks under unowned pieces all at once, whole
  // chunks straight into `out`.
  std::vector<DomainKeys::Piece> unowned;
  // The base snapshot's entries of the whole range, with one index scan (a round trip to the
  // cluster on RADOS), rather than one lookup per chunk.
  STRATA_ASSIGN_OR_RETURN(std::vector<ChunkEntry> resolved,
                          ResolveBaseRange(first, last - first + 1));
  for (uint64_t pos = offset_bytes; pos < offset_bytes + out.size();) {
    const uint64_t c = pos >> chunk_shift_;
    const uint64_t in_chunk = pos - (c << chunk_shift_);
    const uint64_t n =
        std::min<uint64_t>(deps_.chunk_size_bytes - in_chunk, offset_bytes + out.size() - pos);
    auto piece = out.subspan(pos - offset_bytes, n);
    if (owned_.Test(c)) {
      STRATA_RETURN_IF_ERROR(HeadRead(pos, piece));
    } else if (const ChunkEntry& entry = resolved[c - first]; entry.has_value()) {
      unowned.push_back({*entry, in_chunk, piece});
    } else {
      std::memset(piece.data(), 0, n);
    }
    pos += n;
  }
  if (unowned.empty()) return absl::OkStatus();
  return deps_.keys->ReadPieces(*deps_.chunks, deps_.chunk_size_bytes, unowned);
}

bool VolumeImpl::HoldsAll(uint64_t offset_bytes, uint64_t length_bytes) const {
  const uint64_t last = (offset_bytes + length_bytes - 1) >> chunk_shift_;
  for (uint64_t c = offset_bytes >> chunk_shift_; c <= last; ++c) {
    if (!owned_.Test(c)) return false;
  }
  return true;
}

bool VolumeImpl::BeginQueuedWrite(uint64_t first_chunk, uint64_t last_chunk) {
  const std::bitset<kStripeCount> stripes = StripesOf(first_chunk, last_chunk);
  // Holding a stripe shared keeps exclusive holders out while the count goes up; once it is
  // up, a later exclusive holder waits for it (StripeLocks).
  for (size_t i = stripes._Find_first(); i < kStripeCount; i = stripes._Find_next(i)) {
    if (!stripes_[i].ReaderTryLock()) {
      for (size_t j = stripes._Find_first(); j < i; j = stripes._Find_next(j)) {
        queued_writes_[j].fetch_sub(1, std::memory_order_acq_rel);
      }
      return false;
    }
    queued_writes_[i].fetch_add(1, std::memory_order_acq_rel);
    stripes_[i].ReaderUnlock();
  }
  return true;
}

void VolumeImpl::EndQueuedWrite(uint64_t first_chunk, uint64_t last_chunk) {
  const std::bitset<kStripeCount> stripes = StripesOf(first_chunk, last_chunk);
  for (size_t i = stripes._Find_first(); i < kStripeCount; i = stripes._Find_next(i)) {
    queued_writes_[i].fetch_sub(1, std::memory_order_acq_rel);
  }
}

void VolumeImpl::WaitForQueuedWrites(size_t stripe) const {
  // Queued writes land within the time of a disk write: their loop reaps them without taking
  // any lock of this volume.
  for (int spins = 0; queued_writes_[stripe].load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 64) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(absl::Microseconds(50));
    }
  }
}

void VolumeImpl::SubmitRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                            VolumeIo& io) {
  const uint64_t unit = crypto::kXtsUnitBytes;
  // A queued read needs the gate only to look at the owned bits: it is tried, never waited
  // for, so the loop never blocks with writes of its ring in flight.
  bool needs_store = false;
  if (!out.empty() && gate_.ReaderTryLock()) {
    bool queued = false;
    const bool in_range = CheckRange(offset_bytes, out.size()).ok();
    const bool held = in_range && HoldsAll(offset_bytes, out.size());
    needs_store = in_range && !held;
    const bool whole_units = offset_bytes % unit == 0 && out.size() % unit == 0;
    if (held && key_ != nullptr && whole_units && out.size() >= kCipherBesideBytes &&
        !head_->reads_wait_on_network()) {
      queued = SubmitSplitRead(offset_bytes, out, ring, io);
    }
    if (!queued && held && (key_ == nullptr || whole_units)) {
      io.completer = this;
      io.offset_bytes = offset_bytes;
      io.buffer = out;
      io.write = false;
      queued = head_->QueueRead(offset_bytes, out, ring, &io);
    }
    gate_.ReaderUnlock();
    if (queued) return;
  }
  // A read that needs stored chunks from the network (RADOS) runs on the ring's helpers, so the
  // loop takes its next requests meanwhile.
  if (needs_store && deps_.chunks->reads_wait_on_network() &&
      ring.QueueCall([this, offset_bytes, out] { return Read(offset_bytes, out); },
                     [&io](absl::Status s) { io.Done(std::move(s)); })) {
    return;
  }
  (void)ring.Wait();
  io.Done(Read(offset_bytes, out));
}

bool VolumeImpl::SubmitSplitRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                                 VolumeIo& io) {
  // The second half is read and deciphered on a helper while the loop does the first: each
  // half's bytes are deciphered by the processor that read them. The first half's outcome
  // waits in `first` for the helper's completion, which answers the request.
  const size_t half = out.size() / 2 / crypto::kXtsUnitBytes * crypto::kXtsUnitBytes;
  const std::span<std::byte> second = out.subspan(half);
  auto first = std::make_shared<absl::Status>();
  if (!ring.QueueSpareCall(
          [this, at = offset_bytes + half, second] { return HeadRead(at, second); },
          [first, &io](absl::Status s) { io.Done(first->ok() ? std::move(s) : *first); })) {
    return false;
  }
  *first = HeadRead(offset_bytes, out.first(half));
  return true;
}

bool VolumeImpl::IsOneHeadWrite(uint64_t offset_bytes, uint64_t length_bytes) const {
  // Only chunks the volume holds, with no snapshot pending (no copy-up, no copy-before-write):
  // then the write is one head write and a dirty bit per chunk.
  return CheckRange(offset_bytes, length_bytes).ok() &&
         pending_count_.load(std::memory_order_acquire) == 0 &&
         HoldsAll(offset_bytes, length_bytes);
}

bool VolumeImpl::BeginHeadWrite(uint64_t offset_bytes, uint64_t length_bytes) {
  const uint64_t unit = crypto::kXtsUnitBytes;
  if (length_bytes == 0 || pending_count_.load(std::memory_order_acquire) != 0 ||
      !gate_.ReaderTryLock()) {
    return false;
  }
  if (IsOneHeadWrite(offset_bytes, length_bytes) &&
      (key_ == nullptr || (offset_bytes % unit == 0 && length_bytes % unit == 0))) {
    const uint64_t first = offset_bytes >> chunk_shift_;
    const uint64_t last = (offset_bytes + length_bytes - 1) >> chunk_shift_;
    if (BeginQueuedWrite(first, last)) {
      // Dirty before the data lands, under the gate: a freeze either sees the bits (and waits
      // for the write to land before it completes) or happened before the write began.
      for (uint64_t c = first; c <= last; ++c) dirty_->Set(c);
      return true;
    }
  }
  gate_.ReaderUnlock();
  return false;
}

void VolumeImpl::SubmitWrite(uint64_t offset_bytes, std::span<std::byte> data, bool fua,
                             IoRing& ring, VolumeIo& io) {
  const uint64_t unit = crypto::kXtsUnitBytes;
  if (fua || !BeginHeadWrite(offset_bytes, data.size())) {
    (void)ring.Wait();
    io.Done(Write(offset_bytes, data, fua));
    return;
  }
  if (key_ != nullptr && data.size() >= kCipherBesideBytes) {
    // The cipher and the head write of a large request run on the ring's helpers, so the loop
    // receives the next request meanwhile (docs/architecture.md).
    const bool queued = ring.QueueCall(
        [this, offset_bytes, data] {
          key_->xts->EncryptUnits(offset_bytes / unit, data, data);
          return head_->Write(offset_bytes, data);
        },
        [this, offset_bytes, data, &io](absl::Status s) {
          EndHeadWrite(offset_bytes, data.size());
          io.Done(std::move(s));
        });
    if (queued) {
      gate_.ReaderUnlock();
      return;
    }
  }
  if (key_ != nullptr) key_->xts->EncryptUnits(offset_bytes / unit, data, data);
  io.completer = this;
  io.offset_bytes = offset_bytes;
  io.buffer = data;
  io.write = true;
  if (head_->QueueWrite(offset_bytes, data, ring, &io)) {
    gate_.ReaderUnlock();
    return;
  }
  // The ring is full: the (enciphered) bytes go out at once.
  const absl::Status s = head_->Write(offset_bytes, data);
  EndHeadWrite(offset_bytes, data.size());
  gate_.ReaderUnlock();
  io.Done(s);
}

bool VolumeImpl::SplicesWrite(uint64_t offset_bytes, uint64_t length_bytes) {
  if (key_ != nullptr || length_bytes == 0 || !head_->CanSplice(offset_bytes, length_bytes) ||
      pending_count_.load(std::memory_order_acquire) != 0 || !gate_.ReaderTryLock()) {
    return false;
  }
  const bool takes = IsOneHeadWrite(offset_bytes, length_bytes);
  gate_.ReaderUnlock();
  return takes;
}

std::optional<absl::Status> VolumeImpl::WriteSpliced(uint64_t offset_bytes, int pipe_fd,
                                                     uint64_t length_bytes) {
  // Enciphered bytes would need a buffer to be enciphered in.
  if (key_ != nullptr || !head_->CanSplice(offset_bytes, length_bytes) ||
      !BeginHeadWrite(offset_bytes, length_bytes)) {
    return std::nullopt;
  }
  absl::Status s = head_->SpliceWrite(offset_bytes, pipe_fd, length_bytes);
  EndHeadWrite(offset_bytes, length_bytes);
  gate_.ReaderUnlock();
  return s;
}

void VolumeImpl::Complete(VolumeIo& io, int result) {
  const std::span<std::byte> buffer = io.buffer;
  absl::Status status;
  if (result < 0) {
    status = io::ErrnoToStatus(-result, absl::StrCat(io.write ? "write" : "read", " head of ", id_,
                                                     " at ", io.offset_bytes));
  } else if (static_cast<size_t>(result) < buffer.size()) {  // Short: the rest, directly.
    const auto rest = buffer.subspan(static_cast<size_t>(result));
    status = io.write ? head_->Write(io.offset_bytes + result, rest)
                      : head_->Read(io.offset_bytes + result, rest);
  }
  if (io.write) {
    EndHeadWrite(io.offset_bytes, buffer.size());
  } else if (status.ok() && key_ != nullptr) {
    DecipherUnits(io.offset_bytes, buffer);
  }
  io.Done(std::move(status));
}

void VolumeImpl::EndHeadWrite(uint64_t offset_bytes, size_t length) {
  head_->NoteWritten(offset_bytes);
  EndQueuedWrite(offset_bytes >> chunk_shift_, (offset_bytes + length - 1) >> chunk_shift_);
}

absl::Status VolumeImpl::CopyUp(uint64_t chunk_index) {
  STRATA_ASSIGN_OR_RETURN(ChunkEntry entry, ResolveBase(chunk_index));
  const uint64_t start = chunk_index << chunk_shift_;
  const uint64_t length = ChunkLength(chunk_index);
  // Unowned head bytes may hold stale, unflushed data from before a crash: overwrite them all.
  if (!entry.has_value()) return head_->PunchHole(start, length);
  std::vector<std::byte> buffer(deps_.chunk_size_bytes);
  STRATA_RETURN_IF_ERROR(deps_.keys->ReadChunk(*deps_.chunks, *entry, buffer));
  return HeadWrite(start, std::span(buffer).first(length));
}

absl::Status VolumeImpl::PrepareForWrite(uint64_t chunk_index, bool covers_whole_chunk) {
  if (pending_count_.load(std::memory_order_acquire) > 0) {
    for (const std::shared_ptr<PendingSnapshot>& pending : PendingList()) {
      IngestChunkLocked(*pending,
                        chunk_index);  // Copy-before-write keeps the snapshot point in time.
    }
  }
  if (!covers_whole_chunk && !owned_.Test(chunk_index)) return CopyUp(chunk_index);
  return absl::OkStatus();
}

absl::Status VolumeImpl::Write(uint64_t offset_bytes, std::span<const std::byte> data, bool fua) {
  if (data.empty()) return CheckRange(offset_bytes, 0);
  {
    absl::ReaderMutexLock gate(&gate_);
    STRATA_RETURN_IF_ERROR(CheckRange(offset_bytes, data.size()));
    const uint64_t end = offset_bytes + data.size();
    const uint64_t first = offset_bytes >> chunk_shift_;
    const uint64_t last = (end - 1) >> chunk_shift_;
    StripeLocks locks(*this, first, last, /*exclusive=*/true);
    for (uint64_t c = first; c <= last; ++c) {
      const uint64_t start = c << chunk_shift_;
      const bool whole = offset_bytes <= start && end >= start + ChunkLength(c);
      STRATA_RETURN_IF_ERROR(PrepareForWrite(c, whole));
    }
    STRATA_RETURN_IF_ERROR(HeadWrite(offset_bytes, data));
    for (uint64_t c = first; c <= last; ++c) {
      owned_.Set(c);
      dirty_->Set(c);
    }
  }
  return fua ? Flush() : absl::OkStatus();
}

absl::Status VolumeImpl::ZeroRange(uint64_t offset_bytes, uint64_t length_bytes, bool keep_held) {
  absl::ReaderMutexLock gate(&gate_);
  STRATA_RETURN_IF_ERROR(CheckRange(offset_bytes, length_bytes));
  const uint64_t end = offset_bytes + length_bytes;
  const uint64_t first = offset_bytes >> chunk_shift_;
  const uint64_t last = (end - 1) >> chunk_shift_;
  StripeLocks locks(*this, first, last, /*exclusive=*/true);
  bool has_base = false;
  {
    absl::MutexLock lock(&mu_);
    has_base = !record_.last_snapshot_id.empty();
  }
  // The work follows the chunks that hold data, not the length, so discarding a whole large
  // volume is a hole punch and a few bitmap words. Pending snapshots first take the chunks
  // they still need (copy-before-write, as in PrepareForWrite).
  if (pending_count_.load(std::memory_order_acquire) > 0) {
    for (const std::shared_ptr<PendingSnapshot>& pending : PendingList()) {
      for (std::optional<uint64_t> c = pending->frozen->NextSet(first); c.has_value() && *c <= last;
           c = pending->frozen->NextSet(*c + 1)) {
        IngestChunkLocked(*pending, *c);
      }
    }
  }
  if (has_base || keep_held) {
    // Zeros must hide the snapshot beneath (or stay held): every chunk becomes the volume's
    // own, and a partly covered one is copied up first.
    for (const uint64_t c : {first, last}) {
      const uint64_t start = c << chunk_shift_;
      const bool whole = offset_bytes <= start && end >= start + ChunkLength(c);
      if (!whole && !owned_.Test(c)) STRATA_RETURN_IF_ERROR(CopyUp(c));
    }
    STRATA_RETURN_IF_ERROR(HeadZero(offset_bytes, length_bytes));
    owned_.SetRange(first, last);
    dirty_->SetRange(first, last);
    return absl::OkStatus();
  }
  // Nothing beneath (nor pending: a snapshot becomes the base when it starts): a chunk the
  // volume does not hold reads as zeros and stays so, and a wholly zeroed one is let go. Its
  // bit is persisted clear only by a Flush, after the hole punched in the head is durable.
  STRATA_RETURN_IF_ERROR(HeadZero(offset_bytes, length_bytes));
  for (std::optional<uint64_t> c = owned_.NextSet(first); c.has_value() && *c <= last;
       c = owned_.NextSet(*c + 1)) {
    const uint64_t start = *c << chunk_shift_;
    if (offset_bytes <= start && end >= start + ChunkLength(*c)) owned_.Clear(*c);
    dirty_->Set(*c);
  }
  return absl::OkStatus();
}

absl::Status VolumeImpl::Trim(uint64_t offset_bytes, uint64_t length_bytes) {
  if (length_bytes == 0) return CheckRange(offset_bytes, 0);
  return ZeroRange(offset_bytes, length_bytes, /*keep_held=*/false);
}

absl::Status VolumeImpl::WriteZeroes(uint64_t offset_bytes, uint64_t length_bytes, bool fua) {
  if (length_bytes == 0) return CheckRange(offset_bytes, 0);
  STRATA_RETURN_IF_ERROR(ZeroRange(offset_bytes, length_bytes, /*keep_held=*/true));
  return fua ? Flush() : absl::OkStatus();
}

absl::StatusOr<std::vector<AllocationExtent>> VolumeImpl::Allocation(uint64_t offset_bytes,
                                                                     uint64_t length_bytes,
                                                                     size_t max_extents) {
  absl::ReaderMutexLock gate(&gate_);
  STRATA_RETURN_IF_ERROR(CheckRange(offset_bytes, length_bytes));
  std::vector<AllocationExtent> out;
  const uint64_t end = offset_bytes + length_bytes;
  uint64_t lookups = 0;
  for (uint64_t pos = offset_bytes; pos < end && max_extents > 0;) {
    const uint64_t c = pos >> chunk_shift_;
    uint64_t chunk_end = std::min(end, (c + 1) << chunk_shift_);
    bool zero = false;
    if (!owned_.Test(c)) {
      bool has_base = false;
      {
        absl::MutexLock lock(&mu_);
        has_base = !record_.last_snapshot_id.empty();
      }
      if (has_base) {
        if (lookups++ == kAllocationLookupsPerCall && !out.empty()) break;
        STRATA_ASSIGN_OR_RETURN(ChunkEntry entry, ResolveBase(c));
        zero = !entry.has_value();
      } else {
        // No snapshot beneath: a hole up to the next chunk the volume holds, in one step.
        zero = true;
        const std::optional<uint64_t> next = owned_.NextSet(c);
        chunk_end = next.has_value() ? std::min(end, *next << chunk_shift_) : end;
      }
    }
    if (!AppendRun<&AllocationExtent::zero>(out, chunk_end - pos, zero, max_extents)) break;
    pos = chunk_end;
  }
  return out;
}

absl::StatusOr<bool> VolumeImpl::ChunkChanged(uint64_t chunk_index) {
  if (suspect_ == nullptr || !suspect_->Test(chunk_index)) return dirty_->Test(chunk_index);
  StripeLocks locks(*this, chunk_index, chunk_index, /*exclusive=*/true);
  if (!suspect_->Test(chunk_index)) return dirty_->Test(chunk_index);  // Compared meanwhile.
  // A pending snapshot may not resolve yet: keep the chunk counted as changed until it completes.
  if (pending_count_.load(std::memory_order_acquire) > 0) return true;
  const uint64_t length = ChunkLength(chunk_index);
  std::vector<std::byte> head(length);
  std::vector<std::byte> base(length);
  STRATA_RETURN_IF_ERROR(HeadRead(chunk_index << chunk_shift_, head));
  STRATA_RETURN_IF_ERROR(ReadUnowned(chunk_index, 0, base));
  const bool changed = std::memcmp(head.data(), base.data(), length) != 0;
  if (!changed) dirty_->Clear(chunk_index);
  suspect_->Clear(chunk_index);
  return changed;
}

absl::StatusOr<std::vector<ChangeExtent>> VolumeImpl::Changes(uint64_t offset_bytes,
                                                              uint64_t length_bytes,
                                                              size_t max_extents) {
  absl::ReaderMutexLock gate(&gate_);
  STRATA_RETURN_IF_ERROR(CheckRange(offset_bytes, length_bytes));
  std::vector<ChangeExtent> out;
  const uint64_t end = offset_bytes + length_bytes;
  bool has_base = false;
  {
    absl::MutexLock lock(&mu_);
    has_base = !record_.last_snapshot_id.empty();
  }
  if (!has_base) {
    if (length_bytes > 0 && max_extents > 0) out.push_back({length_bytes, true});
    return out;
  }
  for (uint64_t pos = offset_bytes; pos < end;) {
    const uint64_t c = pos >> chunk_shift_;
    bool changed = false;
    uint64_t run_end = std::min(end, (c + 1) << chunk_shift_);
    if (dirty_->Test(c)) {
      STRATA_ASSIGN_OR_RETURN(changed, ChunkChanged(c));
    } else {
      // Unchanged up to the next dirty chunk, in one step.
      const std::optional<uint64_t> next = dirty_->NextSet(c);
      run_end = next.has_value() ? std::min(end, *next << chunk_shift_) : end;
    }
    if (!AppendRun<&ChangeExtent::changed>(out, run_end - pos, changed, max_extents)) break;
    pos = run_end;
  }
  return out;
}

absl::Status VolumeImpl::Flush() {
  absl::MutexLock flush(&flush_mu_);
  std::vector<std::pair<uint64_t, std::string>> leaves;
  {
    absl::ReaderMutexLock gate(&gate_);
    // Copy the owned bits before syncing the head: a bit may be persisted only once the data
    // it vouches for is durable.
    leaves = owned_.TakeModifiedLeaves();
  }
  absl::Status status = head_->Sync();
  if (status.ok() && !leaves.empty()) {
    meta::WriteBatch batch;
    for (auto& [leaf, bytes] : leaves) batch.Put(meta::OwnedLeafKey(id_, leaf), std::move(bytes));
    status = deps_.catalog->Write(batch);
  }
  if (!status.ok()) {
    std::vector<uint64_t> indexes;
    for (const auto& [leaf, bytes] : leaves) indexes.push_back(leaf);
    absl::ReaderMutexLock gate(&gate_);
    owned_.MarkLeavesModified(indexes);
  }
  return status;
}

void VolumeImpl::Freeze(const std::shared_ptr<PendingSnapshot>& pending) {
  absl::MutexLock gate(&gate_);
  FreezeLocked(pending);
}

void VolumeImpl::set_attachment(const std::string& instance_id, const std::string& device,
                                uint64_t micros) {
  absl::MutexLock lock(&mu_);
  record_.attached_to = instance_id;
  record_.device = device;
  record_.attach_time_micros = micros;
}

void VolumeImpl::FreezeLocked(const std::shared_ptr<PendingSnapshot>& pending)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  // Writes queued in a ring are in the dirty set already: they land before it is frozen (none
  // can be queued while the gate is held).
  for (size_t i = 0; i < kStripeCount; ++i) WaitForQueuedWrites(i);
  pending->frozen = std::move(dirty_);
  dirty_ = std::make_unique<SparseBitmap>(chunk_count());
  suspect_.reset();
  absl::MutexLock lock(&mu_);
  pending_.push_back(pending);
  pending_count_.store(pending_.size(), std::memory_order_release);
  record_.last_snapshot_id = pending->record.id;
  base_ancestry_ = nullptr;
}

void VolumeImpl::Unfreeze(const std::shared_ptr<PendingSnapshot>& pending) {
  absl::MutexLock gate(&gate_);
  dirty_->Union(*pending->frozen);
  absl::MutexLock lock(&mu_);
  std::erase(pending_, pending);
  pending_count_.store(pending_.size(), std::memory_order_release);
  record_.last_snapshot_id = pending->record.parent_id;
  base_ancestry_ = nullptr;
}

void VolumeImpl::FinishPending(const PendingSnapshot* pending) {
  absl::MutexLock lock(&mu_);
  std::erase_if(pending_, [&](const auto& p) { return p.get() == pending; });
  pending_count_.store(pending_.size(), std::memory_order_release);
}

std::vector<std::shared_ptr<PendingSnapshot>> VolumeImpl::FailPending(
    const std::shared_ptr<PendingSnapshot>& pending) {
  std::vector<std::shared_ptr<PendingSnapshot>> failed;
  absl::ReaderMutexLock gate(&gate_);
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find(pending_.begin(), pending_.end(), pending);
    if (it == pending_.end()) return failed;
    failed.assign(it, pending_.end());
    pending_.erase(it, pending_.end());
    pending_count_.store(pending_.size(), std::memory_order_release);
    record_.last_snapshot_id = pending->record.parent_id;
    base_ancestry_ = nullptr;
  }
  // The failed snapshots' frozen chunks must reach the next snapshot: rescan all owned chunks.
  dirty_->Union(owned_);
  return failed;
}

void VolumeImpl::IngestChunk(PendingSnapshot& pending, uint64_t chunk_index) {
  absl::ReaderMutexLock gate(&gate_);
  StripeLocks locks(*this, chunk_index, chunk_index, /*exclusive=*/true);
  IngestChunkLocked(pending, chunk_index);
}

void VolumeImpl::IngestChunkLocked(PendingSnapshot& pending, uint64_t chunk_index) {
  if (!pending.frozen->Test(chunk_index)) return;
  const auto bytes = std::make_unique_for_overwrite<std::byte[]>(deps_.chunk_size_bytes);
  const std::span<std::byte> buffer(bytes.get(), deps_.chunk_size_bytes);
  const uint64_t start = chunk_index << chunk_shift_;
  // A chunk never written here (a volume whose domain differs from its snapshot's ingests
  // every chunk) is read through the snapshot.
  const bool owned = owned_.Test(chunk_index);
  const uint64_t filled = owned ? ChunkLength(chunk_index) : buffer.size();
  absl::Status status = owned ? HeadRead(start, buffer.first(filled))
                              : ReadThroughParent(pending, chunk_index, buffer);
  if (status.ok()) {
    // Bytes past the volume's size at freeze time are not part of the snapshot.
    const uint64_t frozen_size = pending.record.volume_size_bytes;
    const uint64_t keep = std::min<uint64_t>(
        filled, start >= frozen_size ? 0 : std::min<uint64_t>(buffer.size(), frozen_size - start));
    std::memset(buffer.data() + keep, 0, buffer.size() - keep);
    StoreIngested(pending, chunk_index, buffer);
  } else {
    absl::MutexLock lock(&pending.mu);
    if (pending.error.ok()) pending.error = status;
  }
  // Cleared only once the entry is recorded, so the ingest driver, which finishes when no bit
  // is left, never commits without it.
  pending.frozen->Clear(chunk_index);
  pending.ingested_count.fetch_add(1, std::memory_order_relaxed);
}

absl::Status VolumeImpl::ReadThroughParent(const PendingSnapshot& pending, uint64_t chunk_index,
                                           std::span<std::byte> out) {
  std::memset(out.data(), 0, out.size());
  if (pending.parent_ancestry == nullptr) return absl::OkStatus();
  STRATA_ASSIGN_OR_RETURN(ChunkEntry entry,
                          deps_.tree->Resolve(pending.record.tree, pending.parent_seq,
                                              pending.parent_ancestry, chunk_index));
  if (!entry.has_value()) return absl::OkStatus();
  return deps_.keys->ReadChunk(*deps_.chunks, *entry, out);
}

void VolumeImpl::StoreIngested(PendingSnapshot& pending, uint64_t chunk_index,
                               std::span<const std::byte> data) {
  auto fail = [&](const absl::Status& status) {
    absl::MutexLock lock(&pending.mu);
    if (pending.error.ok()) pending.error = status;
  };
  ChunkEntry entry;
  if (!IsAllZero(data)) {
    absl::StatusOr<chunk::ChunkKey> key = deps_.keys->PutChunk(*deps_.chunks, domain_, data);
    if (!key.ok()) return fail(key.status());
    entry = *key;
  }
  ChunkEntry parent;
  if (!pending.compare_with_parent) {
    absl::MutexLock lock(&pending.mu);
    pending.entries[chunk_index] = entry;
    if (entry.has_value()) pending.pinned.push_back(*entry);
    return;
  }
  if (pending.parent_ancestry != nullptr) {
    absl::StatusOr<ChunkEntry> resolved = deps_.tree->Resolve(
        pending.record.tree, pending.parent_seq, pending.parent_ancestry, chunk_index);
    if (!resolved.ok()) {
      if (entry.has_value()) deps_.chunks->Unpin(std::span(&*entry, 1));
      return fail(resolved.status());
    }
    parent = *resolved;
  }
  if (entry == parent) {  // Unchanged since the parent (dedup compared the bytes).
    if (entry.has_value()) deps_.chunks->Unpin(std::span(&*entry, 1));
    return;
  }
  absl::MutexLock lock(&pending.mu);
  pending.entries[chunk_index] = entry;
  if (entry.has_value()) pending.pinned.push_back(*entry);
}

bool VolumeImpl::Rebase(const std::string& new_last, const std::vector<uint64_t>& delta_chunks) {
  absl::ReaderMutexLock gate(&gate_);
  for (uint64_t c : delta_chunks) {
    if (c < owned_.bit_count() && !owned_.Test(c)) return false;
  }
  for (uint64_t c : delta_chunks) dirty_->Set(c);
  absl::MutexLock lock(&mu_);
  STRATA_CHECK(pending_.empty());
  record_.last_snapshot_id = new_last;
  base_ancestry_ = nullptr;
  return true;
}

absl::Status VolumeImpl::Grow(uint64_t new_size_bytes) {
  absl::MutexLock gate(&gate_);
  if (new_size_bytes < size_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(id_, ": volumes never shrink (", size_bytes(),
                                                   " to ", new_size_bytes, " bytes)"));
  }
  STRATA_RETURN_IF_ERROR(head_->Grow(new_size_bytes));
  const uint64_t chunks = ChunksFor(new_size_bytes, chunk_shift_);
  owned_.Resize(chunks);
  dirty_->Resize(chunks);
  if (suspect_ != nullptr) suspect_->Resize(chunks);
  size_bytes_.store(new_size_bytes, std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> VolumeImpl::Hydrate(uint64_t max_chunks) {
  uint64_t copied = 0;
  absl::ReaderMutexLock gate(&gate_);
  while (copied < max_chunks) {
    std::optional<uint64_t> c = owned_.NextClear(hydrate_cursor_);
    if (!c.has_value()) break;
    hydrate_cursor_ = *c + 1;
    StripeLocks locks(*this, *c, *c, /*exclusive=*/true);
    if (owned_.Test(*c)) continue;
    STRATA_RETURN_IF_ERROR(CopyUp(*c));
    owned_.Set(*c);  // Same content as the last snapshot: owned but not dirty.
    ++copied;
  }
  return copied;
}

}  // namespace strata::volume
