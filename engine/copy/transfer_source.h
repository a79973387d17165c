#pragma once
// The source side of the transfer protocol: serves a store's snapshots to a destination region
// on one connection (HELLO, then OPEN and GET requests), sending at the link model's rate and
// injecting its faults (docs/formats/transfer.md).

#include <memory>

#include "copy/token_bucket.h"
#include "copy/transfer_wire.h"
#include "strata/store.h"

namespace strata::copy {

// Serves until the peer closes the connection or sends something malformed.
// Streams naming the same copy share one bucket of `buckets` (the copy's rate). The HELLO's
// fault rates (corrupt, drop) apply only when `faults_allowed`: copies within this process,
// whose link model is this process's own configuration; a peer process cannot set them.
void ServeConnection(Store& store, SharedBuckets& buckets, std::unique_ptr<Connection> connection,
                     bool faults_allowed);

}  // namespace strata::copy
