// Cross-region copy, the destination's side: admission (Start: the base to copy against, the
// link and region limits, CompletionDurationMinutes), the job's streams over the transfer
// protocol, landing verified chunks, the journal's progress, resume and finish. Why one file of
// ~760 lines: a job's state (CopyService::Job, below) is shared by every stage under one
// lock, and the stages read in the order a copy runs; the pieces with their own state are
// elsewhere (copy_journal.cc, transfer_source.cc, transfer_wire.cc, link_model.cc,
// token_bucket.cc).

#include "copy/copy_service.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <random>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "copy/transfer_messages.h"
#include "copy/transfer_source.h"
#include "image/image_records.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::copy {
namespace {

constexpr size_t kBatchChunks = 16;  // Chunks per GET.

// GETs a stream keeps outstanding: enough to fill its share of the link for a round trip (the
// bandwidth-delay product), so the round trip hides behind the transfer; counted in the bytes
// a chunk takes on the wire so far (compression shrinks them). At least 2.
size_t BatchesInFlight(const LinkModel& link, double wire_bytes_per_chunk) {
  const double stream_rate =
      static_cast<double>(link.bandwidth_bytes_per_second) / std::max<uint32_t>(1, link.streams);
  const double window = stream_rate * (link.rtt_ms + link.jitter_ms) / 1000.0;
  const double batch = std::max(1.0, kBatchChunks * wire_bytes_per_chunk);
  return std::clamp<size_t>(static_cast<size_t>(window / batch) + 2, 2, 256);
}
constexpr int kReceiveTimeoutSeconds = 30;

uint64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SleepMicros(uint64_t micros) {
  std::this_thread::sleep_for(std::chrono::microseconds(micros));
}

absl::StatusOr<int> ConnectTcp(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("peer address ", address, " is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", address));
  }
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", address, ": ", std::strerror(errno)));
  }
  return fd;
}

Hello MakeHello(const std::string& source_region, const std::string& account, const LinkModel& link,
                std::string copy_key = "", uint64_t seed = 0) {
  return Hello{.version = kProtocolVersion,
               .region = source_region,
               .account = account,
               .link = link,
               .copy_bytes_per_second = link.bandwidth_bytes_per_second,
               .copy_key = std::move(copy_key),
               .seed = seed};
}

// HELLO and OPEN on `c`; the manifest and its digest. An ERROR frame is the source's status;
// a lost connection, or an answer that is not a sound manifest, is kUnavailable (try again).
absl::StatusOr<std::pair<Manifest, std::string>> Negotiate(Connection& c, const Hello& hello,
                                                           const Open& open) {
  STRATA_RETURN_IF_ERROR(c.Send(FrameType::kHello, EncodeHello(hello)));
  STRATA_RETURN_IF_ERROR(c.Send(FrameType::kOpen, EncodeOpen(open)));
  STRATA_ASSIGN_OR_RETURN(Frame reply, c.Receive());
  if (reply.type == FrameType::kError) return DecodeError(reply.payload);
  absl::StatusOr<Manifest> manifest = reply.type == FrameType::kManifest
                                          ? DecodeManifest(reply.payload)
                                          : absl::DataLossError("not a manifest");
  if (!manifest.ok()) {
    return absl::UnavailableError(
        absl::StrCat("transfer: the source's answer to OPEN is not a sound manifest: ",
                     manifest.status().message()));
  }
  return std::make_pair(*std::move(manifest), ManifestDigest(reply.payload));
}

}  // namespace

struct CopyService::Job {
  Region* destination = nullptr;
  CrossRegionCopyRequest request;
  LinkModel link;
  uint64_t reserved = 0;  // Bytes per second promised to a time-based copy.
  uint64_t chunk_size = 0;
  uint64_t volume_size = 0;
  std::unique_ptr<Region::VolumePin> builder;
  TokenBucket* region_bucket = nullptr;
  std::string key;  // Names the copy to the source: its streams share one sender bucket.
  // Chunks landed and their bytes on the wire, for the streams' windows.
  std::atomic<uint64_t> landed_chunks{0};
  std::atomic<uint64_t> landed_wire_bytes{0};
  std::atomic<bool> stop{false};

