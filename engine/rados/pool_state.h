#pragma once
// What a Pool holds: an I/O context on a pool, set to a namespace. Included only by
// engine/rados/*.cc (C++17, with librados).

#include <string>

#include "rados/librados.hpp"

namespace strata::rados {

struct PoolState {
  librados::IoCtx ioctx;  // Thread-safe for concurrent operations.
  std::string name_space;
};

}  // namespace strata::rados
