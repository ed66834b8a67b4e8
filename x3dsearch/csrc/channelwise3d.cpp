// Channelwise (depthwise) 3-D convolution on CPU for channels-last float32 tensors.
//
// Activations are (N, C, T, H, W) tensors in channels_last_3d memory, that is (N, T, H, W, C)
// in memory, so every tap reads a contiguous run of C floats and the inner loops vectorise over
// channels. Weights are passed tap-major as (K, C) with K = KT * KH * KW. The temporal stride
// is 1 and H and W share one spatial stride. Work is split over (sample, frame) rows for the
// outputs and over samples for the weight gradient, which each sample accumulates on its own.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using Taps = std::vector<std::vector<std::pair<int64_t, int64_t>>>;

// One axis of the convolution.
struct Axis {
  int64_t in, out, kernel, pad, stride;

  // For each output position, the (kernel index, input position) pairs inside the input.
  Taps taps_of_outputs() const {
    Taps taps(out);
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t k = 0; k < kernel; ++k) {
        const int64_t i = o * stride + k - pad;
        if (i >= 0 && i < in) taps[o].emplace_back(k, i);
      }
    }
    return taps;
  }

  // For each input position, the (kernel index, output position) pairs that read it.
  Taps taps_of_inputs() const {
    Taps taps(in);
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t k = 0; k < kernel; ++k) {
        const int64_t i = o * stride + k - pad;
        if (i >= 0 && i < in) taps[i].emplace_back(k, o);
      }
    }
    return taps;
  }

  // The output positions [first, last) whose kernel index k reads inside the input.
  std::pair<int64_t, int64_t> outputs_of_tap(int64_t k) const {
    int64_t first = 0;
    while (first < out && first * stride + k - pad < 0) ++first;
    int64_t last = out;
    while (last > first && (last - 1) * stride + k - pad >= in) --last;
    return {first, last};
  }
};

struct Geometry {
  int64_t batch, channels;
  Axis t, h, w;

  int64_t taps() const { return t.kernel * h.kernel * w.kernel; }
};

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

// Calls f with the widest vector (16, 8, 4 or 1 lanes) that fits in the channels.
template <typename F>
void with_lanes(int64_t channels, F&& f) {
  if (channels >= 16) {
    f(std::integral_constant<int, 16>{});
  } else if (channels >= 8) {
    f(std::integral_constant<int, 8>{});
  } else if (channels >= 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// Start of the channel block after c0 of width L; the last block overlaps its predecessor
// (recomputing identical values) instead of running a scalar tail.
inline int64_t block_start(int64_t c0, int64_t channels, int64_t L) { return std::min(c0, channels - L); }

// out[c:c+L] = sum_i src[xoff[i] + c:...] * wt[woff[i] + c:...] for every channel block, four
// independent accumulators hiding the FMA latency.
template <int L>
void dot(const float* src, const float* wt, const int64_t* xoff, const int64_t* woff, int64_t count,
         int64_t channels, float* out) {
  using V = typename Lanes<L>::V;
  for (int64_t c0 = 0; c0 < channels; c0 += L) {
    const int64_t c = block_start(c0, channels, L);
    V a0{}, a1{}, a2{}, a3{};
    int64_t i = 0;
    for (; i + 3 < count; i += 4) {
      a0 += Lanes<L>::load(src + xoff[i] + c) * Lanes<L>::load(wt + woff[i] + c);
      a1 += Lanes<L>::load(src + xoff[i + 1] + c) * Lanes<L>::load(wt + woff[i + 1] + c);
      a2 += Lanes<L>::load(src + xoff[i + 2] + c) * Lanes<L>::load(wt + woff[i + 2] + c);
      a3 += Lanes<L>::load(src + xoff[i + 3] + c) * Lanes<L>::load(wt + woff[i + 3] + c);
    }
    for (; i < count; ++i) a0 += Lanes<L>::load(src + xoff[i] + c) * Lanes<L>::load(wt + woff[i] + c);
    Lanes<L>::store(out + c, (a0 + a1) + (a2 + a3));
  }
}

// dst[n, t, i, j] = sum over (kt, st) in tt[t], (kh, si) in th[i], (kw, sj) in tw[j] of
// src[n, st, si, sj] * wt[(kt, kh, kw)], channelwise: the forward pass and the input gradient.
void gather(const float* src, const float* wt, float* dst, const Geometry& g, const int64_t src_dims[3],
            const int64_t dst_dims[3], const Taps& tt, const Taps& th, const Taps& tw) {
  const int64_t C = g.channels;
  const int64_t ST = src_dims[0], SH = src_dims[1], SW = src_dims[2];
  const int64_t DT = dst_dims[0], DH = dst_dims[1], DW = dst_dims[2];
  const int64_t KH = g.h.kernel, KW = g.w.kernel;
  with_lanes(C, [&](auto lanes) {
    at::parallel_for(0, g.batch * DT, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> xoff(g.taps()), woff(g.taps());
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / DT, t = row % DT;
        for (int64_t i = 0; i < DH; ++i) {
          for (int64_t j = 0; j < DW; ++j) {
            int64_t count = 0;
            for (const auto& [kt, st] : tt[t]) {
              for (const auto& [kh, si] : th[i]) {
                for (const auto& [kw, sj] : tw[j]) {
                  xoff[count] = (((n * ST + st) * SH + si) * SW + sj) * C;
                  woff[count] = ((kt * KH + kh) * KW + kw) * C;
                  ++count;
                }
              }
            }
            dot<decltype(lanes)::value>(src, wt, xoff.data(), woff.data(), count, C,
                                        dst + ((row * DH + i) * DW + j) * C);
          }
        }
      }
    });
  });
}