  absl::Mutex mu;
  CopyRecord record ABSL_GUARDED_BY(mu);
  std::deque<uint64_t> todo ABSL_GUARDED_BY(mu);  // Chunks not yet requested.
  std::set<uint64_t> done ABSL_GUARDED_BY(mu);    // Chunks verified and written.
  bool reopen = false;  // Resumed after a restart: fetch the manifest first.
  uint64_t outstanding ABSL_GUARDED_BY(mu) = 0;  // Requested, not yet verified.
  absl::Status fatal ABSL_GUARDED_BY(mu);
  std::vector<Connection*> live ABSL_GUARDED_BY(mu);
  uint64_t last_save_micros ABSL_GUARDED_BY(mu) = 0;
};

CopyService::CopyService(Store& store, const StoreOptions& options, std::string journal_path)
    : store_(store),
      peers_(options.peer_regions),
      transfer_psk_file_(options.transfer_psk_file),
      links_(options.links),
      retry_window_ms_(options.copy_retry_window_ms),
      journal_(std::move(journal_path)) {}

CopyService::~CopyService() {
  stopped_ = true;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (const std::shared_ptr<Job>& job : jobs_) {
      job->stop = true;
      absl::MutexLock job_lock(&job->mu);
      for (Connection* c : job->live) c->Shutdown();
    }
  }
  // Jobs may still start serving threads while they wind down: join until none is left.
  for (;;) {
    std::vector<Worker> workers;
    {
      absl::MutexLock lock(&mu_);
      workers.swap(threads_);
    }
    if (workers.empty()) break;
    for (Worker& w : workers) w.thread.join();
  }
}

absl::Status CopyService::Load() {
  if (!transfer_psk_file_.empty()) {
    absl::StatusOr<std::unique_ptr<TransferTls>> tls = TransferTls::Load(transfer_psk_file_);
    if (!tls.ok()) return tls.status();
    tls_ = std::move(*tls);
  } else if (!peers_.empty()) {
    return absl::InvalidArgumentError(
        "peer regions need the transfer key shared with their stratad (--transfer-psk-file: "
        "psktool's IDENTITY:HEXKEY lines, the same file on both sides)");
  }
  STRATA_RETURN_IF_ERROR(journal_.Load());
  std::set<std::string> claimed;  // Snapshots of the copies resumed here.
  for (CopyRecord r : journal_.All()) {
    if (r.state != "pending") continue;
    // Resumable when its direct snapshot stayed open and its builder is still there.
    absl::StatusOr<Region*> destination = store_.GetRegion(r.destination_region);
    absl::StatusOr<SnapshotInfo> snapshot =
        destination.ok() ? (*destination)->DescribeSnapshot(r.snapshot_id)
                         : absl::StatusOr<SnapshotInfo>(destination.status());
    absl::StatusOr<std::unique_ptr<Region::VolumePin>> builder =
        snapshot.ok() && snapshot->state == SnapshotState::kPending
            ? (*destination)->PinVolume(r.builder_volume_id)
            : absl::StatusOr<std::unique_ptr<Region::VolumePin>>(
                  absl::FailedPreconditionError("not pending"));
    if (!builder.ok() || r.manifest_digest.empty()) {
      r.state = "error";
      r.message = "the destination stopped before the copy completed";
      r.end_micros = NowMicros();
      STRATA_RETURN_IF_ERROR(journal_.Put(r));
      continue;
    }
    auto job = std::make_shared<Job>();
    job->destination = *destination;
    job->request.source_region = r.source_region;
    job->request.source_snapshot_id = r.source_snapshot_id;
    job->request.request.owner = r.account;
    job->request.completion_minutes = r.completion_minutes;
    job->link = LinkFor(r.source_region, r.destination_region);
    job->builder = *std::move(builder);
    job->key = absl::StrCat(r.destination_region, "/", r.snapshot_id);
    job->reopen = true;
    {
      absl::MutexLock lock(&job->mu);
      for (const auto& [first, last] : r.done_runs) {
        for (uint64_t c = first; c <= last; ++c) job->done.insert(c);
      }
      ++r.retries;  // The restart counts as one.
      job->record = r;
    }
    STRATA_LOG(kInfo, "copy of ", r.source_snapshot_id, " into ", r.snapshot_id,
               " resumes: ", r.chunks_done, " of ", r.chunks_total, " chunks already here");
    claimed.insert(r.snapshot_id);
    absl::MutexLock lock(&mu_);
    jobs_.push_back(job);
    SpawnLocked([this, job] { RunJob(job); });
  }
  // A copy's snapshot survives a restart (its direct snapshot is resumable), but one that no
  // copy resumes would stay pending for ever: a crash between making it and journaling the
  // copy, or a journaled copy that cannot resume (marked failed above). Only copies make
  // resumable direct snapshots, and no other direct snapshot is open while the store opens, so
  // every one this node holds open that no resumed copy claims is such an orphan: it fails.
  for (const std::string& name : store_.ListRegions()) {
    absl::StatusOr<Region*> region = store_.GetRegion(name);
    if (!region.ok()) continue;
    for (const std::string& id : (*region)->OpenDirectSnapshots()) {
      if (claimed.contains(id)) continue;
      STRATA_LOG(kWarning, "copy into ", id, ": no copy resumes it after the stop; it fails");
      STRATA_RETURN_IF_ERROR((*region)->AbortDirectSnapshot(
          id, "the copy stopped and cannot resume; copy the snapshot again"));
    }
  }
  return absl::OkStatus();
}

