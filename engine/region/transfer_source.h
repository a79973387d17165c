#pragma once
// The source side of the transfer protocol: serves a store's snapshots to a destination region
// on one connection (HELLO, then OPEN and GET requests), sending at the link model's rate and
// injecting its faults (docs/formats/transfer.md).

#include <memory>

#include "region/token_bucket.h"
#include "region/transfer_wire.h"
#include "strata/store.h"

namespace strata::transfer {

// Serves until the peer closes the connection or sends something malformed.
// Streams naming the same copy share one bucket of `buckets` (the copy's rate).
void ServeConnection(Store& store, SharedBuckets& buckets, std::unique_ptr<Connection> connection);

}  // namespace strata::transfer
