// Channelwise (depthwise) 3-D convolution on CPU for channels-last float32 tensors.
//
// Activations are (N, C, T, H, W) tensors in channels_last_3d memory, that is (N, T, H, W, C)
// in memory, so every tap reads a contiguous run of C floats and the inner loops vectorise over
// channels. Weights are passed tap-major as (K, C) with K = KT * KH * KW. The temporal stride
// is 1 and H and W share one spatial stride. Work is split over (sample, frame) rows for the
// outputs and over samples for the weight gradient, which each sample accumulates on its own.
// The functions are registered as torch.ops.x3dsearch_channelwise3d.{forward, backward_input,
// backward_weight}; only light headers are included, to keep the one-time compile short.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "lanes.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using x3dsearch::Lanes;
using x3dsearch::with_lanes;

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

constexpr int kAccumulators = 4;  // independent FMA chains in flight, to hide the FMA latency

// Calls f(c, skip, nv) for blocks of nv vectors of L channels from c covering [0, channels): blocks
// of NV vectors, then what is left as one block of NV vectors if that needs more than one vector,
// else as single vectors. A last block that would run past the end starts earlier instead (no
// scalar tail): its first `skip` channels belong to the previous block.
template <int L, int NV, typename F>
void for_channel_blocks(int64_t channels, F&& f) {
  int64_t c = 0;
  for (; c + NV * L <= channels; c += NV * L) f(c, int64_t{0}, std::integral_constant<int, NV>{});
  if (c < channels && channels - c > L && c > 0) {
    f(channels - NV * L, c - (channels - NV * L), std::integral_constant<int, NV>{});
    return;
  }
  for (int64_t c0 = c; c0 < channels; c0 += L) {
    const int64_t start = std::min(c0, channels - L);
    f(start, c0 - start, std::integral_constant<int, 1>{});
  }
}

// Destination positions first, first + step, ... (count of them) whose taps are those of `first`
// with every source position moved on by the member's index times a fixed shift.
struct Run {
  int64_t first, count;
};

// Splits the positions of one axis into runs of at most kAccumulators positions `step` apart.
std::vector<Run> runs_of(const Taps& taps, int64_t step, int64_t shift) {
  const auto shifted = [&](int64_t a, int64_t b, int64_t by) {
    if (taps[a].size() != taps[b].size()) return false;
    for (size_t k = 0; k < taps[a].size(); ++k) {
      if (taps[a][k].first != taps[b][k].first || taps[a][k].second + by != taps[b][k].second) return false;
    }
    return true;
  };
  const int64_t size = static_cast<int64_t>(taps.size());
  std::vector<bool> done(size, false);
  std::vector<Run> runs;
  for (int64_t first = 0; first < size; ++first) {
    if (done[first]) continue;
    int64_t count = 1;
    while (count < kAccumulators && first + count * step < size && !done[first + count * step] &&
           shifted(first, first + count * step, count * shift)) {
      done[first + count * step] = true;
      ++count;
    }
    runs.push_back({first, count});
  }
  return runs;
}

// out[g * dst_step + v * L] = sum_i src[xoff[i] + g * src_step + v * L] * wt[woff[i] + v * L] for the
// G positions of a run and NV vectors of L channels; with fewer than kAccumulators positions the
// taps are also split over U partial sums so that enough independent FMA chains hide the latency.
template <int L, int G, int NV>
inline void gather_block(const float* src, const float* wt, const int64_t* xoff, const int64_t* woff,
                         int64_t count, int64_t src_step, int64_t dst_step, float* out) {
  using V = typename Lanes<L>::V;
  constexpr int U = G >= kAccumulators ? 1 : kAccumulators / G;
  V acc[U][G][NV] = {};
  const auto tap = [&](int u, int64_t i) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const V w = Lanes<L>::load(wt + woff[i] + v * L);
      const float* x = src + xoff[i] + v * L;
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) acc[u][g][v] += Lanes<L>::load(x + g * src_step) * w;
    }
  };
  int64_t i = 0;
  for (; i + U <= count; i += U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) tap(u, i + u);
  }
  for (; i < count; ++i) tap(0, i);
#pragma GCC unroll 4
  for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      V sum = acc[0][g][v];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) sum += acc[u][g][v];
      Lanes<L>::store(out + g * dst_step + v * L, sum);
    }
  }
}