void CopyService::SpawnLocked(std::function<void()> work) {
  // Reap the threads that finished, so a long-running store does not collect them.
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->finished->load()) {
      it->thread.join();
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
  auto finished = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([work = std::move(work), finished] {
    work();
    finished->store(true);
  });
  threads_.push_back({std::move(thread), std::move(finished)});
}

absl::StatusOr<std::pair<Manifest, std::string>> CopyService::FetchManifest(
    const std::string& source, const std::string& account, const LinkModel& link,
    const Open& open) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c, Connect(source));
  return Negotiate(*c, MakeHello(source, account, link), open);
}

absl::Status CopyService::Plan(Job& job, const Manifest& manifest) {
  job.chunk_size = manifest.chunk_size_bytes;
  job.volume_size = manifest.volume_size_bytes;
  for (const ChunkListing::Chunk& chunk : manifest.chunks) {
    if (chunk.zero) {  // Chunks that became zeros cross as manifest entries only.
      const uint64_t offset = chunk.index * job.chunk_size;
      STRATA_RETURN_IF_ERROR(
          job.builder->volume().Trim(offset, std::min(job.chunk_size, job.volume_size - offset)));
      continue;
    }
    absl::MutexLock lock(&job.mu);
    if (!job.done.contains(chunk.index)) job.todo.push_back(chunk.index);
  }
  return absl::OkStatus();
}

absl::Status CopyService::Reopen(Job& job) {
  Open open{.snapshot_id = job.request.source_snapshot_id};
  {
    absl::MutexLock lock(&job.mu);
    if (!job.record.base_source_snapshot.empty()) {
      open.base_candidates.push_back(job.record.base_source_snapshot);
    }
  }
  // The source may be restarting too: retry as a stream would.
  const uint64_t deadline = NowMicros() + retry_window_ms_ * 1000;
  absl::StatusOr<std::pair<Manifest, std::string>> fetched;
  for (uint64_t backoff = 50'000;; backoff = std::min<uint64_t>(backoff * 2, 2'000'000)) {
    fetched = FetchManifest(job.request.source_region, job.request.request.owner, job.link, open);
    if (fetched.ok() || !absl::IsUnavailable(fetched.status()) || NowMicros() > deadline ||
        job.stop) {
      break;
    }
    SleepMicros(backoff);
  }
  if (!fetched.ok()) return fetched.status();
  {
    absl::MutexLock lock(&job.mu);
    if (fetched->second != job.record.manifest_digest) {
      return absl::DataLossError("the source snapshot's manifest changed; the copy cannot resume");
    }
  }
  return Plan(job, fetched->first);  // Zero chunks are trimmed again: idempotent.
}

std::vector<std::string> CopyService::PeerRegions() const {
  std::vector<std::string> out;
  for (const auto& [name, address] : peers_) out.push_back(name);
  return out;
}

LinkModel CopyService::LinkFor(const std::string& from, const std::string& to) const {
  if (auto it = links_.find(absl::StrCat(from, ":", to)); it != links_.end()) return it->second;
  if (auto it = links_.find(""); it != links_.end()) return it->second;
  return LinkModel{};
}

