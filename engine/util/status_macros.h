#pragma once
// Status propagation and invariant checks. Debian 12's abseil (20220623) lacks these macros.

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define STRATA_CONCAT_INNER_(a, b) a##b
#define STRATA_CONCAT_(a, b) STRATA_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define STRATA_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status strata_status_ = (expr);          \
    if (!strata_status_.ok()) return strata_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, else assigns the value
// to `lhs`, which may be a declaration.
#define STRATA_ASSIGN_OR_RETURN(lhs, rexpr) \
  STRATA_ASSIGN_OR_RETURN_IMPL_(STRATA_CONCAT_(strata_statusor_, __LINE__), lhs, rexpr)
#define STRATA_ASSIGN_OR_RETURN_IMPL_(var, lhs, rexpr) \
  auto var = (rexpr);                                  \
  if (!var.ok()) return std::move(var).status();       \
  lhs = std::move(var).value()

// Always-on invariant check: a failure means wrong data would follow, so the process stops.
#define STRATA_CHECK(cond)                                                                 \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: STRATA_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

// Checks that a status is OK; for calls whose failure is a bug.
#define STRATA_CHECK_OK(expr)                                                         \
  do {                                                                                \
    ::absl::Status strata_status_ = (expr);                                           \
    if (!strata_status_.ok()) {                                                       \
      std::fprintf(stderr, "%s:%d: STRATA_CHECK_OK failed: %s\n", __FILE__, __LINE__, \
                   strata_status_.ToString().c_str());                                \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)
