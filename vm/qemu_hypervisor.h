#pragma once
// QemuHypervisor: runs each instance as a qemu-system-x86_64 process whose disks are the
// instance's volumes over NBD (virtio, in mapping order), with the serial console in a file,
// UserData in fw_cfg (opt/strata/user-data) and no network device. A watcher thread per VM
// reports its exit; stopping asks the guest to power off (ACPI over QMP), then ends QEMU.

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "strata/image.h"

namespace strata::vm {

struct QemuOptions {
  std::string qemu_binary = "qemu-system-x86_64";
  // "kvm", "tcg", or "auto" (kvm when /dev/kvm opens and the CPU has VMX or SVM, else tcg).
  std::string accel = "auto";
  // Where QEMU reaches the exports: a unix socket path of stratad's NBD server.
  std::string nbd_socket;
  // Per-instance files (console.log, qemu.log, qmp.sock, user-data) go in DIR/ID/.
  std::string state_dir;
  // How long a graceful stop waits for the guest to power off before QEMU is ended.
  int stop_grace_seconds = 5;
};

class QemuHypervisor final : public Hypervisor {
 public:
  // kFailedPrecondition when the QEMU binary is not installed.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<QemuHypervisor>> Create(QemuOptions options);
  // Ends every VM (as a stop with force) and waits for their watchers.
  ~QemuHypervisor() override;

  std::string name() const override;
  absl::Status Start(const Machine& machine, ExitFn on_exit) override;
  absl::Status Stop(const std::string& instance_id, bool force) override;
  absl::StatusOr<std::string> Console(const std::string& instance_id) override;
  // Ends every VM now (stratad's shutdown, before the NBD server stops).
  void StopAll();

 private:
  struct Vm {
    pid_t pid = -1;
    std::thread watcher;
    bool exited = false;
  };
  explicit QemuHypervisor(QemuOptions options, std::string accel)
      : options_(std::move(options)), accel_(std::move(accel)) {}
  std::string InstanceDir(const std::string& instance_id) const;
  // Runs QEMU with `args` (output to `log`) and waits for it; then calls `on_exit`.
  void Watch(const std::string& instance_id, std::vector<std::string> args, const std::string& log,
             ExitFn on_exit);
  // Waits up to `seconds` for the VM to exit; true if it did.
  bool WaitExited(const std::string& instance_id, int seconds);

  const QemuOptions options_;
  const std::string accel_;
  absl::Mutex mu_;
  absl::CondVar exited_cv_;
  std::map<std::string, std::unique_ptr<Vm>> vms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::vm