void CopyService::ServeLocal(int fd) {
  auto connection = std::make_unique<Connection>(fd);
  connection->set_stop(&stopped_);
  ServeConnection(store_, sender_buckets_, std::move(connection), /*faults_allowed=*/true);
}

void CopyService::ServeRemote(int fd) {
  if (tls_ == nullptr) {
    STRATA_LOG(kWarning,
               "transfer: a peer connected, but this store has no --transfer-psk-file; "
               "refused");
    ::close(fd);
    return;
  }
  // A silent peer cannot hold the handshake (or the connection) forever.
  const timeval timeout{kReceiveTimeoutSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string identity;
  absl::StatusOr<SSL*> ssl = tls_->Accept(fd, &identity);
  if (!ssl.ok()) {
    STRATA_LOG(kWarning, "transfer: ", ssl.status().message());
    ::close(fd);
    return;
  }
  const timeval none{0, 0};  // Authenticated: as patient as a local connection.
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
  auto connection = std::make_unique<Connection>(fd, *ssl);
  connection->set_stop(&stopped_);
  ServeConnection(store_, sender_buckets_, std::move(connection), /*faults_allowed=*/false);
}

absl::StatusOr<std::unique_ptr<Connection>> CopyService::Connect(const std::string& source_region) {
  int fd = -1;
  if (auto peer = peers_.find(source_region); peer != peers_.end()) {
    STRATA_ASSIGN_OR_RETURN(fd, ConnectTcp(peer->second));
  } else {
    STRATA_RETURN_IF_ERROR(store_.GetRegion(source_region).status());
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      return absl::InternalError(absl::StrCat("socketpair: ", std::strerror(errno)));
    }
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      ::close(pair[0]);
      ::close(pair[1]);
      return absl::CancelledError("the store is stopping");
    }
    const int server_fd = pair[1];
    SpawnLocked([this, server_fd] { ServeLocal(server_fd); });
    fd = pair[0];
  }
  const timeval timeout{kReceiveTimeoutSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (peers_.contains(source_region)) {
    absl::StatusOr<SSL*> ssl = tls_->Connect(fd, source_region);
    if (!ssl.ok()) {
      ::close(fd);
      return ssl.status();
    }
    return std::make_unique<Connection>(fd, *ssl);
  }
  return std::make_unique<Connection>(fd);
}

TokenBucket& CopyService::RegionBucket(const std::string& region, uint64_t rate) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<TokenBucket>& bucket = region_buckets_[region];
  if (bucket == nullptr) bucket = std::make_unique<TokenBucket>(rate);
  return *bucket;
}