// partial[n, k] += sum over the outputs (t, i, j) that tap k reaches of dy[n, t, i, j] * x[n, input
// position of tap k], for one sample n and output frame t; four accumulators over pixels.
template <int L>
void weight_frame(const float* x, const float* dy, float* partial, const Geometry& g, int64_t n, int64_t t,
                  const std::vector<std::pair<int64_t, int64_t>>& rows,
                  const std::vector<std::pair<int64_t, int64_t>>& cols) {
  using V = typename Lanes<L>::V;
  const int64_t C = g.channels, s = g.h.stride;
  const int64_t H = g.h.in, W = g.w.in, Ho = g.h.out, Wo = g.w.out;
  for (int64_t c0 = 0; c0 < C; c0 += L) {
    const int64_t c = block_start(c0, C, L), skip = c0 - c;
    for (int64_t kt = 0; kt < g.t.kernel; ++kt) {
      const int64_t ti = t + kt - g.t.pad;
      if (ti < 0 || ti >= g.t.in) continue;
      for (int64_t kh = 0; kh < g.h.kernel; ++kh) {
        for (int64_t kw = 0; kw < g.w.kernel; ++kw) {
          V a0{}, a1{}, a2{}, a3{};
          const auto [j0, j1] = cols[kw];
          for (int64_t i = rows[kh].first; i < rows[kh].second; ++i) {
            const float* d = dy + ((n * g.t.out + t) * Ho + i) * Wo * C + c;
            const float* xr = x + (((n * g.t.in + ti) * H + i * s + kh - g.h.pad) * W + kw - g.w.pad) * C + c;
            int64_t j = j0;
            for (; j + 3 < j1; j += 4) {
              a0 += Lanes<L>::load(d + j * C) * Lanes<L>::load(xr + j * s * C);
              a1 += Lanes<L>::load(d + (j + 1) * C) * Lanes<L>::load(xr + (j + 1) * s * C);
              a2 += Lanes<L>::load(d + (j + 2) * C) * Lanes<L>::load(xr + (j + 2) * s * C);
              a3 += Lanes<L>::load(d + (j + 3) * C) * Lanes<L>::load(xr + (j + 3) * s * C);
            }
            for (; j < j1; ++j) a0 += Lanes<L>::load(d + j * C) * Lanes<L>::load(xr + j * s * C);
          }
          const V sum = (a0 + a1) + (a2 + a3);
          float* out = partial + (((n * g.t.kernel + kt) * g.h.kernel + kh) * g.w.kernel + kw) * C + c;
          for (int64_t l = skip; l < L; ++l) out[l] += sum[l];
        }
      }
    }
  }
}

void check(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat, name,
              " must be a float32 CPU tensor");
  TORCH_CHECK(tensor.dim() == 5 && tensor.is_contiguous(at::MemoryFormat::ChannelsLast3d), name,
              " must be a 5-D channels_last_3d-contiguous tensor");
}