// dst[n, t, i, j] = sum over (kt, st) in tt[t], (kh, si) in th[i], (kw, sj) in tw[j] of
// src[n, st, si, sj] * wt[(kt, kh, kw)], channelwise: the forward pass and the input gradient.
// Positions j along W go in runs sharing their taps (`step` apart, sources `shift` apart), so
// each weight vector loaded serves the whole run.
void gather(const float* src, const float* wt, float* dst, const Geometry& g, const int64_t src_dims[3],
            const int64_t dst_dims[3], const Taps& tt, const Taps& th, const Taps& tw, int64_t step,
            int64_t shift) {
  const int64_t C = g.channels;
  const int64_t ST = src_dims[0], SH = src_dims[1], SW = src_dims[2];
  const int64_t DT = dst_dims[0], DH = dst_dims[1], DW = dst_dims[2];
  const int64_t KH = g.h.kernel, KW = g.w.kernel;
  const std::vector<Run> runs = runs_of(tw, step, shift);
  // each run's taps along W as (source offset, weight offset), in floats
  std::vector<std::vector<std::pair<int64_t, int64_t>>> columns(runs.size());
  for (size_t r = 0; r < runs.size(); ++r) {
    for (const auto& [kw, sj] : tw[runs[r].first]) columns[r].emplace_back(sj * C, kw * C);
  }
  with_lanes(C, [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    at::parallel_for(0, g.batch * DT, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> xoff(g.taps()), woff(g.taps()), xrow(g.t.kernel * g.h.kernel), wrow(xrow.size());
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / DT, t = row % DT;
        for (int64_t i = 0; i < DH; ++i) {
          float* out = dst + (row * DH + i) * DW * C;
          // the taps along T and H of output row (t, i), once for all its runs
          int64_t rows = 0;
          for (const auto& [kt, st] : tt[t]) {
            for (const auto& [kh, si] : th[i]) {
              xrow[rows] = ((n * ST + st) * SH + si) * SW * C;
              wrow[rows] = (kt * KH + kh) * KW * C;
              ++rows;
            }
          }
          for (size_t r = 0; r < runs.size(); ++r) {
            const Run& run = runs[r];
            int64_t count = 0;
            for (int64_t a = 0; a < rows; ++a) {
              for (const auto& [xcol, wcol] : columns[r]) {
                xoff[count] = xrow[a] + xcol;
                woff[count] = wrow[a] + wcol;
                ++count;
              }
            }
            for_channel_blocks<L, 2>(C, [&](int64_t c, int64_t, auto nv) {
              const auto block = [&](auto members) {
                gather_block<L, decltype(members)::value, decltype(nv)::value>(
                    src + c, wt + c, xoff.data(), woff.data(), count, shift * C, step * C, out + run.first * C + c);
              };
              switch (run.count) {
                case 4: block(std::integral_constant<int, 4>{}); break;
                case 3: block(std::integral_constant<int, 3>{}); break;
                case 2: block(std::integral_constant<int, 2>{}); break;
                default: block(std::integral_constant<int, 1>{});
              }
            });
          }
        }
      }
    });
  });
}

// acc[p][v][k] += d[j*C + v*L] * x[(j*stride + k)*C + v*L] over output pixels j in [j0, j1): the K
// taps along W share each load of d; NV vectors of channels, and with one vector two interleaved
// pixels p, give the independent FMA chains.
template <int L, int NV, int K>
inline void weight_row(const float* d, const float* x, int64_t j0, int64_t j1, int64_t C, int64_t stride,
                       typename Lanes<L>::V (&acc)[NV == 1 ? 2 : 1][NV][K]) {
  constexpr int P = NV == 1 ? 2 : 1;
  int64_t j = j0;
  for (; j + P <= j1; j += P) {
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const auto dv = Lanes<L>::load(d + (j + p) * C + v * L);
#pragma GCC unroll 3
        for (int k = 0; k < K; ++k) acc[p][v][k] += dv * Lanes<L>::load(x + ((j + p) * stride + k) * C + v * L);
      }
    }
  }
  for (; j < j1; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const auto dv = Lanes<L>::load(d + j * C + v * L);
#pragma GCC unroll 3
      for (int k = 0; k < K; ++k) acc[0][v][k] += dv * Lanes<L>::load(x + (j * stride + k) * C + v * L);
    }
  }
}

// One sample's weight-gradient work on output frames [t0, t1) and NV * L channels from c.
struct WeightTile {
  const float* x;
  const float* dy;
  float* partial;  // (K, C) sums of this sample
  int64_t n, t0, t1, c, skip;  // the first `skip` channels were done by the previous block
};