absl::StatusOr<SnapshotInfo> CopyService::Start(Region& destination,
                                                const CrossRegionCopyRequest& request) {
  const std::string& source = request.source_region;
  if (source == destination.name()) {
    return absl::InvalidArgumentError("a copy within one region is Region::CopySnapshot");
  }
  if (request.completion_minutes != 0 &&
      (request.completion_minutes < 15 || request.completion_minutes > 2880)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CompletionDurationMinutes is 15 to 2880, not ", request.completion_minutes));
  }
  auto job = std::make_shared<Job>();
  job->destination = &destination;
  job->request = request;
  job->link = LinkFor(source, destination.name());

  // Earlier copies of this source the destination still holds, newest first: the source
  // diffs against the first of the same lineage.
  std::map<std::string, std::string> copy_of;  // Source snapshot -> its copy here.
  Open open{.snapshot_id = request.source_snapshot_id, .count_skipped = true};
  std::vector<CopyRecord> earlier = journal_.All();
  for (auto it = earlier.rbegin(); it != earlier.rend() && open.base_candidates.size() < 64; ++it) {
    if (it->state != "completed" || it->destination_region != destination.name() ||
        it->source_region != source || copy_of.contains(it->source_snapshot_id)) {
      continue;
    }
    absl::StatusOr<SnapshotInfo> held = destination.DescribeSnapshot(it->snapshot_id);
    if (!held.ok() || held->state != SnapshotState::kCompleted) continue;
    copy_of[it->source_snapshot_id] = it->snapshot_id;
    open.base_candidates.push_back(it->source_snapshot_id);
  }

  STRATA_ASSIGN_OR_RETURN(auto fetched,
                          FetchManifest(source, request.request.owner, job->link, open));
  const Manifest& manifest = fetched.first;
  std::string base_copy;
  if (!manifest.base_snapshot_id.empty()) {
    auto it = copy_of.find(manifest.base_snapshot_id);
    if (it == copy_of.end())
      return absl::DataLossError("transfer: the source chose no base offered");
    base_copy = it->second;
  }
  uint64_t data_chunks = 0;
  for (const ChunkListing::Chunk& chunk : manifest.chunks) data_chunks += chunk.zero ? 0 : 1;

  // A time-based copy is admitted only if the link and the region can carry it in time.
  if (request.completion_minutes != 0) {
    const uint64_t bytes = data_chunks * manifest.chunk_size_bytes;
    const uint64_t needed = bytes / (uint64_t{request.completion_minutes} * 60) + 1;
    absl::MutexLock lock(&mu_);
    uint64_t available = job->link.bandwidth_bytes_per_second;
    if (job->link.region_bytes_per_second > 0) {
      const uint64_t reserved = reserved_[destination.name()];
      available = std::min(available, job->link.region_bytes_per_second -
                                          std::min(reserved, job->link.region_bytes_per_second));
    }
    if (needed > available) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the copy cannot complete in %u minutes: it needs %.1f MB/s and the link from %s "
          "gives %.1f MB/s",
          request.completion_minutes, needed / 1e6, source, available / 1e6));
    }
    job->reserved = needed;
    reserved_[destination.name()] += needed;
  }

  CreateSnapshotRequest snapshot_request = request.request;
  snapshot_request.encrypted = request.request.encrypted || manifest.encrypted;
  snapshot_request.survive_restart = true;  // The copy resumes after a restart.
  if (snapshot_request.description.empty()) {
    snapshot_request.description =
        absl::StrCat("[Copied ", request.source_snapshot_id, " from ", source, "]");
  }
  absl::StatusOr<Region::DirectSnapshot> direct =
      destination.StartDirectSnapshot(manifest.volume_size_bytes, base_copy, snapshot_request);
  if (direct.ok()) {
    absl::StatusOr<std::unique_ptr<Region::VolumePin>> pin =
        destination.PinVolume(direct->builder_volume_id);
    if (pin.ok()) {
      job->builder = *std::move(pin);
    } else {
      (void)destination.AbortDirectSnapshot(direct->snapshot.id, "the builder is gone");
      direct = pin.status();
    }
  }
  if (!direct.ok()) {
    Release(*job);
    return direct.status();
  }
  if (job->link.region_bytes_per_second > 0) {
    job->region_bucket = &RegionBucket(destination.name(), job->link.region_bytes_per_second);
  }
  job->key = absl::StrCat(destination.name(), "/", direct->snapshot.id);
  {
    absl::MutexLock lock(&job->mu);
    CopyRecord& r = job->record;
    r.destination_region = destination.name();
    r.snapshot_id = direct->snapshot.id;
    r.source_region = source;
    r.source_snapshot_id = request.source_snapshot_id;
    r.lineage = manifest.lineage;
    r.base_source_snapshot = manifest.base_snapshot_id;
    r.base_snapshot_id = base_copy;
    r.state = "pending";
    r.logical_bytes = manifest.volume_size_bytes;
    r.chunks_total = data_chunks;
    r.chunks_skipped = manifest.skipped_chunks;
    r.bytes_sent = EncodeManifest(manifest).size() + kFrameHeaderBytes;
    r.start_micros = NowMicros();
    r.completion_minutes = request.completion_minutes;
    r.rate_bytes_per_second = job->link.bandwidth_bytes_per_second;
    r.link = FormatLinkModel(job->link);
    r.account = request.request.owner;
    r.builder_volume_id = direct->builder_volume_id;
    r.manifest_digest = fetched.second;
  }
  absl::Status planned = journal_.Put([&] {
    absl::MutexLock lock(&job->mu);
    return job->record;
  }());
  if (planned.ok()) planned = Plan(*job, manifest);
  {
    absl::MutexLock lock(&mu_);
    if (planned.ok() && stopping_) planned = absl::CancelledError("the store is stopping");
    if (planned.ok()) {
      jobs_.push_back(job);
      SpawnLocked([this, job] { RunJob(job); });
    }
  }
  if (!planned.ok()) {
    Finish(*job, planned);  // Fails the snapshot.
    Release(*job);
    return planned;
  }
  return destination.DescribeSnapshot(direct->snapshot.id);
}

