#include "util/shared_section.h"

namespace strata::util {
namespace {

class SoleProcessSection final : public SharedSection {
 public:
  absl::StatusOr<SharedHold> Enter() override { return SharedHold(); }
  uint64_t foreign_changes() const override { return 0; }
};

}  // namespace

SharedSection& SoleProcess() {
  static SoleProcessSection* const section = new SoleProcessSection();
  return *section;
}

}  // namespace strata::util
