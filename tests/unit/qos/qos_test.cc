// Volume types: AWS's parameter rules and defaults (Normalize), the rates each type is held to
// (LimitsOf), and the limiter that holds a volume to them, on a simulated clock: a run of
// requests at full speed is admitted at the type's rate, gp2 bursts until its credits are spent
// and then keeps its baseline, HDD types charge a small random I/O a whole 1 MiB unit.

#include <cmath>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "qos/volume_limiter.h"
#include "qos/volume_performance.h"
#include "strata/aws_error.h"

namespace strata::qos {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

VolumeSpec Spec(const std::string& type, uint64_t gib, uint64_t iops = 0, uint64_t mibps = 0) {
  return VolumeSpec{type, gib, iops, mibps};
}

std::string CodeOf(const VolumeSpec& spec) {
  absl::StatusOr<VolumeSpec> n = Normalize(spec);
  if (n.ok()) return "ok";
  EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument);
  return AwsErrorCode(n.status());
}

TEST(NormalizeTest, DefaultsFollowAws) {
  absl::StatusOr<VolumeSpec> gp3 = Normalize(Spec("gp3", 8));
  ASSERT_TRUE(gp3.ok());
  EXPECT_EQ(gp3->iops, 3000u);
  EXPECT_EQ(gp3->throughput, 125u);
  EXPECT_EQ(Normalize(Spec("gp2", 10))->iops, 100u);  // 3 per GiB, at least 100.
  EXPECT_EQ(Normalize(Spec("gp2", 500))->iops, 1500u);
  EXPECT_EQ(Normalize(Spec("gp2", 16000))->iops, 16000u);  // At most 16,000.
  EXPECT_EQ(Normalize(Spec("io2", 100, 20000))->iops, 20000u);
  EXPECT_EQ(Normalize(Spec("st1", 500))->iops, 0u);
}

TEST(NormalizeTest, InvalidCombinationsGetAwsErrorCodes) {
  EXPECT_EQ(CodeOf(Spec("gp4", 8)), "InvalidParameterValue");
  EXPECT_EQ(CodeOf(Spec("io1", 8)), "MissingParameter");
  EXPECT_EQ(CodeOf(Spec("gp2", 8, 300)), "InvalidParameterCombination");
  EXPECT_EQ(CodeOf(Spec("io1", 8, 400, 200)), "InvalidParameterCombination");
  EXPECT_EQ(CodeOf(Spec("st1", 100)), "InvalidParameterValue");       // Below 125 GiB.
  EXPECT_EQ(CodeOf(Spec("gp3", 16385)), "InvalidParameterValue");     // Past 16 TiB.
  EXPECT_EQ(CodeOf(Spec("io2", 65536, 1000)), "ok");                  // io2 reaches 64 TiB.
  EXPECT_EQ(CodeOf(Spec("gp3", 8, 16001)), "InvalidParameterValue");  // Past 16,000.
  EXPECT_EQ(CodeOf(Spec("gp3", 8, 5000)), "InvalidParameterValue");   // 500 per GiB: 4,000.
  EXPECT_EQ(CodeOf(Spec("gp3", 8, 4000)), "ok");
  EXPECT_EQ(CodeOf(Spec("gp3", 1, 3000)), "ok");  // The baseline is allowed on any size.
  EXPECT_EQ(CodeOf(Spec("gp3", 100, 3000, 1000)), "InvalidParameterValue");  // 0.25 per IOPS.
  EXPECT_EQ(CodeOf(Spec("gp3", 100, 4000, 1000)), "ok");
  EXPECT_EQ(CodeOf(Spec("gp3", 100, 3000, 1001)), "InvalidParameterValue");
  EXPECT_EQ(CodeOf(Spec("io1", 10, 501)), "InvalidParameterValue");  // 50 per GiB.
  EXPECT_EQ(CodeOf(Spec("io1", 10, 99)), "InvalidParameterValue");
}