absl::StatusOr<ImageInfo> CopyService::DescribeSourceImage(const std::string& source_region,
                                                           const std::string& image_id,
                                                           const std::string& account) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c, Connect(source_region));
  STRATA_RETURN_IF_ERROR(
      c->Send(FrameType::kHello,
              EncodeHello(MakeHello(source_region, account, LinkFor(source_region, "")))));
  STRATA_RETURN_IF_ERROR(c->Send(FrameType::kDescribeImage, image_id));
  STRATA_ASSIGN_OR_RETURN(Frame reply, c->Receive());
  if (reply.type == FrameType::kError) return DecodeError(reply.payload);
  if (reply.type != FrameType::kImage) {
    return absl::DataLossError("transfer: the source answered DESCRIBE_IMAGE with no image");
  }
  return image::DecodeImage(reply.payload);
}

void CopyService::RunJob(std::shared_ptr<Job> job) {
  absl::Status status = job->reopen ? Reopen(*job) : absl::OkStatus();
  if (status.ok()) {
    std::vector<std::thread> streams;
    for (uint32_t i = 0; i < std::max<uint32_t>(1, job->link.streams); ++i) {
      streams.emplace_back([this, &job, i] { Stream(*job, static_cast<int>(i)); });
    }
    for (std::thread& t : streams) t.join();
    absl::MutexLock lock(&job->mu);
    status = job->fatal;
  }
  if (job->stop && (status.ok() || absl::IsCancelled(status) || absl::IsUnavailable(status))) {
    // The store is stopping: the copy stays pending (its snapshot survives the restart) and
    // resumes from what it recorded when the store opens again.
    SaveProgress(*job, /*force=*/true);
    job->builder.reset();
  } else {
    Finish(*job, status);
  }
  Release(*job);
  absl::MutexLock lock(&mu_);
  jobs_.erase(std::find(jobs_.begin(), jobs_.end(), job));
}

void CopyService::Release(Job& job) {
  absl::MutexLock lock(&mu_);
  reserved_[job.destination->name()] -= job.reserved;
  job.reserved = 0;
}

