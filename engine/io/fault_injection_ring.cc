// FaultInjectionRing: the faulty operation still goes through the wrapped ring (with no bytes, or
// half of them), so its completion arrives from Wait in order with the others.

#include "strata/fault_injection_ring.h"

namespace strata {
namespace {

// Completes the caller's operation with the injected result instead of the real one.
class FaultOp final : public IoRing::Op {
 public:
  FaultOp(IoRing::Op* op, RingFault fault) : op_(op), fault_(fault) {}
  void Finish(int result) override {
    IoRing::Op* op = op_;
    const int injected = fault_.error != 0 ? -fault_.error : result;
    delete this;
    op->Finish(injected);
  }

 private:
  IoRing::Op* const op_;
  const RingFault fault_;
};

// The bytes a faulty operation really transfers.
size_t Transferred(const RingFault& fault, size_t bytes) {
  return fault.error != 0 ? 0 : bytes / 2 / 512 * 512;
}

}  // namespace

const RingFault* FaultInjectionRing::Next() {
  ++operations_;
  if (countdown_ < 0) return nullptr;
  if (countdown_-- > 0) return nullptr;
  return &fault_;
}

bool FaultInjectionRing::QueueRead(int fd, std::span<std::byte> out, uint64_t offset, Op* op) {
  const RingFault* fault = Next();
  if (fault == nullptr) return base_->QueueRead(fd, out, offset, op);
  auto* wrapped = new FaultOp(op, *fault);
  if (base_->QueueRead(fd, out.first(Transferred(*fault, out.size())), offset, wrapped)) {
    return true;
  }
  delete wrapped;
  countdown_ = 0;  // Not queued: the next one gets the fault.
  return false;
}

bool FaultInjectionRing::QueueWrite(int fd, std::span<const std::byte> data, uint64_t offset,
                                    Op* op) {
  const RingFault* fault = Next();
  if (fault == nullptr) return base_->QueueWrite(fd, data, offset, op);
  auto* wrapped = new FaultOp(op, *fault);
  if (base_->QueueWrite(fd, data.first(Transferred(*fault, data.size())), offset, wrapped)) {
    return true;
  }
  delete wrapped;
  countdown_ = 0;
  return false;
}

}  // namespace strata
