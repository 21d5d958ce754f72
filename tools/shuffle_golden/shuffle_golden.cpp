// Golden data for updatable_coreml/runtime/batch_order.py: the example orders Core ML's
// shuffling batch provider produces, computed by libc++ itself.
//
// What Core ML does (decompiled MLShufflingBatchProvider, evidence ids 14763505511 and
// 16801534799): a vector<long> of indices 0..n-1; a linear_congruential_engine<unsigned int,
// 48271, 0, 2147483647> (minstd_rand's parameters) in state 1, re-seeded with
// seed(std::seed_seq{(int)seed}) when the model has a seed; std::shuffle once at the start and
// once more, in place, after every epoch.
//
// Regenerate (Debian: apt-get install clang libc++-dev libc++abi-dev):
//   clang++ -std=c++17 -stdlib=libc++ -O1 tools/shuffle_golden/shuffle_golden.cpp \
//       -o /tmp/shuffle_golden && /tmp/shuffle_golden > tests/golden/libcxx_shuffle.json
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#ifndef _LIBCPP_VERSION
#error "build with -stdlib=libc++: the golden data must come from libc++"
#endif

using Engine = std::linear_congruential_engine<uint32_t, 48271u, 0u, 2147483647u>;

struct Seed {
  bool present;
  long long value;
};

static Engine make_engine(const Seed& seed) {
  Engine engine;  // state 1
  if (seed.present) {
    int narrowed = static_cast<int>(static_cast<unsigned long long>(seed.value));
    std::seed_seq sequence{narrowed};
    engine.seed(sequence);
  }
  return engine;
}

static void print_seed(const Seed& seed) {
  if (seed.present)
    std::printf("%lld", seed.value);
  else
    std::printf("null");
}

int main() {
  const Seed seeds[] = {{false, 0}, {true, 0},          {true, 1},          {true, 7},
                        {true, 42}, {true, 12345},      {true, 4294967295LL}, {true, 4294967301LL},
                        {true, -1}, {true, 2147483647}, {true, 1000000007}};
  const long sizes[] = {0, 1, 2, 3, 5, 10, 17, 64, 100};
  const int epochs = 3;

  std::printf("{\n  \"libcpp_version\": %d,\n", _LIBCPP_VERSION);
  // The engine's state right after seeding (checks seed_seq + seed() alone).
  std::printf("  \"seeded_state\": [");
  bool first = true;
  for (const Seed& seed : seeds) {
    Engine engine = make_engine(seed);
    Engine copy = engine;
    std::printf("%s\n    {\"seed\": ", first ? "" : ",");
    print_seed(seed);
    std::printf(", \"next\": %u}", static_cast<unsigned>(copy()));
    first = false;
  }
  std::printf("\n  ],\n");

  // Orders per epoch: start shuffle, then one in-place shuffle after each epoch.
  std::printf("  \"orders\": [");
  first = true;
  std::vector<std::pair<Seed, long>> cases;
  for (const Seed& seed : seeds)
    for (long n : sizes) cases.push_back({seed, n});
  cases.push_back({{false, 0}, 1000});
  cases.push_back({{true, 3}, 1000});
  for (const auto& item : cases) {
    Engine engine = make_engine(item.first);
    std::vector<long> indices;
    for (long i = 0; i < item.second; ++i) indices.push_back(i);
    std::shuffle(indices.begin(), indices.end(), engine);
    std::printf("%s\n    {\"seed\": ", first ? "" : ",");
    print_seed(item.first);
    std::printf(", \"n\": %ld, \"epochs\": [", item.second);
    for (int epoch = 0; epoch < epochs; ++epoch) {
      std::printf("%s[", epoch ? ", " : "");
      for (size_t i = 0; i < indices.size(); ++i) std::printf("%s%ld", i ? ", " : "", indices[i]);
      std::printf("]");
      std::shuffle(indices.begin(), indices.end(), engine);
    }
    std::printf("]}");
    first = false;
  }
  std::printf("\n  ],\n");

  // Raw uniform_int_distribution<ptrdiff_t> draws over wide ranges (the multi-call paths of
  // __independent_bits_engine, which shuffles of realistic sizes never reach).
  struct Range {
    long long low, high;
  };
  const Range ranges[] = {{0, 1},
                          {0, 2},
                          {-5, 5},
                          {0, (1LL << 30) - 1},
                          {0, 1LL << 30},
                          {0, 1LL << 31},
                          {0, (1LL << 40) + 3},
                          {7, (1LL << 62) + 11},
                          {0, INT64_MAX},
                          {-(1LL << 62), (1LL << 62) - 1},
                          {INT64_MIN, INT64_MAX}};
  std::printf("  \"uniform\": [");
  first = true;
  for (const Seed& seed : {Seed{false, 0}, Seed{true, 42}}) {
    for (const Range& range : ranges) {
      Engine engine = make_engine(seed);
      std::uniform_int_distribution<std::ptrdiff_t> distribution(range.low, range.high);
      std::printf("%s\n    {\"seed\": ", first ? "" : ",");
      print_seed(seed);
      std::printf(", \"low\": %lld, \"high\": %lld, \"draws\": [", range.low, range.high);
      for (int i = 0; i < 6; ++i)
        std::printf("%s%lld", i ? ", " : "", static_cast<long long>(distribution(engine)));
      std::printf("]}");
      first = false;
    }
  }
  std::printf("\n  ]\n}\n");
  // minstd_rand itself must be the same engine (uint_fast32_t is 64-bit on Linux).
  std::minstd_rand reference;
  Engine mine;
  for (int i = 0; i < 1000; ++i)
    if (reference() != mine()) return 3;
  return 0;
}