Geometry geometry(at::IntArrayRef input, at::IntArrayRef kernel, int64_t stride, at::IntArrayRef padding) {
  TORCH_CHECK(input.size() == 5 && kernel.size() == 3 && padding.size() == 3 && stride >= 1,
              "expected a 5-D input, a 3-D kernel and padding, and a positive stride");
  auto axis = [](int64_t in, int64_t k, int64_t pad, int64_t s) {
    TORCH_CHECK(in + 2 * pad >= k, "input smaller than the kernel");
    return Axis{in, (in + 2 * pad - k) / s + 1, k, pad, s};
  };
  return Geometry{input[0], input[1], axis(input[2], kernel[0], padding[0], 1),
                  axis(input[3], kernel[1], padding[1], stride), axis(input[4], kernel[2], padding[2], stride)};
}

// The (C, 1, KT, KH, KW) weight as a contiguous tap-major (K, C) matrix.
at::Tensor taps_by_channel(const at::Tensor& weight) {
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 5 && weight.size(1) == 1,
              "weight must be a float32 (C, 1, KT, KH, KW) tensor");
  return weight.reshape({weight.size(0), -1}).t().contiguous();
}

at::Tensor channels_last_empty(const at::Tensor& like, const Geometry& g, bool output) {
  const auto pick = [output](const Axis& a) { return output ? a.out : a.in; };
  return at::empty({g.batch, g.channels, pick(g.t), pick(g.h), pick(g.w)},
                   like.options().memory_format(at::MemoryFormat::ChannelsLast3d));
}

}  // namespace

at::Tensor forward(const at::Tensor& x, const at::Tensor& weight, int64_t stride, at::IntArrayRef padding) {
  check(x, "input");
  const Geometry g = geometry(x.sizes(), weight.sizes().slice(2), stride, padding);
  TORCH_CHECK(weight.size(0) == g.channels, "weight must have one filter per input channel");
  const at::Tensor wt = taps_by_channel(weight);
  at::Tensor y = channels_last_empty(x, g, true);
  const int64_t src[3] = {g.t.in, g.h.in, g.w.in}, dst[3] = {g.t.out, g.h.out, g.w.out};
  gather(x.data_ptr<float>(), wt.data_ptr<float>(), y.data_ptr<float>(), g, src, dst,
         g.t.taps_of_outputs(), g.h.taps_of_outputs(), g.w.taps_of_outputs());
  return y;
}

at::Tensor backward_input(const at::Tensor& grad, const at::Tensor& weight, at::IntArrayRef input_size,
                          int64_t stride, at::IntArrayRef padding) {
  check(grad, "grad_output");
  const Geometry g = geometry(input_size, weight.sizes().slice(2), stride, padding);
  const at::Tensor wt = taps_by_channel(weight);
  at::Tensor dx = channels_last_empty(grad, g, false);
  const int64_t src[3] = {g.t.out, g.h.out, g.w.out}, dst[3] = {g.t.in, g.h.in, g.w.in};
  gather(grad.data_ptr<float>(), wt.data_ptr<float>(), dx.data_ptr<float>(), g, src, dst,
         g.t.taps_of_inputs(), g.h.taps_of_inputs(), g.w.taps_of_inputs());
  return dx;
}

at::Tensor backward_weight(const at::Tensor& grad, const at::Tensor& x, at::IntArrayRef kernel, int64_t stride,
                           at::IntArrayRef padding) {
  check(grad, "grad_output");
  check(x, "input");
  const Geometry g = geometry(x.sizes(), kernel, stride, padding);
  std::vector<std::pair<int64_t, int64_t>> rows, cols;
  for (int64_t k = 0; k < g.h.kernel; ++k) rows.push_back(g.h.outputs_of_tap(k));
  for (int64_t k = 0; k < g.w.kernel; ++k) cols.push_back(g.w.outputs_of_tap(k));
  at::Tensor partial = at::zeros({g.batch, g.taps(), g.channels}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* dyp = grad.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t t = 0; t < g.t.out; ++t) {
        with_lanes(g.channels, [&](auto lanes) {
          weight_frame<decltype(lanes)::value>(xp, dyp, pp, g, n, t, rows, cols);
        });
      }
    }
  });
  return partial.sum(0).t().reshape({g.channels, 1, kernel[0], kernel[1], kernel[2]});
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "channelwise conv3d forward (channels-last float32)");
  m.def("backward_input", &backward_input, "gradient of the channelwise conv3d input");
  m.def("backward_weight", &backward_weight, "gradient of the channelwise conv3d weight");
}