// partial[(kt, kh, kw)] += sum over the outputs (t, i, j) that the tap reaches of dy[n, t, i, j] *
// x[n, input position of the tap], for taps kw0..kw0+K-1 along W.
template <int L, int NV, int K>
void weight_taps(const WeightTile& tile, const Geometry& g, int64_t kw0,
                 const std::vector<std::pair<int64_t, int64_t>>& rows,
                 const std::vector<std::pair<int64_t, int64_t>>& cols) {
  using V = typename Lanes<L>::V;
  const int64_t C = g.channels, s = g.h.stride;
  // output pixels where all K taps fall inside the input; the others are done tap by tap
  int64_t lo = 0, hi = g.w.out;
  for (int k = 0; k < K; ++k) {
    lo = std::max(lo, cols[kw0 + k].first);
    hi = std::min(hi, cols[kw0 + k].second);
  }
  hi = std::max(lo, hi);
  for (int64_t kt = 0; kt < g.t.kernel; ++kt) {
    const int64_t t0 = std::max(tile.t0, g.t.pad - kt), t1 = std::min(tile.t1, g.t.in + g.t.pad - kt);
    for (int64_t kh = 0; kh < g.h.kernel; ++kh) {
      V acc[NV == 1 ? 2 : 1][NV][K] = {};
      for (int64_t t = t0; t < t1; ++t) {
        for (int64_t i = rows[kh].first; i < rows[kh].second; ++i) {
          const float* d = tile.dy + ((tile.n * g.t.out + t) * g.h.out + i) * g.w.out * C + tile.c;
          const float* xr = tile.x + (((tile.n * g.t.in + t + kt - g.t.pad) * g.h.in + i * s + kh - g.h.pad) *
                                      g.w.in + kw0 - g.w.pad) * C + tile.c;
          weight_row<L, NV, K>(d, xr, lo, hi, C, s, acc);
          for (int k = 0; k < K; ++k) {
            const auto [first, last] = cols[kw0 + k];
            const auto edge = [&](int64_t j) {
              for (int v = 0; v < NV; ++v) {
                acc[0][v][k] += Lanes<L>::load(d + j * C + v * L) * Lanes<L>::load(xr + (j * s + k) * C + v * L);
              }
            };
            for (int64_t j = first; j < std::min(lo, last); ++j) edge(j);
            for (int64_t j = std::max(hi, first); j < last; ++j) edge(j);
          }
        }
      }
      for (int k = 0; k < K; ++k) {
        float* out = tile.partial + ((kt * g.h.kernel + kh) * g.w.kernel + kw0 + k) * C + tile.c;
        for (int v = 0; v < NV; ++v) {
          V sum = acc[0][v][k];
          if constexpr (NV == 1) sum += acc[1][v][k];
          const int64_t first = std::clamp<int64_t>(tile.skip - v * L, 0, L);
          if (first == 0) {
            Lanes<L>::store(out + v * L, Lanes<L>::load(out + v * L) + sum);
          } else {
            for (int64_t l = first; l < L; ++l) out[v * L + l] += sum[l];
          }
        }
      }
    }
  }
}

// All taps of one tile: K = 3 taps along W at a time.
template <int L, int NV>
void weight_tile(const WeightTile& tile, const Geometry& g, const std::vector<std::pair<int64_t, int64_t>>& rows,
                 const std::vector<std::pair<int64_t, int64_t>>& cols) {
  for (int64_t kw0 = 0; kw0 < g.w.kernel; kw0 += 3) {
    switch (std::min<int64_t>(3, g.w.kernel - kw0)) {
      case 3: weight_taps<L, NV, 3>(tile, g, kw0, rows, cols); break;
      case 2: weight_taps<L, NV, 2>(tile, g, kw0, rows, cols); break;
      default: weight_taps<L, NV, 1>(tile, g, kw0, rows, cols);
    }
  }
}

// The (K, C) weight gradient of sample n into partial. Frames go in chunks whose inputs stay in
// the L2 cache, channels in blocks of up to kAccumulators vectors.
template <int L>
void weight_sample(const float* x, const float* dy, float* partial, const Geometry& g, int64_t n) {
  constexpr int64_t kChunkBytes = 256 * 1024;
  const int64_t frame_bytes = (g.h.in * g.w.in + g.h.out * g.w.out) * g.channels * sizeof(float);
  const int64_t frames = std::max<int64_t>(1, kChunkBytes / frame_bytes);
  std::vector<std::pair<int64_t, int64_t>> rows, cols;
  for (int64_t k = 0; k < g.h.kernel; ++k) rows.push_back(g.h.outputs_of_tap(k));
  for (int64_t k = 0; k < g.w.kernel; ++k) cols.push_back(g.w.outputs_of_tap(k));
  for (int64_t t0 = 0; t0 < g.t.out; t0 += frames) {
    for_channel_blocks<L, kAccumulators>(g.channels, [&](int64_t c, int64_t skip, auto nv) {
      const WeightTile tile{x, dy, partial, n, t0, std::min(t0 + frames, g.t.out), c, skip};
      weight_tile<L, decltype(nv)::value>(tile, g, rows, cols);
    });
  }
}

