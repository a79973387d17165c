#include "qemu_hypervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace strata::vm {
namespace {

std::string FindInPath(const std::string& binary) {
  if (binary.find('/') != std::string::npos) return access(binary.c_str(), X_OK) == 0 ? binary : "";
  const char* path = getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir, "/", binary);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// KVM with hardware virtualization: /dev/kvm opens and the CPU has VMX or SVM. (A /dev/kvm
// without them, as PVM's in some nested sandboxes, does not run ordinary guest kernels.)
bool HardwareKvm() {
  const int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  close(fd);
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    for (absl::string_view flag : absl::StrSplit(line, ' ')) {
      if (flag == "vmx" || flag == "svm") return true;
    }
    return false;
  }
  return false;
}

// Asks the guest to power off: QMP's system_powerdown (an ACPI power button press).
void QmpPowerdown(const std::string& socket_path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    close(fd);
    return;
  }
  memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
  timeval timeout{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    char buf[4096];
    (void)!read(fd, buf, sizeof(buf));  // Greeting.
    const std::string caps = "{\"execute\":\"qmp_capabilities\"}\n";
    (void)!write(fd, caps.data(), caps.size());
    (void)!read(fd, buf, sizeof(buf));
    const std::string down = "{\"execute\":\"system_powerdown\"}\n";
    (void)!write(fd, down.data(), down.size());
    (void)!read(fd, buf, sizeof(buf));
  }
  close(fd);
}

}  // namespace

absl::StatusOr<std::unique_ptr<QemuHypervisor>> QemuHypervisor::Create(QemuOptions options) {
  const std::string binary = FindInPath(options.qemu_binary);
  if (binary.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(options.qemu_binary, " is not installed: instances run without VMs"));
  }
  options.qemu_binary = binary;
  std::string accel = options.accel;
  if (accel == "auto") accel = HardwareKvm() ? "kvm" : "tcg";
  if (accel != "kvm" && accel != "tcg") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown accelerator \"", options.accel, "\": use kvm, tcg or auto"));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", options.state_dir, ": ", ec.message()));
  return std::unique_ptr<QemuHypervisor>(new QemuHypervisor(std::move(options), accel));
}

QemuHypervisor::~QemuHypervisor() { StopAll(); }

void QemuHypervisor::StopAll() {
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, vm] : vms_) ids.push_back(id);
  }
  for (const std::string& id : ids) (void)Stop(id, /*force=*/true);
}

std::string QemuHypervisor::name() const {
  return absl::StrCat("qemu-system-x86_64 (", accel_, ")");
}

std::string QemuHypervisor::InstanceDir(const std::string& instance_id) const {
  return absl::StrCat(options_.state_dir, "/", instance_id);
}

absl::Status QemuHypervisor::Start(const Machine& machine, ExitFn on_exit) {
  {
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(machine.instance_id);
    if (it != vms_.end() && !it->second->exited) {
      return absl::FailedPreconditionError(absl::StrCat(machine.instance_id, " is running"));
    }
  }
  if (machine.volume_ids.empty()) {
    return absl::FailedPreconditionError("the instance has no volume to boot from");
  }
  const std::string dir = InstanceDir(machine.instance_id);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", ec.message()));
  const std::string console = dir + "/console.log";
  const std::string qmp = dir + "/qmp.sock";
  std::filesystem::remove(qmp, ec);
  // The console keeps every boot's output, as EC2's does across stops and starts.
  std::vector<std::string> args = {options_.qemu_binary,
                                   "-name",
                                   machine.instance_id,
                                   "-accel",
                                   accel_,
                                   "-m",
                                   absl::StrCat(machine.type.memory_mib),
                                   "-smp",
                                   absl::StrCat(std::min(machine.type.vcpus, 2)),
                                   "-nodefaults",
                                   "-display",
                                   "none",
                                   "-nic",
                                   "none",
                                   "-chardev",
                                   absl::StrCat("file,id=console,path=", console, ",append=on"),
                                   "-serial",
                                   "chardev:console",
                                   "-qmp",
                                   absl::StrCat("unix:", qmp, ",server=on,wait=off"),
                                   "-no-reboot"};
  for (size_t i = 0; i < machine.volume_ids.size(); ++i) {
    args.push_back("-drive");
    args.push_back(absl::StrCat("file=nbd:unix:", options_.nbd_socket,
                                ":exportname=", machine.volume_ids[i],
                                ",format=raw,if=virtio,cache=none", i == 0 ? ",index=0" : ""));
  }
  if (!machine.user_data.empty()) {
    const std::string user_data = dir + "/user-data";
    std::ofstream(user_data, std::ios::binary | std::ios::trunc) << machine.user_data;
    args.push_back("-fw_cfg");
    args.push_back(absl::StrCat("name=opt/strata/user-data,file=", user_data));
  }
  auto vm = std::make_unique<Vm>();
  Vm* raw = vm.get();
  std::thread old_watcher;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = vms_.find(machine.instance_id); it != vms_.end()) {
      old_watcher = std::move(it->second->watcher);
    }
    vms_[machine.instance_id] = std::move(vm);
    // The watcher forks QEMU itself: PR_SET_PDEATHSIG follows the thread that forked, so
    // that thread must live as long as the VM.
    raw->watcher = std::thread(&QemuHypervisor::Watch, this, machine.instance_id, std::move(args),
                               dir + "/qemu.log", std::move(on_exit));
    mu_.Await(absl::Condition(
        +[](Vm* v) { return v->pid != -1 || v->exited; }, raw));
  }
  if (old_watcher.joinable()) old_watcher.join();
  return absl::OkStatus();
}

