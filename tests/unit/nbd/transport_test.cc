// SocketTransport over a socketpair: with and without polling, a receive returns what the peer
// sends before, during and after the poll, the end of the stream and errors.

#include "nbd-server/transport.h"

#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace strata::nbd {
namespace {

class SocketTransportTest : public testing::TestWithParam<absl::Duration> {
 protected:
  void SetUp() override { ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds_), 0); }
  void TearDown() override {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  // Sends `text` from the peer after `delay`, on another thread.
  std::thread SendLater(std::string text, absl::Duration delay) {
    return std::thread([this, text, delay] {
      absl::SleepFor(delay);
      ASSERT_EQ(::send(fds_[1], text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
    });
  }
  std::string Receive(SocketTransport& transport) {
    char buf[64];
    const ssize_t got = transport.Recv(buf, sizeof(buf));
    return got > 0 ? std::string(buf, static_cast<size_t>(got)) : std::string();
  }
  int fds_[2] = {-1, -1};
};

TEST_P(SocketTransportTest, ReadsWhatIsAlreadyThere) {
  SocketTransport transport(fds_[0], GetParam());
  ASSERT_EQ(::send(fds_[1], "ready", 5, 0), 5);
  EXPECT_EQ(Receive(transport), "ready");
}

TEST_P(SocketTransportTest, ReadsWhatArrivesWhileItPolls) {
  SocketTransport transport(fds_[0], GetParam());
  std::thread peer = SendLater("soon", GetParam() / 4);
  EXPECT_EQ(Receive(transport), "soon");
  peer.join();
}

TEST_P(SocketTransportTest, SleepsAfterThePollAndReadsWhatArrivesLater) {
  SocketTransport transport(fds_[0], GetParam());
  std::thread peer = SendLater("late", GetParam() * 3 + absl::Milliseconds(20));
  EXPECT_EQ(Receive(transport), "late");
  peer.join();
}

TEST_P(SocketTransportTest, SeesTheEndOfTheStream) {
  SocketTransport transport(fds_[0], GetParam());
  std::thread peer([this] {
    absl::SleepFor(GetParam() / 2);
    ::shutdown(fds_[1], SHUT_WR);
  });
  char buf[8];
  EXPECT_EQ(transport.Recv(buf, sizeof(buf)), 0);
  peer.join();
}

TEST_P(SocketTransportTest, AReceiveTimeoutStillEndsTheWait) {
  // The handshake's deadline is SO_RCVTIMEO on the socket: polling must not outlive it forever.
  const timeval tv = absl::ToTimeval(absl::Milliseconds(30));
  ASSERT_EQ(::setsockopt(fds_[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
  SocketTransport transport(fds_[0], GetParam());
  char buf[8];
  EXPECT_LT(transport.Recv(buf, sizeof(buf)), 0);
  EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << errno;
}

TEST_P(SocketTransportTest, AClosedDescriptorIsAnError) {
  ::close(fds_[0]);
  SocketTransport transport(fds_[0], GetParam());
  fds_[0] = -1;
  char buf[8];
  EXPECT_LT(transport.Recv(buf, sizeof(buf)), 0);
  EXPECT_EQ(errno, EBADF);
}

INSTANTIATE_TEST_SUITE_P(Poll, SocketTransportTest,
                         testing::Values(absl::ZeroDuration(), absl::Microseconds(50),
                                         absl::Milliseconds(20)),
                         [](const testing::TestParamInfo<absl::Duration>& info) {
                           return "poll_" + std::to_string(absl::ToInt64Microseconds(info.param)) +
                                  "us";
                         });

}  // namespace
}  // namespace strata::nbd
