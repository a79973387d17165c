// Cluster: one librados client per store, connected with bounded timeouts.
#include "rados/cluster.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "io/errno.h"
#include "rados/librados.hpp"
#include "rados/pool_state.h"

namespace strata::rados {

absl::Status FromRados(int rc, absl::string_view context) {
  if (rc >= 0) return absl::OkStatus();
  switch (-rc) {
    case ECANCELED:
    case ERANGE:  // assert_version: the object changed since it was read.
    case EOVERFLOW:
      return absl::AbortedError(absl::StrCat(context, ": ", std::strerror(-rc)));
    case ETIMEDOUT:
    case ECONNREFUSED:
    case ENOTCONN:
    case ESHUTDOWN:
    case EAGAIN:
      return absl::UnavailableError(absl::StrCat(
          context, ": ", std::strerror(-rc), " (the Ceph cluster did not answer; retry later)"));
    default:  // Files and objects fail alike otherwise.
      return io::ErrnoToStatus(-rc, context);
  }
}

struct Cluster::State {
  librados::Rados rados;
  librados::IoCtx index;
  librados::IoCtx data;
};

Cluster::Cluster(CephBackendOptions options)
    : options_(std::move(options)), state_(std::make_unique<State>()) {}

absl::StatusOr<std::shared_ptr<Cluster>> Cluster::Connect(const CephBackendOptions& options) {
  if (options.pool.empty()) return absl::InvalidArgumentError("the RADOS backend needs a pool");
  std::shared_ptr<Cluster> cluster(new Cluster(options));
  librados::Rados& rados = cluster->state_->rados;
  const std::string who = absl::StrCat("client.", options.client_id);
  if (int rc = rados.init2(who.c_str(), "ceph", 0); rc < 0) {
    return FromRados(rc, absl::StrCat("ceph: cannot start a client as ", who));
  }
  const char* conf = options.conf_file.empty() ? nullptr : options.conf_file.c_str();
  if (int rc = rados.conf_read_file(conf); rc < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ceph: cannot read ",
                     conf == nullptr ? "the Ceph configuration ($CEPH_CONF or /etc/ceph/ceph.conf)"
                                     : options.conf_file,
                     ": ", std::strerror(-rc)));
  }
  (void)rados.conf_parse_env(nullptr);
  const std::string timeout = std::to_string(options.timeout_seconds);
  for (const char* key : {"client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"}) {
    if (int rc = rados.conf_set(key, timeout.c_str()); rc < 0) {
      return FromRados(rc, absl::StrCat("ceph: setting ", key));
    }
  }
  if (int rc = rados.connect(); rc < 0) {
    std::string mon_host;
    (void)rados.conf_get("mon_host", mon_host);
    return FromRados(rc, absl::StrCat("ceph: cannot connect as ", who, " to the monitors at ",
                                      mon_host.empty() ? "(none configured)" : mon_host, " within ",
                                      options.timeout_seconds, " s"));
  }
  const std::string data_pool = options.data_pool.empty() ? options.pool : options.data_pool;
  for (const auto& [name, ioctx] : {std::pair{options.pool, &cluster->state_->index},
                                    std::pair{data_pool, &cluster->state_->data}}) {
    if (int rc = rados.ioctx_create(name.c_str(), *ioctx); rc < 0) {
      if (rc == -ENOENT) {
        return absl::NotFoundError(absl::StrCat("ceph: pool ", name,
                                                " does not exist (create it: ceph osd pool "
                                                "create ",
                                                name, ")"));
      }
      return FromRados(rc, absl::StrCat("ceph: opening pool ", name));
    }
  }
  return cluster;
}

Cluster::~Cluster() {
  state_->index.close();
  state_->data.close();
  state_->rados.shutdown();
}

namespace {
inline constexpr char kClaimLock[] = "strata.node.";
}  // namespace

RegionClaim::~RegionClaim() { (void)pool_.Unlock(object_, lock_, cookie_); }

absl::StatusOr<std::unique_ptr<RegionClaim>> Cluster::Claim(const std::string& name_space,
                                                            const std::string& object,
                                                            const std::string& node_id,
                                                            const std::string& description) {
  Pool pool = IndexPool(name_space);
  const std::string lock = absl::StrCat(kClaimLock, node_id);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int rc = pool.LockExclusive(object, lock, node_id, description);
    if (rc == 0 || rc == -EEXIST) {  // EEXIST: this very client holds it already.
      return std::make_unique<RegionClaim>(std::move(pool), object, lock, node_id);
    }
    if (rc != -EBUSY) return FromRados(rc, absl::StrCat("claiming ", name_space));
    // This node's claim, left by a stop that did not release it: the data directory's lock
    // proves that process is gone (a node is its data directory: DIR/node-id).
    std::vector<Pool::Locker> lockers;
    if (int listed = pool.ListLockers(object, lock, &lockers); listed < 0) {
      return FromRados(listed, absl::StrCat("claiming ", name_space));
    }
    for (const Pool::Locker& locker : lockers) {
      (void)pool.BreakLock(object, lock, locker.client, locker.cookie);
    }
  }
  return absl::UnavailableError(absl::StrCat("claiming ", name_space, ": lock kept changing"));
}

namespace {

Pool OpenPool(const librados::IoCtx& pool, const std::string& name_space) {
  auto state = std::make_shared<PoolState>();
  state->ioctx.dup(pool);
  state->ioctx.set_namespace(name_space);
  state->name_space = name_space;
  return Pool(std::move(state));
}

}  // namespace

Pool Cluster::IndexPool(const std::string& name_space) const {
  return OpenPool(state_->index, name_space);
}

Pool Cluster::DataPool(const std::string& name_space) const {
  return OpenPool(state_->data, name_space);
}

std::string Cluster::ClientName() const {
  return "client." + std::to_string(state_->rados.get_instance_id());
}

std::string Cluster::ClientAddresses() const { return state_->rados.get_addrs(); }

int Cluster::Blocklist(const std::string& address, uint32_t expire_seconds) {
  if (int rc = state_->rados.blocklist_add(address, expire_seconds); rc < 0) return rc;
  return state_->rados.wait_for_latest_osdmap();
}

std::string Cluster::RegionNamespace(absl::string_view region) const {
  return absl::StrCat(options_.name_space, ".", region);
}

std::string Cluster::Describe() const {
  return absl::StrCat("rados (pool ", options_.pool, ", data pool ",
                      options_.data_pool.empty() ? options_.pool : options_.data_pool,
                      ", namespace ", options_.name_space, ", client.", options_.client_id,
                      ", conf ", options_.conf_file.empty() ? "$CEPH_CONF" : options_.conf_file,
                      options_.node_id.empty() ? "" : ", node ", options_.node_id, ")");
}

}  // namespace strata::rados