TEST(LimitsTest, RatesPerType) {
  Limits gp3 = LimitsOf(*Normalize(Spec("gp3", 100, 6000, 500)));
  EXPECT_EQ(gp3.units.baseline, 6000);
  EXPECT_EQ(gp3.bytes.baseline, 500 * kMiB);
  EXPECT_EQ(gp3.io_unit_bytes, 256u * 1024);
  Limits gp2 = LimitsOf(*Normalize(Spec("gp2", 100)));
  EXPECT_EQ(gp2.units.baseline, 300);
  EXPECT_EQ(gp2.units.burst, 3000);
  EXPECT_EQ(gp2.units.credits, 5.4e6);
  EXPECT_EQ(LimitsOf(*Normalize(Spec("gp2", 2000))).units.credits, 0);  // 6,000: no burst.
  EXPECT_EQ(LimitsOf(*Normalize(Spec("io1", 100, 1000))).bytes.baseline, 250 * kMiB);
  Limits st1 = LimitsOf(*Normalize(Spec("st1", 2048)));
  EXPECT_EQ(st1.bytes.baseline, 80 * kMiB);
  EXPECT_EQ(st1.bytes.burst, 500 * kMiB);  // 250 per TiB, capped at 500.
  EXPECT_EQ(st1.io_unit_bytes, 1024u * 1024);
  EXPECT_TRUE(st1.merges_sequential);
  Limits sc1 = LimitsOf(*Normalize(Spec("sc1", 1024)));
  EXPECT_EQ(sc1.bytes.baseline, 12 * kMiB);
  EXPECT_EQ(sc1.bytes.burst, 80 * kMiB);
}

// Sends `count` requests back to back, each as soon as the previous one was let through: the
// simulated seconds they took.
double RunAtFullSpeed(VolumeLimiter& limiter, int count, uint64_t bytes, bool sequential,
                      int64_t* now_ns) {
  const int64_t start = *now_ns;
  uint64_t offset = 0;
  for (int i = 0; i < count; ++i) {
    *now_ns += limiter.AdmitAt(false, offset, bytes, *now_ns);
    offset = sequential ? offset + bytes : offset + 7 * bytes + 4096 * (i % 5 + 1);
  }
  return static_cast<double>(*now_ns - start) / 1e9;
}

TEST(VolumeLimiterTest, Gp3HoldsIopsAndThroughput) {
  VolumeLimiter limiter;
  limiter.Configure(LimitsOf(*Normalize(Spec("gp3", 100))), true);
  int64_t now = 1'000'000'000;
  // 4 KiB requests: IOPS-bound at 3,000 per second.
  const double t = RunAtFullSpeed(limiter, 30000, 4096, false, &now);
  EXPECT_NEAR(30000 / t, 3000, 30);
  // 1 MiB requests: throughput-bound at 125 MiB/s (4 units each: 500 of 3,000 IOPS).
  now += 1'000'000'000;
  const double big = RunAtFullSpeed(limiter, 1000, 1 << 20, true, &now);
  EXPECT_NEAR(1000 / big, 125, 2);
}

TEST(VolumeLimiterTest, BelowTheLimitNothingWaits) {
  VolumeLimiter limiter;
  limiter.Configure(LimitsOf(*Normalize(Spec("gp3", 100))), true);
  int64_t now = 1'000'000'000;
  for (int i = 0; i < 1000; ++i) {
    now += 1'000'000;  // 1,000 IOPS, 4 MiB/s.
    EXPECT_EQ(limiter.AdmitAt(true, 0, 4096, now), 0) << i;
  }
  EXPECT_EQ(limiter.Stats().write_ops, 1000u);
  EXPECT_EQ(limiter.Stats().held_back, 0u);
}

TEST(VolumeLimiterTest, NoBurstOfAWholeSecondsBudget) {
  VolumeLimiter limiter;
  limiter.Configure(LimitsOf(*Normalize(Spec("gp3", 100))), true);
  int64_t now = 1'000'000'000;
  // After a long idle time, at most the smoothing window's worth goes through at once.
  int free = 0;
  while (limiter.AdmitAt(false, 0, 4096, now) == 0) ++free;
  EXPECT_LE(free, static_cast<int>(3000 * VolumeLimiter::kSmoothingSeconds) + 1);
}

