// SocketTransport over a socketpair: with and without polling, a receive returns what the peer
// sends before, during and after the poll, the end of the stream and errors; the poll keeps the
// thread awake, only where asked, for a window that follows how long the client keeps it waiting.
// BufferedReader: a large payload is received straight into its destination, not the buffer,
// or spliced into a pipe (over unix and TCP sockets): in order, the buffered bytes first, and
// when the pipe fills, what it took is the payload's start and the rest is read after it.

#include "nbd-server/transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace strata::nbd {
namespace {

class SocketPairTest : public testing::Test {
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
    const ssize_t got = transport.Recv(buf, sizeof(buf), RecvWait::kPollFirst);
    return got > 0 ? std::string(buf, static_cast<size_t>(got)) : std::string();
  }
  int fds_[2] = {-1, -1};
};

class SocketTransportTest : public SocketPairTest,
                            public testing::WithParamInterface<absl::Duration> {};

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
  EXPECT_EQ(transport.Recv(buf, sizeof(buf), RecvWait::kPollFirst), 0);
  peer.join();
}

TEST_P(SocketTransportTest, AReceiveTimeoutStillEndsTheWait) {
  // The handshake's deadline is SO_RCVTIMEO on the socket: polling must not outlive it forever.
  const timeval tv = absl::ToTimeval(absl::Milliseconds(30));
  ASSERT_EQ(::setsockopt(fds_[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
  SocketTransport transport(fds_[0], GetParam());
  char buf[8];
  EXPECT_LT(transport.Recv(buf, sizeof(buf), RecvWait::kPollFirst), 0);
  EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << errno;
}

TEST_P(SocketTransportTest, AClosedDescriptorIsAnError) {
  ::close(fds_[0]);
  SocketTransport transport(fds_[0], GetParam());
  fds_[0] = -1;
  char buf[8];
  EXPECT_LT(transport.Recv(buf, sizeof(buf), RecvWait::kPollFirst), 0);
  EXPECT_EQ(errno, EBADF);
}

// The scheduler state of one of this process's threads: 'R' running or runnable, 'S' asleep.
char ThreadState(pid_t tid) {
  std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::stringstream text;
  text << stat.rdbuf();
  const std::string line = text.str();
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() ? '?' : line[paren + 2];
}

// A receiver on its own thread; `tid` is set once it runs.
struct Receiver {
  explicit Receiver(int fd, absl::Duration poll)
      : thread([this, fd, poll] {
          tid.store(::gettid());
          SocketTransport transport(fd, poll);
          char buf[8];
          got.store(transport.Recv(buf, sizeof(buf), RecvWait::kPollFirst));
        }) {}
  // Waits up to 10 s for the thread to be in `state`.
  bool Reaches(char state) {
    for (int i = 0; i < 10000; ++i) {
      if (tid.load() != 0 && ThreadState(tid.load()) == state) return true;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return false;
  }
  std::atomic<pid_t> tid{0};
  std::atomic<ssize_t> got{-2};
  std::thread thread;
};

TEST_F(SocketPairTest, PollingKeepsTheThreadAwakeThenItSleeps) {
  {
    // Without polling the receiver sleeps in recv at once.
    Receiver receiver(fds_[0], absl::ZeroDuration());
    EXPECT_TRUE(receiver.Reaches('S'));
    ASSERT_EQ(::send(fds_[1], "a", 1, 0), 1);
    receiver.thread.join();
    EXPECT_EQ(receiver.got.load(), 1);
  }
  {
    // Polling for 10 minutes: it never sleeps, however often it is looked at.
    Receiver receiver(fds_[0], absl::Minutes(10));
    while (receiver.tid.load() == 0) absl::SleepFor(absl::Milliseconds(1));
    absl::SleepFor(absl::Milliseconds(20));
    for (int i = 0; i < 50; ++i) {
      EXPECT_EQ(ThreadState(receiver.tid.load()), 'R') << "look " << i;
      absl::SleepFor(absl::Milliseconds(2));
    }
    ASSERT_EQ(::send(fds_[1], "b", 1, 0), 1);
    receiver.thread.join();
    EXPECT_EQ(receiver.got.load(), 1);
  }
  {
    // Polling for 50 ms: then it sleeps until the peer sends.
    Receiver receiver(fds_[0], absl::Milliseconds(50));
    EXPECT_TRUE(receiver.Reaches('S'));
    ASSERT_EQ(::send(fds_[1], "c", 1, 0), 1);
    receiver.thread.join();
    EXPECT_EQ(receiver.got.load(), 1);
  }
}

TEST_F(SocketPairTest, AReceiveThatSleepsNeverPolls) {
  // A payload under way is read asleep however long the poll: the client is sending it.
  std::atomic<pid_t> tid{0};
  std::atomic<ssize_t> got{-2};
  std::thread receiver([&] {
    tid.store(::gettid());
    SocketTransport transport(fds_[0], absl::Minutes(10));
    char buf[8];
    got.store(transport.Recv(buf, sizeof(buf), RecvWait::kSleep));
  });
  bool slept = false;
  for (int i = 0; i < 10000 && !slept; ++i) {
    slept = tid.load() != 0 && ThreadState(tid.load()) == 'S';
    if (!slept) absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_TRUE(slept);
  ASSERT_EQ(::send(fds_[1], "d", 1, 0), 1);
  receiver.join();
  EXPECT_EQ(got.load(), 1);
}

// The poll window after each receive, the peer sending after `delay` each time.
class PollWindowTest : public SocketPairTest {
 protected:
  static constexpr absl::Duration kPoll = absl::Milliseconds(50);
  absl::Duration ReceiveAfter(SocketTransport& transport, absl::Duration delay) {
    std::thread peer = SendLater("x", delay);
    EXPECT_EQ(Receive(transport), "x");
    peer.join();
    return transport.poll_window();
  }
};

TEST_F(PollWindowTest, AnIdleClientTurnsThePollOffAndABusyOneBackOn) {
  SocketTransport transport(fds_[0], kPoll);
  EXPECT_EQ(transport.poll_window(), kPoll);
  // Each wait outlasts the poll by far: the window halves, then closes below an eighth.
  const absl::Duration idle = kPoll * 3;
  EXPECT_EQ(ReceiveAfter(transport, idle), kPoll / 2);
  EXPECT_EQ(ReceiveAfter(transport, idle), kPoll / 4);
  EXPECT_EQ(ReceiveAfter(transport, idle), kPoll / 8);
  EXPECT_EQ(ReceiveAfter(transport, idle), absl::ZeroDuration());
  EXPECT_EQ(ReceiveAfter(transport, idle), absl::ZeroDuration());
  // Requests that come soon after the thread fell asleep reopen it, doubling up to the most.
  // (Each request comes at least kPoll / 8 away from the end of the window, so that the test
  // does not depend on which side of it the request lands.)
  EXPECT_EQ(ReceiveAfter(transport, kPoll / 4), kPoll / 8);
  EXPECT_EQ(ReceiveAfter(transport, kPoll / 2), kPoll / 4);
  EXPECT_EQ(ReceiveAfter(transport, kPoll / 2), kPoll / 2);
  EXPECT_EQ(ReceiveAfter(transport, kPoll * 3 / 4), kPoll);
  EXPECT_EQ(ReceiveAfter(transport, kPoll * 3 / 4), kPoll);  // Caught: the most it polls.
  EXPECT_TRUE(transport.polls_next());
}

TEST_F(SocketPairTest, AStreamingClientIsSleptForAndAPromptOneIsPolledFor) {
  // Most 200 ms: a request within 25 ms (an eighth) is streaming, one after 60 ms is not.
  constexpr absl::Duration kPoll = absl::Milliseconds(200);
  SocketTransport transport(fds_[0], kPoll);
  auto receive_after = [&](absl::Duration delay) {
    std::thread peer = SendLater("s", delay);
    EXPECT_EQ(Receive(transport), "s");
    peer.join();
  };
  receive_after(absl::Milliseconds(60));  // Caught by the poll, but not streaming.
  EXPECT_TRUE(transport.polls_next());
  receive_after(absl::Milliseconds(1));  // Caught at once: the next eight waits sleep.
  for (int i = 0; i < 8; ++i) {
    EXPECT_FALSE(transport.polls_next()) << i;
    receive_after(absl::Milliseconds(5));
  }
  EXPECT_TRUE(transport.polls_next());
  EXPECT_EQ(transport.poll_window(), kPoll);  // Each of those sleeps was short: kept.
  // What is already there is no wait, and leaves the count as it is.
  receive_after(absl::Milliseconds(1));
  ASSERT_EQ(::send(fds_[1], "t", 1, 0), 1);
  EXPECT_EQ(Receive(transport), "t");
  EXPECT_FALSE(transport.polls_next());
}

TEST_F(PollWindowTest, ARequestCaughtByThePollLeavesTheWindowAlone) {
  // A wider poll than the fixture's, so that a request can land well inside the halved window
  // and well after the streaming mark (an eighth of the most) on a loaded machine.
  constexpr absl::Duration kWide = absl::Milliseconds(200);
  SocketTransport transport(fds_[0], kWide);
  EXPECT_EQ(ReceiveAfter(transport, kWide * 3), kWide / 2);  // Idle: halved to 100 ms.
  // Caught at 60 ms: inside the 100 ms window, after the 25 ms streaming mark.
  EXPECT_EQ(ReceiveAfter(transport, absl::Milliseconds(60)), kWide / 2);
  EXPECT_TRUE(transport.polls_next());
}

TEST_F(PollWindowTest, WhatIsAlreadyThereLeavesTheWindowAlone) {
  SocketTransport transport(fds_[0], kPoll);
  EXPECT_EQ(ReceiveAfter(transport, kPoll * 3), kPoll / 2);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(::send(fds_[1], "y", 1, 0), 1);
    EXPECT_EQ(Receive(transport), "y");
    EXPECT_EQ(transport.poll_window(), kPoll / 2);
  }
}

TEST_F(PollWindowTest, ASleepingReceiveLeavesTheWindowAlone) {
  SocketTransport transport(fds_[0], kPoll);
  std::thread peer = SendLater("z", kPoll * 3);
  char buf[8];
  EXPECT_EQ(transport.Recv(buf, sizeof(buf), RecvWait::kSleep), 1);
  peer.join();
  EXPECT_EQ(transport.poll_window(), kPoll);
}

// A stream held in memory that records how many bytes each receive asked for.
class RecordingTransport final : public Transport {
 public:
  explicit RecordingTransport(std::string stream) : stream_(std::move(stream)) {}
  ssize_t Recv(void* buf, size_t n, RecvWait) override {
    asked.push_back(n);
    const size_t take = std::min(n, stream_.size() - at_);
    std::memcpy(buf, stream_.data() + at_, take);
    at_ += take;
    return static_cast<ssize_t>(take);
  }
  bool Send(std::span<const iovec>) override { return false; }
  std::vector<size_t> asked;

 private:
  std::string stream_;
  size_t at_ = 0;
};

std::string Pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7 % 251);
  return s;
}

TEST(BufferedReaderTest, AfterALargePayloadTheNextHeaderIsReceivedAlone) {
  constexpr size_t kHeader = 28;
  constexpr size_t kBuffer = 256 * 1024;
  constexpr size_t kLarge = 512 * 1024;
  const std::string parts[] = {Pattern(kHeader, 'a'), Pattern(kLarge, 'b'),  Pattern(kHeader, 'c'),
                               Pattern(kLarge, 'd'),  Pattern(kHeader, 'e'), Pattern(4096, 'f'),
                               Pattern(kHeader, 'g')};
  std::string stream;
  for (const std::string& p : parts) stream += p;
  RecordingTransport transport(stream);
  BufferedReader reader(&transport);
  for (const std::string& p : parts) {
    std::string got(p.size(), '\0');
    ASSERT_TRUE(reader.Read(got.data(), got.size(), RecvWait::kPollFirst));
    EXPECT_EQ(got, p);
  }
  const std::vector<size_t> expected = {
      kBuffer,                       // the first header, and the start of its payload
      kLarge - (kBuffer - kHeader),  // the rest of the payload, straight into its destination
      kHeader,                       // the next header alone: its payload is not buffered
      kLarge,                        // so all of it goes straight to its destination
      kHeader,                       // the header of a small payload, alone
      kBuffer};                      // which refills the buffer again (the last header with it)
  EXPECT_EQ(transport.asked, expected);
}

TEST(BufferedReaderTest, TakeArrivedReceivesWithoutWaitingAndAsksAgainWhenNothingCame) {
  // Over a socket: "ab" has arrived, then nothing, then "cd" once the reader chose to block.
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  ASSERT_EQ(::send(fds[1], "ab", 2, 0), 2);
  SocketTransport transport(fds[0]);
  std::vector<bool> asked;  // nothing_arrived, at each call
  BufferedReader reader(&transport, [&](bool nothing_arrived) {
    asked.push_back(nothing_arrived);
    if (asked.size() < 4) return BeforeRecv::kTakeArrived;
    EXPECT_EQ(::send(fds[1], "cd", 2, 0), 2);
    return BeforeRecv::kBlock;
  });
  char got[4];
  ASSERT_TRUE(reader.Read(got, 4));
  EXPECT_EQ(std::string(got, 4), "abcd");
  // "ab" taken at once; then two tries found nothing, and the fourth call chose to block.
  EXPECT_EQ(asked, (std::vector<bool>{false, false, true, true}));
  BufferedReader failing(&transport, [](bool) { return BeforeRecv::kFail; });
  EXPECT_FALSE(failing.Read(got, 1));
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(BatchedWriterTest, FlushWithoutWaitingSendsWhatTheSocketTakesAndKeepsTheRest) {
  // A peer that does not read: the replies gathered beyond the socket's buffer stay gathered,
  // in order, until a Flush (which may wait) once the peer reads.
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const int small = 4096;
  ASSERT_EQ(::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  SocketTransport transport(fds[0]);
  BatchedWriter writer(&transport);
  const std::string sent = Pattern(200 * 1024, 'r');
  const size_t room = writer.room();
  for (size_t at = 0; at < sent.size(); at += 1024) {
    const iovec piece = {const_cast<char*>(sent.data() + at), 1024};
    ASSERT_TRUE(writer.Send(std::span(&piece, 1)));
  }
  EXPECT_EQ(writer.room(), room - sent.size());
  ASSERT_TRUE(writer.FlushWithoutWaiting());     // Returns: never waits for the peer.
  EXPECT_GT(writer.room(), room - sent.size());  // Some went out...
  EXPECT_LT(writer.room(), room);                // ...not all.
  std::string received;
  std::thread reader([&] {
    char buf[65536];
    while (received.size() < sent.size()) {
      const ssize_t got = ::recv(fds[1], buf, sizeof(buf), 0);
      if (got <= 0) break;
      received.append(buf, static_cast<size_t>(got));
    }
  });
  ASSERT_TRUE(writer.Flush());
  reader.join();
  EXPECT_EQ(writer.room(), room);
  EXPECT_TRUE(received == sent);
  ::close(fds[0]);
  ::close(fds[1]);
}

// A connected pair of sockets: unix (a socketpair) or TCP over loopback.
void ConnectedPair(bool tcp, int fds[2]) {
  if (!tcp) {
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    return;
  }
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  fds[1] = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(::connect(fds[1], reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  fds[0] = ::accept(listener, nullptr, nullptr);
  ::close(listener);
  ASSERT_GE(fds[0], 0);
  const int one = 1;
  ::setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Sends `bytes` from fds[1] in pieces of `piece` bytes, pausing after each of the first few.
std::thread SendInPieces(int fd, std::string bytes, size_t piece) {
  return std::thread([fd, bytes = std::move(bytes), piece] {
    for (size_t at = 0, n = 0; at < bytes.size(); at += piece, ++n) {
      const size_t len = std::min(piece, bytes.size() - at);
      ASSERT_EQ(::send(fd, bytes.data() + at, len, MSG_NOSIGNAL), static_cast<ssize_t>(len));
      if (n < 4) absl::SleepFor(absl::Milliseconds(5));  // The reader waits for the rest.
    }
  });
}

std::string ReadOut(PayloadPipe& pipe, size_t n) {
  std::string out(n, '\0');
  const ssize_t got = pipe.ReadOut(std::as_writable_bytes(std::span(out)));
  out.resize(got < 0 ? 0 : static_cast<size_t>(got));
  return out;
}

class SpliceTest : public testing::TestWithParam<bool> {  // true: TCP, false: unix.
 protected:
  void SetUp() override { ConnectedPair(GetParam(), fds_); }
  void TearDown() override {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  int fds_[2] = {-1, -1};
};

TEST_P(SpliceTest, ThePayloadReachesThePipeInOrderBufferedBytesFirst) {
  // A header, a 600 KiB payload and the next header: the first refill buffers the header and
  // the payload's start, which go into the pipe before the rest is spliced.
  constexpr size_t kHeader = 28;
  constexpr size_t kPayload = 600 * 1024;
  const std::string header = Pattern(kHeader, 'h');
  const std::string payload = Pattern(kPayload, 'p');
  const std::string next = Pattern(kHeader, 'n');
  std::thread sender = SendInPieces(fds_[1], header + payload + next, 64 * 1024);
  SocketTransport transport(fds_[0]);
  BufferedReader reader(&transport);
  std::unique_ptr<PayloadPipe> pipe = PayloadPipe::Create(1 << 20);
  ASSERT_NE(pipe, nullptr);
  std::string got(kHeader, '\0');
  ASSERT_TRUE(reader.Read(got.data(), kHeader));
  EXPECT_EQ(got, header);
  EXPECT_GT(reader.buffered(), 0u);  // The payload's start came with the header.
  size_t moved = 0;
  ASSERT_EQ(reader.SpliceTo(*pipe, kPayload, moved), BufferedReader::SpliceOutcome::kMoved);
  EXPECT_EQ(moved, kPayload);
  EXPECT_TRUE(ReadOut(*pipe, kPayload + 1) == payload);  // Exactly the payload.
  ASSERT_TRUE(reader.Read(got.data(), kHeader));
  EXPECT_EQ(got, next);
  sender.join();
}

TEST_P(SpliceTest, AnswersBeforeEachWaitAndTakesWhatArrivedWhenAsked) {
  // Half the payload has arrived; the rest comes only once the reader chose to block.
  const std::string payload = Pattern(256 * 1024, 'q');
  ASSERT_EQ(::send(fds_[1], payload.data(), payload.size() / 2, 0),
            static_cast<ssize_t>(payload.size() / 2));
  absl::SleepFor(absl::Milliseconds(20));  // Arrived (loopback).
  SocketTransport transport(fds_[0]);
  std::vector<bool> asked;  // nothing_arrived, at each call
  std::thread sender;
  BufferedReader reader(&transport, [&](bool nothing_arrived) {
    asked.push_back(nothing_arrived);
    if (!nothing_arrived) return BeforeRecv::kTakeArrived;
    if (!sender.joinable()) {
      sender = SendInPieces(fds_[1], payload.substr(payload.size() / 2), 32 * 1024);
    }
    return BeforeRecv::kBlock;
  });
  std::unique_ptr<PayloadPipe> pipe = PayloadPipe::Create(1 << 20);
  ASSERT_NE(pipe, nullptr);
  size_t moved = 0;
  ASSERT_EQ(reader.SpliceTo(*pipe, payload.size(), moved), BufferedReader::SpliceOutcome::kMoved);
  sender.join();
  EXPECT_TRUE(ReadOut(*pipe, payload.size()) == payload);
  // Asked before every splice; the half that had arrived was taken without waiting (perhaps in
  // several splices), then nothing had, and the reader blocked for the rest.
  ASSERT_GE(asked.size(), 3u);
  EXPECT_FALSE(asked.front());
  EXPECT_TRUE(std::find(asked.begin(), asked.end(), true) != asked.end());
  BufferedReader failing(&transport, [](bool) { return BeforeRecv::kFail; });
  EXPECT_EQ(failing.SpliceTo(*pipe, 1, moved), BufferedReader::SpliceOutcome::kFailed);
}

TEST_P(SpliceTest, TheEndOfTheStreamMidPayloadFails) {
  const std::string part = Pattern(100 * 1024, 'e');
  ASSERT_EQ(::send(fds_[1], part.data(), part.size(), 0), static_cast<ssize_t>(part.size()));
  ::close(fds_[1]);
  fds_[1] = -1;
  SocketTransport transport(fds_[0]);
  BufferedReader reader(&transport);
  std::unique_ptr<PayloadPipe> pipe = PayloadPipe::Create(1 << 20);
  ASSERT_NE(pipe, nullptr);
  size_t moved = 0;
  EXPECT_EQ(reader.SpliceTo(*pipe, 200 * 1024, moved), BufferedReader::SpliceOutcome::kFailed);
}

TEST_P(SpliceTest, APayloadLargerThanThePipeIsNotSpliced) {
  SocketTransport transport(fds_[0]);
  BufferedReader reader(&transport);
  std::unique_ptr<PayloadPipe> pipe = PayloadPipe::Create(64 * 1024);
  ASSERT_NE(pipe, nullptr);
  size_t moved = 1;
  EXPECT_EQ(reader.SpliceTo(*pipe, 64 * 1024 + 1, moved), BufferedReader::SpliceOutcome::kPipeFull);
  EXPECT_EQ(moved, 0u);
}

// Tiny segments on a unix socket each take a pipe's slot (a page's room): 256 KiB sent 512
// bytes at a time fill a 1 MiB pipe after 128 KiB. What the pipe took is the payload's start,
// and the reader reads the rest.
TEST(SpliceFullPipeTest, WhatThePipeTookIsThePayloadsStartAndTheRestIsRead) {
  int fds[2];
  ConnectedPair(/*tcp=*/false, fds);
  const std::string payload = Pattern(256 * 1024, 'f');
  const std::string next = Pattern(28, 'n');
  std::thread sender([&] {
    const std::string all = payload + next;
    for (size_t at = 0; at < all.size(); at += 512) {
      const size_t len = std::min<size_t>(512, all.size() - at);
      ASSERT_EQ(::send(fds[1], all.data() + at, len, MSG_NOSIGNAL), static_cast<ssize_t>(len));
    }
  });
  SocketTransport transport(fds[0]);
  BufferedReader reader(&transport);
  std::unique_ptr<PayloadPipe> pipe = PayloadPipe::Create(1 << 20);
  ASSERT_NE(pipe, nullptr);
  size_t moved = 0;
  ASSERT_EQ(reader.SpliceTo(*pipe, payload.size(), moved),
            BufferedReader::SpliceOutcome::kPipeFull);
  EXPECT_GT(moved, 0u);
  EXPECT_LT(moved, payload.size());
  std::string got = ReadOut(*pipe, payload.size());
  EXPECT_EQ(got.size(), moved);
  got.resize(payload.size());
  ASSERT_TRUE(reader.Read(got.data() + moved, payload.size() - moved));
  EXPECT_TRUE(got == payload);
  std::string header(28, '\0');
  ASSERT_TRUE(reader.Read(header.data(), header.size()));
  EXPECT_EQ(header, next);
  sender.join();
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(PayloadPipeTest, DiscardEmptiesItAndAnEmptyPipeReadsNothing) {
  std::unique_ptr<PayloadPipe> pipe = PayloadPipe::Create(1 << 20);
  ASSERT_NE(pipe, nullptr);
  EXPECT_EQ(ReadOut(*pipe, 10), "");  // Non-blocking: nothing, at once.
  const std::string bytes = Pattern(100 * 1024, 'd');
  ASSERT_EQ(::write(pipe->write_fd(), bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
  EXPECT_TRUE(pipe->Discard());
  int left = -1;
  ASSERT_EQ(::ioctl(pipe->read_fd(), FIONREAD, &left), 0);
  EXPECT_EQ(left, 0);
}

INSTANTIATE_TEST_SUITE_P(Sockets, SpliceTest, testing::Bool(),
                         [](const testing::TestParamInfo<bool>& info) {
                           return info.param ? "tcp" : "unix";
                         });

INSTANTIATE_TEST_SUITE_P(Poll, SocketTransportTest,
                         testing::Values(absl::ZeroDuration(), absl::Microseconds(50),
                                         absl::Milliseconds(20)),
                         [](const testing::TestParamInfo<absl::Duration>& info) {
                           return "poll_" + std::to_string(absl::ToInt64Microseconds(info.param)) +
                                  "us";
                         });

}  // namespace
}  // namespace strata::nbd