void check(const at::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat, name,
              " must be a float32 CPU tensor");
  TORCH_CHECK(tensor.dim() == 5 && tensor.is_contiguous(at::MemoryFormat::ChannelsLast3d), name,
              " must be a 5-D channels_last_3d-contiguous tensor");
}

void check_grad(const at::Tensor& grad, const Geometry& g) {
  check(grad, "grad_output");
  const std::vector<int64_t> expected{g.batch, g.channels, g.t.out, g.h.out, g.w.out};
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(expected), "grad_output does not match the output size");
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
at::Tensor taps_by_channel(const at::Tensor& weight, int64_t channels) {
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 5 &&
                  weight.size(0) == channels && weight.size(1) == 1,
              "weight must be a float32 CPU (C, 1, KT, KH, KW) tensor, one filter per channel");
  return weight.reshape({weight.size(0), -1}).t().contiguous();
}

at::Tensor channels_last_empty(const at::Tensor& like, const Geometry& g, bool output) {
  const auto pick = [output](const Axis& a) { return output ? a.out : a.in; };
  return at::empty({g.batch, g.channels, pick(g.t), pick(g.h), pick(g.w)},
                   like.options().memory_format(at::MemoryFormat::ChannelsLast3d));
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& weight, int64_t stride, at::IntArrayRef padding) {
  check(x, "input");
  const Geometry g = geometry(x.sizes(), weight.sizes().slice(2), stride, padding);
  const at::Tensor wt = taps_by_channel(weight, g.channels);
  at::Tensor y = channels_last_empty(x, g, true);
  const int64_t src[3] = {g.t.in, g.h.in, g.w.in}, dst[3] = {g.t.out, g.h.out, g.w.out};
  gather(x.data_ptr<float>(), wt.data_ptr<float>(), y.data_ptr<float>(), g, src, dst,
         g.t.taps_of_outputs(), g.h.taps_of_outputs(), g.w.taps_of_outputs(), 1, g.w.stride);
  return y;
}

at::Tensor backward_input(const at::Tensor& grad, const at::Tensor& weight, at::IntArrayRef input_size,
                          int64_t stride, at::IntArrayRef padding) {
  const Geometry g = geometry(input_size, weight.sizes().slice(2), stride, padding);
  check_grad(grad, g);
  const at::Tensor wt = taps_by_channel(weight, g.channels);
  at::Tensor dx = channels_last_empty(grad, g, false);
  const int64_t src[3] = {g.t.out, g.h.out, g.w.out}, dst[3] = {g.t.in, g.h.in, g.w.in};
  gather(grad.data_ptr<float>(), wt.data_ptr<float>(), dx.data_ptr<float>(), g, src, dst,
         g.t.taps_of_inputs(), g.h.taps_of_inputs(), g.w.taps_of_inputs(), g.w.stride, 1);
  return dx;
}

at::Tensor backward_weight(const at::Tensor& grad, const at::Tensor& x, at::IntArrayRef kernel, int64_t stride,
                           at::IntArrayRef padding) {
  check(x, "input");
  const Geometry g = geometry(x.sizes(), kernel, stride, padding);
  check_grad(grad, g);
  at::Tensor partial = at::zeros({g.batch, g.taps(), g.channels}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* dyp = grad.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  with_lanes(g.channels, [&](auto lanes) {
    at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        weight_sample<decltype(lanes)::value>(xp, dyp, pp + n * g.taps() * g.channels, g, n);
      }
    });
  });
  return partial.sum(0).t().reshape({g.channels, 1, kernel[0], kernel[1], kernel[2]});
}

}  // namespace

TORCH_LIBRARY(x3dsearch_channelwise3d, m) {
  m.def("forward(Tensor x, Tensor weight, int stride, int[] padding) -> Tensor", &forward);
  m.def("backward_input(Tensor grad, Tensor weight, int[] input_size, int stride, int[] padding) -> Tensor",
        &backward_input);
  m.def("backward_weight(Tensor grad, Tensor x, int[] kernel, int stride, int[] padding) -> Tensor",
        &backward_weight);
}