TEST(VolumeLimiterTest, Gp2BurstsThenKeepsItsBaseline) {
  VolumeLimiter limiter;
  // 100 GiB: baseline 300 IOPS, burst 3,000 while 5.4 million credits last (2,000 s at a net
  // drain of 2,700 per second: 6 million requests).
  limiter.Configure(LimitsOf(*Normalize(Spec("gp2", 100))), true);
  int64_t now = 1'000'000'000;
  const double burst = RunAtFullSpeed(limiter, 300000, 4096, false, &now);
  EXPECT_NEAR(300000 / burst, 3000, 30);
  const double balance = limiter.StatsAt(now).burst_balance;  // 2,700 × 100 s spent of 5.4M.
  EXPECT_NEAR(balance, 95, 0.5);
  // Spend the rest of the credits, then the baseline holds.
  RunAtFullSpeed(limiter, 5'750'000, 4096, false, &now);
  EXPECT_LT(limiter.StatsAt(now).burst_balance, 0.1);
  const double after = RunAtFullSpeed(limiter, 3000, 4096, false, &now);
  EXPECT_NEAR(3000 / after, 300, 3);
}

TEST(VolumeLimiterTest, HddChargesSmallRandomIoAWholeUnit) {
  VolumeLimiter limiter;
  limiter.Configure(LimitsOf(*Normalize(Spec("sc1", 1024))), true);  // 80 MiB/s burst.
  int64_t now = 1'000'000'000;
  // Random 4 KiB reads cost 1 MiB each: 80 per second, not 20,000.
  const double random = RunAtFullSpeed(limiter, 800, 4096, false, &now);
  EXPECT_NEAR(800 / random, 80, 2);
  // Sequential 4 KiB reads share units: 80 MiB/s of them.
  const double seq = RunAtFullSpeed(limiter, 80 * 256 * 4, 4096, true, &now);
  EXPECT_NEAR(80 * 256 * 4 * 4096 / kMiB / seq, 80, 2);
}

TEST(VolumeLimiterTest, NewLimitsApplyAtOnceAndOffOnlyCounts) {
  VolumeLimiter limiter;
  limiter.Configure(LimitsOf(*Normalize(Spec("gp3", 100))), true);
  int64_t now = 1'000'000'000;
  RunAtFullSpeed(limiter, 3000, 4096, false, &now);
  limiter.Configure(LimitsOf(*Normalize(Spec("gp3", 100, 12000))), true);
  const double t = RunAtFullSpeed(limiter, 24000, 4096, false, &now);
  EXPECT_NEAR(24000 / t, 12000, 120);
  limiter.Configure(LimitsOf(*Normalize(Spec("gp3", 100))), false);
  for (int i = 0; i < 10000; ++i) EXPECT_EQ(limiter.AdmitAt(false, 0, 4096, now), 0);
  EXPECT_EQ(limiter.Stats().read_ops, 3000u + 24000 + 10000);
}

TEST(VolumeLimiterTest, BurstBalanceCanBeSetToRehearseASpentBucket) {
  VolumeLimiter limiter;
  limiter.Configure(LimitsOf(*Normalize(Spec("gp2", 100))), true);
  int64_t now = 1'000'000'000;
  limiter.SetBurstBalanceAt(1, now);  // 54,000 credits: 20 s of burst at a net 2,700/s.
  EXPECT_NEAR(limiter.StatsAt(now).burst_balance, 1, 0.01);
  EXPECT_TRUE(limiter.StatsAt(now).has_burst_bucket);
  const double burst = RunAtFullSpeed(limiter, 30000, 4096, false, &now);
  EXPECT_NEAR(30000 / burst, 3000, 30);
  RunAtFullSpeed(limiter, 40000, 4096, false, &now);  // The rest of the credits.
  const double after = RunAtFullSpeed(limiter, 3000, 4096, false, &now);
  EXPECT_NEAR(3000 / after, 300, 3);
  // A type without a bucket has nothing to set.
  VolumeLimiter gp3;
  gp3.Configure(LimitsOf(*Normalize(Spec("gp3", 100))), true);
  gp3.SetBurstBalanceAt(0, now);
  EXPECT_FALSE(gp3.StatsAt(now).has_burst_bucket);
  EXPECT_EQ(gp3.AdmitAt(false, 0, 4096, now), 0);
}