void QemuHypervisor::Watch(const std::string& instance_id, std::vector<std::string> args,
                           const std::string& log, ExitFn on_exit) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    // The VM must not outlive stratad (its disks are stratad's exports).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    const int in = open("/dev/null", O_RDONLY);
    if (out >= 0) {
      dup2(out, 1);
      dup2(out, 2);
    }
    if (in >= 0) dup2(in, 0);
    setpgid(0, 0);
    execv(argv[0], argv.data());
    _exit(127);
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(instance_id);
    if (it != vms_.end()) {
      it->second->pid = pid;
      if (pid < 0) it->second->exited = true;
    }
  }
  std::string reason = absl::StrCat("fork failed: ", strerror(errno));
  bool clean = false;
  if (pid > 0) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    reason = WIFEXITED(status) ? absl::StrCat("QEMU exited with status ", WEXITSTATUS(status))
                               : absl::StrCat("QEMU ended by signal ", WTERMSIG(status));
    if (!clean) {  // Why, in QEMU's words: the end of its log.
      std::ifstream in(log);
      std::stringstream text;
      text << in.rdbuf();
      const std::string tail =
          text.str().substr(text.str().size() > 300 ? text.str().size() - 300 : 0);
      absl::StrAppend(&reason, ": ", tail);
    }
  }
  if (on_exit) on_exit(instance_id, clean, reason);
  absl::MutexLock lock(&mu_);
  auto it = vms_.find(instance_id);
  if (it != vms_.end() && it->second->pid == pid) it->second->exited = true;
  exited_cv_.SignalAll();
}

bool QemuHypervisor::WaitExited(const std::string& instance_id, int seconds) {
  const absl::Time deadline = absl::Now() + absl::Seconds(seconds);
  absl::MutexLock lock(&mu_);
  for (;;) {
    auto it = vms_.find(instance_id);
    if (it == vms_.end() || it->second->exited) return true;
    if (exited_cv_.WaitWithDeadline(&mu_, deadline)) {
      it = vms_.find(instance_id);
      return it == vms_.end() || it->second->exited;
    }
  }
}

absl::Status QemuHypervisor::Stop(const std::string& instance_id, bool force) {
  pid_t pid = -1;
  {
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(instance_id);
    if (it == vms_.end()) return absl::OkStatus();
    if (!it->second->exited) pid = it->second->pid;
  }
  if (pid > 0) {
    bool done = false;
    if (!force) {
      QmpPowerdown(InstanceDir(instance_id) + "/qmp.sock");
      done = WaitExited(instance_id, options_.stop_grace_seconds);
    }
    if (!done) {
      kill(pid, SIGTERM);  // QEMU flushes its disks and quits.
      if (!WaitExited(instance_id, 5)) {
        kill(pid, SIGKILL);
        WaitExited(instance_id, 10);
      }
    }
  }
  std::thread watcher;
  {
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(instance_id);
    if (it != vms_.end()) {
      watcher = std::move(it->second->watcher);
      vms_.erase(it);
    }
  }
  if (watcher.joinable()) watcher.join();
  return absl::OkStatus();
}

absl::StatusOr<std::string> QemuHypervisor::Console(const std::string& instance_id) {
  std::ifstream in(InstanceDir(instance_id) + "/console.log", std::ios::binary);
  if (!in) return std::string();
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace strata::vm
