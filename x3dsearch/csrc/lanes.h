// Vectors of L floats for the CPU kernels (gcc/clang vector extension), shared by the channelwise
// conv and the fused BatchNorm.

#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace x3dsearch {

// A vector of L floats (gcc/clang vector extension), loaded and stored unaligned.
template <int L>
struct Lanes {
  typedef float V __attribute__((vector_size(L * sizeof(float))));

  static V load(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }

  static void store(float* p, V v) { std::memcpy(p, &v, sizeof(V)); }
};

// The widest vector the build's registers hold: a wider one is split into several registers, and
// passed through memory between functions that are not inlined.
#if defined(__AVX512F__)
constexpr int kMaxLanes = 16;
#elif defined(__AVX__)
constexpr int kMaxLanes = 8;
#else
constexpr int kMaxLanes = 4;
#endif

// Calls f with the widest vector (16, 8, 4 or 1 lanes, at most kMaxLanes) that fits in the channels.
template <typename F>
void with_lanes(int64_t channels, F&& f) {
  if (kMaxLanes >= 16 && channels >= 16) {
    f(std::integral_constant<int, 16>{});
  } else if (kMaxLanes >= 8 && channels >= 8) {
    f(std::integral_constant<int, 8>{});
  } else if (channels >= 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

}  // namespace x3dsearch