void CopyService::Stream(Job& job, int stream_index) {
  const uint64_t window_micros = retry_window_ms_ * 1000;
  uint64_t failing_since = 0;
  uint64_t backoff_micros = 50'000;
  std::mt19937_64 jitter_random(static_cast<uint64_t>(stream_index) * 7919 + NowMicros());
  for (uint32_t attempt = 0;; ++attempt) {
    if (job.stop) return;
    {
      absl::MutexLock lock(&job.mu);
      if (!job.fatal.ok() || (job.todo.empty() && job.outstanding == 0)) return;
    }
    // GETs sent on this connection, oldest first: the chunks each still owes and when its
    // reply may arrive at the earliest (the round trip).
    struct Batch {
      std::set<uint64_t> owed;
      uint64_t due_micros = 0;
    };
    std::deque<Batch> in_flight;
    absl::Status lost = [&]() -> absl::Status {
      STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c, Connect(job.request.source_region));
      {
        absl::MutexLock lock(&job.mu);
        job.live.push_back(c.get());
      }
      absl::Cleanup unregister = [&] {
        absl::MutexLock lock(&job.mu);
        job.live.erase(std::find(job.live.begin(), job.live.end(), c.get()));
        job.record.bytes_sent += c->bytes_received();
      };
      if (job.stop) return absl::CancelledError("stopping");
      STRATA_RETURN_IF_ERROR(OpenStream(job, *c, (uint64_t{attempt} << 8) + stream_index + 1));
      failing_since = 0;
      backoff_micros = 50'000;
      std::uniform_int_distribution<uint64_t> jitter(0, uint64_t{job.link.jitter_ms} * 1000);
      for (;;) {
        const uint64_t landed = job.landed_chunks.load();
        const size_t depth = BatchesInFlight(
            job.link, landed == 0 ? static_cast<double>(job.chunk_size)
                                  : static_cast<double>(job.landed_wire_bytes.load()) / landed);
        if (job.stop) return absl::CancelledError("stopping");
        // Keep GETs outstanding so the round trip overlaps the transfer.
        while (in_flight.size() < depth) {
          std::vector<uint64_t> batch;
          {
            absl::MutexLock lock(&job.mu);
            while (!job.todo.empty() && batch.size() < kBatchChunks) {
              batch.push_back(job.todo.front());
              job.todo.pop_front();
            }
            job.outstanding += batch.size();
          }
          if (batch.empty()) break;
          in_flight.push_back(
              {std::set<uint64_t>(batch.begin(), batch.end()),
               NowMicros() + uint64_t{job.link.rtt_ms} * 1000 + jitter(jitter_random)});
          STRATA_RETURN_IF_ERROR(c->Send(FrameType::kGet, EncodeGet(batch)));
        }
        if (in_flight.empty()) {
          absl::MutexLock lock(&job.mu);
          if (job.outstanding == 0 || !job.fatal.ok()) return absl::OkStatus();
          // Other streams hold the last chunks: wait for them, or for chunks they give back.
          job.mu.AwaitWithTimeout(absl::Condition(
                                      +[](Job* j) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                        return !j->todo.empty() || j->outstanding == 0;
                                      },
                                      &job),
                                  absl::Milliseconds(100));
          continue;
        }
        STRATA_ASSIGN_OR_RETURN(Frame frame, c->Receive());
        Batch& front = in_flight.front();
        if (const uint64_t now = NowMicros(); now < front.due_micros) {
          SleepMicros(front.due_micros - now);  // A reply cannot beat the round trip.
        }
        front.due_micros = 0;
        if (job.region_bucket != nullptr) {
          job.region_bucket->Acquire(frame.payload.size() + kFrameHeaderBytes, &job.stop);
        }
        if (frame.type == FrameType::kBatchEnd) {
          Requeue(job, front.owed);
          in_flight.pop_front();
          continue;
        }
        if (frame.type == FrameType::kError) return DecodeError(frame.payload);
        if (frame.type != FrameType::kChunk) {
          return absl::DataLossError("transfer: an unexpected frame");
        }
        absl::StatusOr<ChunkFrame> chunk = DecodeChunk(frame.payload);
        if (!chunk.ok() || front.owed.erase(chunk->index) == 0) {
          return absl::DataLossError("transfer: a chunk frame that was not asked for");
        }
        job.landed_chunks.fetch_add(1);
        job.landed_wire_bytes.fetch_add(frame.payload.size() + kFrameHeaderBytes);
        STRATA_RETURN_IF_ERROR(Land(job, *chunk));
        SaveProgress(job, /*force=*/false);
      }
    }();
    // The connection ended: chunks it still owed go back to the queue.
    for (const Batch& batch : in_flight) Requeue(job, batch.owed);
    {
      absl::MutexLock lock(&job.mu);
      if (lost.ok() || !job.fatal.ok()) return;
      ++job.record.retries;
    }
    SaveProgress(job, /*force=*/true);
    if (job.stop) return;
    const uint64_t now = NowMicros();
    if (failing_since == 0) failing_since = now;
    if (now - failing_since > window_micros) {
      absl::MutexLock lock(&job.mu);
      if (job.fatal.ok()) {
        job.fatal = absl::UnavailableError(
            absl::StrCat("region ", job.request.source_region, " was unreachable for ",
                         retry_window_ms_ / 1000, " s: ", lost.message()));
      }
      return;
    }
    STRATA_LOG(kInfo, "copy of ", job.request.source_snapshot_id, ", stream ", stream_index,
               ": reconnecting after: ", lost.message());
    SleepMicros(backoff_micros);
    backoff_micros = std::min<uint64_t>(backoff_micros * 2, 2'000'000);
  }
}

absl::Status CopyService::OpenStream(Job& job, Connection& c, uint64_t seed) {
  Open open{.snapshot_id = job.request.source_snapshot_id};
  std::string digest;
  {
    absl::MutexLock lock(&job.mu);
    if (!job.record.base_source_snapshot.empty()) {
      open.base_candidates.push_back(job.record.base_source_snapshot);
    }
    digest = job.record.manifest_digest;
  }
  absl::StatusOr<std::pair<Manifest, std::string>> negotiated = Negotiate(
      c, MakeHello(job.request.source_region, job.request.request.owner, job.link, job.key, seed),
      open);
  if (negotiated.ok() && negotiated->second == digest) return absl::OkStatus();
  if (!negotiated.ok() && absl::IsUnavailable(negotiated.status())) return negotiated.status();
  // The snapshot went away, is no longer shared, or changed: the copy cannot go on.
  const absl::Status fatal =
      negotiated.ok()
          ? absl::DataLossError("the source snapshot's manifest changed; the copy cannot resume")
          : negotiated.status();
  absl::MutexLock lock(&job.mu);
  job.fatal = fatal;
  return fatal;
}