TEST(VolumeLimiterTest, SamplesHoldEachSecondsRequestsBytesAndLatency) {
  VolumeLimiter limiter;
  limiter.Configure(LimitsOf(*Normalize(Spec("gp3", 100))), true);
  const int64_t t0 = 1'700'000'000;  // Unix seconds.
  int64_t now = t0 * 1'000'000'000;
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(limiter.AdmitAt(false, 0, 4096, now), 0);
    limiter.Finished(false, absl::Milliseconds(2));
  }
  EXPECT_EQ(limiter.AdmitAt(true, 0, 65536, now), 0);
  limiter.Finished(true, absl::Milliseconds(5));
  limiter.SampleAt(t0, now);
  limiter.SampleAt(t0 + 1, now);  // Nothing happened in this second.
  limiter.AdmitAt(true, 0, 4096, now);
  limiter.Finished(true, absl::Milliseconds(1));
  limiter.SampleAt(t0 + 3, now);  // t0 + 2 was missed: idle.
  std::vector<VolumeIoSample> s = limiter.Samples(t0, t0 + 10);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s[0].start_second, t0);
  EXPECT_EQ(s[0].read_ops, 10u);
  EXPECT_EQ(s[0].read_bytes, 40960u);
  EXPECT_EQ(s[0].read_time_ns, 20'000'000u);
  EXPECT_EQ(s[0].write_ops, 1u);
  EXPECT_EQ(s[0].write_bytes, 65536u);
  EXPECT_EQ(s[0].write_time_ns, 5'000'000u);
  EXPECT_EQ(s[0].idle_seconds, 0u);
  EXPECT_EQ(s[1].start_second, t0 + 1);
  EXPECT_EQ(s[1].idle_seconds, 1u);
  EXPECT_EQ(s[1].read_ops + s[1].write_ops, 0u);
  EXPECT_EQ(s[2].idle_seconds, 1u);
  EXPECT_EQ(s[3].start_second, t0 + 3);
  EXPECT_EQ(s[3].write_ops, 1u);
  EXPECT_EQ(s[3].write_time_ns, 1'000'000u);
  EXPECT_EQ(limiter.Samples(t0 + 1, t0 + 3).size(), 2u);  // [from, to).
  EXPECT_TRUE(limiter.Samples(t0 + 4, t0 + 10).empty());
  // Any window is walked only where samples can be: the whole of time returns at once.
  EXPECT_EQ(limiter.Samples(0, int64_t{1} << 62).size(), 4u);
}

TEST(IoHistoryTest, OlderThanFifteenMinutesIsKeptPerMinuteForADay) {
  IoHistory history;
  const int64_t t0 = 1'700'000'020;  // 40 s into a minute.
  IoTotals totals;
  // One write every second for 20 minutes.
  for (int64_t s = t0; s < t0 + 1200; ++s) {
    totals.write_ops += 1;
    totals.write_bytes += 4096;
    history.Record(s, totals, 100);
  }
  const int64_t end = t0 + 1200;
  std::vector<VolumeIoSample> all = history.Samples(t0, end);
  uint64_t ops = 0;
  int minutes = 0, seconds = 0;
  int64_t last_start = 0;
  for (const VolumeIoSample& s : all) {
    EXPECT_GE(s.start_second, last_start) << "oldest first";
    last_start = s.start_second + s.seconds;
    ops += s.write_ops;
    (s.seconds == 60 ? minutes : seconds) += 1;
  }
  // The seconds' ring holds the last 15 minutes from a whole minute on; the minutes before it
  // come whole, except the first (it began before t0, outside the query).
  EXPECT_GT(minutes, 3);
  EXPECT_LE(seconds, IoHistory::kSecondSamples);
  EXPECT_GE(seconds, IoHistory::kSecondSamples - 60);
  EXPECT_EQ(ops, 1200u - 20);  // The 20 seconds of the minute that began before t0.
  // A day later the minutes are gone too.
  history.Record(end + 2 * 86400, totals, 100);
  EXPECT_TRUE(history.Samples(t0, end).empty());
}

}  // namespace
}  // namespace strata::qos
