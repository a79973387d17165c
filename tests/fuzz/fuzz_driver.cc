// Runs LLVMFuzzerTestOneInput without libFuzzer: each seed as is, then seeded random mutations
// (byte flips, insertions, deletions, splices), bounded in count. Prints the seed.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  const uint64_t seed = std::getenv("STRATA_TEST_SEED")
                            ? std::strtoull(std::getenv("STRATA_TEST_SEED"), nullptr, 10)
                            : std::random_device{}();
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::printf("seed: STRATA_TEST_SEED=%llu, %ld iterations\n",
              static_cast<unsigned long long>(seed), iterations);
  const std::vector<std::string> seeds = {
      "POST / HTTP/1.1\r\nHost: 127.0.0.1:8150\r\nX-Amz-Date: 20260101T000000Z\r\nAuthorization: "
      "AWS4-HMAC-SHA256 Credential=AKIA/20260101/local-1/ec2/aws4_request, "
      "SignedHeaders=host;x-amz-date, "
      "Signature=abcd\r\nContent-Length: 30\r\n\r\nAction=DescribeVolumes&MaxResults=5",
      "GET /snapshots/snap-1/blocks?maxResults=100&pageToken=3 HTTP/1.1\r\nHost: h\r\n\r\n",
      "Action=CreateVolume&Size=1&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1."
      "Key=a"
      "&Filter.1.Name=tag%3AName&Filter.1.Value.1=w%2A&VolumeId.1=vol-1",
      "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request,SignedHeaders=host,Signature=00",
      R"({"VolumeSize": 8, "ParentSnapshotId": "snap-1", "Tags": [{"Key": "a", "Value": "b"}], "Timeout": 60})",
      std::string("\x25\x60\x95\x13\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07"
                  "\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x02\x00",
                  28),
  };
  std::mt19937_64 rng(seed);
  for (const std::string& s : seeds)
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  for (long i = 0; i < iterations; ++i) {
    std::string input = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && !input.empty(); ++e) {
      const size_t pos = rng() % input.size();
      switch (rng() % 4) {
        case 0:
          input[pos] = static_cast<char>(rng());
          break;
        case 1:
          input.insert(pos, 1, "%=&.\r\n:/?*"[rng() % 11]);
          break;
        case 2:
          input.erase(pos, 1 + rng() % 8);
          break;
        default:
          input += seeds[rng() % seeds.size()].substr(rng() % 20);
          break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::printf("1 passed, 0 failed\n");
  return 0;
}