absl::Status CopyService::Land(Job& job, const ChunkFrame& chunk) {
  const uint64_t offset = chunk.index * job.chunk_size;
  const uint64_t length = std::min(job.chunk_size, job.volume_size - offset);
  absl::StatusOr<std::string> raw = UnpackChunk(chunk, length);
  if (!raw.ok() || raw->size() != length) {
    absl::MutexLock lock(&job.mu);
    ++job.record.retries;  // Damaged in flight: asked for again, never written.
    job.todo.push_back(chunk.index);
    --job.outstanding;
    return absl::OkStatus();
  }
  absl::Status written = job.builder->volume().Write(
      offset, std::span(reinterpret_cast<const std::byte*>(raw->data()), raw->size()));
  absl::MutexLock lock(&job.mu);
  if (!written.ok()) {
    job.fatal = written;
    job.todo.push_back(chunk.index);
    --job.outstanding;
    return written;
  }
  --job.outstanding;
  job.done.insert(chunk.index);
  job.record.chunks_done = job.done.size();
  job.record.changed_bytes += length;
  job.destination->ReportDirectSnapshotProgress(
      job.record.snapshot_id, static_cast<int>(job.record.chunks_done * 100 /
                                               std::max<uint64_t>(1, job.record.chunks_total)));
  return absl::OkStatus();
}

void CopyService::Requeue(Job& job, const std::set<uint64_t>& owed) {
  absl::MutexLock lock(&job.mu);
  for (uint64_t index : owed) job.todo.push_back(index);
  job.outstanding -= owed.size();
}

void CopyService::SaveProgress(Job& job, bool force) {
  CopyRecord record;
  {
    absl::MutexLock lock(&job.mu);
    const uint64_t now = NowMicros();
    if (!force && now - job.last_save_micros < 1'000'000) return;
    job.last_save_micros = now;
    // The counters and the done set together: what a resumed copy starts from.
    record = job.record;
    record.done_runs.clear();
    for (uint64_t c : job.done) {
      if (!record.done_runs.empty() && record.done_runs.back().second + 1 == c) {
        record.done_runs.back().second = c;
      } else {
        record.done_runs.emplace_back(c, c);
      }
    }
  }
  // Those chunks were written before the copy above was taken: once flushed, they may count.
  if (job.builder == nullptr || !job.builder->volume().Flush().ok()) return;
  (void)journal_.Put(record);
}

void CopyService::Finish(Job& job, const absl::Status& status) {
  job.builder.reset();
  std::string id;
  {
    absl::MutexLock lock(&job.mu);
    id = job.record.snapshot_id;
    job.record.transfer_micros = NowMicros() - job.record.start_micros;
  }
  absl::Status result = status.ok() ? job.destination->CompleteDirectSnapshot(id) : status;
  if (result.ok()) {
    // The ingest stores the arrived chunks; the copy is complete when it is.
    absl::StatusOr<SnapshotInfo> done = job.destination->WaitForSnapshot(id, 24 * 3600 * 1000);
    if (!done.ok()) {
      result = done.status();
    } else if (done->state != SnapshotState::kCompleted) {
      result = absl::InternalError(done->state_message);
    }
  } else {
    (void)job.destination->AbortDirectSnapshot(id, std::string(result.message()));
  }
  absl::MutexLock lock(&job.mu);
  job.record.state = result.ok() ? "completed" : "error";
  job.record.done_runs.clear();  // Resume state, no longer needed.
  job.record.message = result.ok() ? "" : std::string(result.message());
  job.record.end_micros = NowMicros();
  if (!result.ok()) {
    STRATA_LOG(kWarning, "copy of ", job.record.source_snapshot_id, " into ", id,
               " failed: ", result.message());
  }
  (void)journal_.Put(job.record);
}

}  // namespace strata::copy
