// Training-mode BatchNorm fused with what follows it in an X3D block, on CPU, for channels-last
// float32 tensors: y = act(z * gate + residual), z = (x - mean) * a + bias, a = weight * invstd.
//
// A (N, C, T, H, W) tensor in channels_last_3d memory is N samples of S = T * H * W rows of C
// contiguous floats. The activation is none, ReLU or SiLU. Both the gate (N, C), a
// squeeze-excitation's, and the residual, a block's shortcut, are optional; a residual never comes
// with SiLU (whose backward recomputes its input without it).
// Forward: `stats` reads x once for each sample's channel sums (the batch mean and variance, and
// the sample means the squeeze-excitation pools), `apply` reads it again to write y. Backward:
// `grad_sums` reads x and dy once for each sample's channel sums of h = dy * act' * gate,
// h * (x - mean) and dy * act' * z (the gate's gradient); `grad_input` reads them again to write
// dx = a h + kx (x - mean) + k0 (k0 per sample and channel: the pooled path's gradient enters
// there) and, with a residual, its gradient dy * act'. Nothing of size N * S * C is stored between
// the passes: ReLU's mask comes from y, SiLU's derivative from recomputing its input. Sums run in
// float over short blocks of rows and in double across blocks, over x minus the mean of its first
// 64 rows (a shift that keeps the variance's sum of squares from cancelling). Registered as
// torch.ops.x3dsearch_batchnorm_act.{stats, apply, grad_sums, grad_input}.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "lanes.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using x3dsearch::Lanes;
using x3dsearch::with_lanes;

enum Activation : int64_t { kIdentity = 0, kRelu = 1, kSilu = 2 };

constexpr int64_t kBlockRows = 64;   // rows summed in float before the sums go into double
constexpr int64_t kGrainRows = 256;  // rows per task of the elementwise passes

// Calls f(c, skip) for vectors of L channels from c covering [0, channels), channels >= L. A last
// vector that would run past the end starts earlier instead: its first `skip` lanes are done.
template <int L, typename F>
void for_vectors(int64_t channels, F&& f) {
  int64_t c = 0;
  for (; c + L <= channels; c += L) f(c, int64_t{0});
  if (c < channels) f(channels - L, c - (channels - L));
}

// exp(x), clamped to [-87, 88] so that it stays finite: 2^n e^r with n = round(x / ln 2) and e^r a
// degree-6 Taylor polynomial on |r| <= ln 2 / 2 (relative error about 1e-7).
template <int L>
typename Lanes<L>::V exp_lanes(typename Lanes<L>::V x) {
  using V = typename Lanes<L>::V;
  typedef int32_t I __attribute__((vector_size(L * sizeof(int32_t))));
  const V lo = V{} - 87.0f, hi = V{} + 88.0f, round = V{} + 12582912.0f;  // 1.5 * 2^23
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V n = (x * 1.44269504088896341f + round) - round;
  const V r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  V p = V{} + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <int L>
typename Lanes<L>::V sigmoid_lanes(typename Lanes<L>::V z) {
  return 1.0f / (1.0f + exp_lanes<L>(-z));
}

// The tensors of one call as flat float pointers (null: absent) and the sizes.
struct Rows {
  int64_t samples, rows_per_sample, channels;
  const float* x;
  const float* mean;
  const float* a;
  const float* bias;
  const float* gate;      // (samples, C)
  const float* residual;  // like x (forward only)
  const float* y;         // the forward output (ReLU's backward)
  const float* dy;        // the output gradient (backward)

  int64_t rows() const { return samples * rows_per_sample; }
};

template <int L>
typename Lanes<L>::V load(const float* p, int64_t row, int64_t c, int64_t channels) {
  return Lanes<L>::load(p + row * channels + c);
}

// z = (x - mean) * a + bias at row r, channels [c, c + L).
template <int L>
typename Lanes<L>::V normalised(const Rows& t, int64_t r, int64_t c) {
  return (load<L>(t.x, r, c, t.channels) - Lanes<L>::load(t.mean + c)) * Lanes<L>::load(t.a + c) +
         Lanes<L>::load(t.bias + c);
}

// The activation's input at row r of sample n: z * gate + residual.
template <int L>
typename Lanes<L>::V pre_activation(const Rows& t, int64_t n, int64_t r, int64_t c, typename Lanes<L>::V z) {
  if (t.gate != nullptr) z *= Lanes<L>::load(t.gate + n * t.channels + c);
  if (t.residual != nullptr) z += load<L>(t.residual, r, c, t.channels);
  return z;
}

// dy * act'(.) at row r of sample n, given z there.
template <int L, int64_t A>
typename Lanes<L>::V activation_grad(const Rows& t, int64_t n, int64_t r, int64_t c, typename Lanes<L>::V z) {
  using V = typename Lanes<L>::V;
  const V dy = load<L>(t.dy, r, c, t.channels);
  if constexpr (A == kRelu) {
    return load<L>(t.y, r, c, t.channels) > V{} ? dy : V{};
  } else if constexpr (A == kSilu) {
    const V v = pre_activation<L>(t, n, r, c, z);
    const V s = sigmoid_lanes<L>(v);
    return dy * s * (1.0f + v * (1.0f - s));
  } else {
    return dy;
  }
}

// Adds terms(n, r, c) over rows [b0, b1) of sample n into acc[v] for the first `count` vectors at `vectors`,
// each row's vectors together (rows read in their order, the accumulators independent chains of adds).
// `count` is a compile-time constant for a group held in registers.
template <int L, int K, typename Count, typename Terms>
void add_rows(std::array<typename Lanes<L>::V, K>* acc, const std::pair<int64_t, int64_t>* vectors, Count count,
              int64_t n, int64_t b0, int64_t b1, Terms& terms) {
  for (int64_t r = b0; r < b1; ++r) {
    for (int64_t v = 0; v < count; ++v) {
      const std::array<typename Lanes<L>::V, K> u = terms(n, r, vectors[v].first);
      for (int k = 0; k < K; ++k) acc[v][k] += u[k];
    }
  }
}

// Adds the accumulators of `count` vectors into sample n's sums in `out`, each channel once.
template <int L, int K>
void add_to_sums(const std::array<typename Lanes<L>::V, K>* acc, const std::pair<int64_t, int64_t>* vectors,
                 int64_t count, int64_t n, int64_t C, std::array<std::vector<double>, K>& out) {
  for (int64_t v = 0; v < count; ++v) {
    const auto [c, skip] = vectors[v];
    for (int k = 0; k < K; ++k) {
      for (int l = static_cast<int>(skip); l < L; ++l) out[k][n * C + c + l] += acc[v][k][l];
    }
  }
}

// The sums over rows [b0, b1) of sample n for the Gn vectors at `vectors`, in registers.
template <int L, int K, int Gn, typename Terms>
void sum_group(const std::pair<int64_t, int64_t>* vectors, int64_t n, int64_t b0, int64_t b1, int64_t C,
               Terms& terms, std::array<std::vector<double>, K>& out) {
  std::array<std::array<typename Lanes<L>::V, K>, Gn> acc{};
  add_rows<L, K>(acc.data(), vectors, std::integral_constant<int64_t, Gn>{}, n, b0, b1, terms);
  add_to_sums<L, K>(acc.data(), vectors, Gn, n, C, out);
}

// Per sample and channel, the sums over the sample's rows of the K vectors terms(n, r, c) returns,
// in K arrays of samples x channels doubles; samples split over threads. Sums of one tensor (Streams 1,
// the statistics) run a few vectors of channels at a time over a block of rows, in registers; sums of
// several tensors (the backward's) read whole rows in order into accumulators of every channel, which
// measured faster at 54-216 channels on an AVX2 CPU, while the statistics measured slower that way
// (docs/performance-batch.md). Both add each channel's rows in the same order.
template <int L, int K, int Streams, typename Terms>
std::array<std::vector<double>, K> sample_sums(const Rows& t, Terms&& terms) {
  using V = typename Lanes<L>::V;
  constexpr int G = K <= 2 ? 4 : 2;  // vectors per group: G * K accumulators stay in registers
  const int64_t C = t.channels;
  std::vector<std::pair<int64_t, int64_t>> vectors;  // (first channel, lanes already done) of each vector
  for_vectors<L>(C, [&](int64_t c, int64_t skip) { vectors.emplace_back(c, skip); });
  const int64_t count = static_cast<int64_t>(vectors.size());
  std::array<std::vector<double>, K> out;
  for (auto& o : out) o.assign(t.samples * C, 0.0);
  at::parallel_for(0, t.samples, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::array<V, K>> acc(Streams == 1 ? 0 : count);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t r0 = n * t.rows_per_sample, r1 = r0 + t.rows_per_sample;
      for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
        const int64_t b1 = std::min(r1, b0 + kBlockRows);
        if constexpr (Streams == 1) {
          int64_t v = 0;
          for (; v + G <= count; v += G) sum_group<L, K, G>(vectors.data() + v, n, b0, b1, C, terms, out);
          switch (count - v) {  // the last vectors, fewer than G
            case 3: sum_group<L, K, 3>(vectors.data() + v, n, b0, b1, C, terms, out); break;
            case 2: sum_group<L, K, 2>(vectors.data() + v, n, b0, b1, C, terms, out); break;
            case 1: sum_group<L, K, 1>(vectors.data() + v, n, b0, b1, C, terms, out); break;
            default: break;
          }
        } else {
          std::fill(acc.begin(), acc.end(), std::array<V, K>{});
          add_rows<L, K>(acc.data(), vectors.data(), count, n, b0, b1, terms);
          add_to_sums<L, K>(acc.data(), vectors.data(), count, n, C, out);
        }
      }
    }
  });
  return out;
}

// Calls f(n, r, c) for every row r (of sample n) and vector of L channels, rows split over threads.
template <int L, typename F>
void for_rows(const Rows& t, F&& f) {
  at::parallel_for(0, t.rows(), kGrainRows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / t.rows_per_sample;
      for_vectors<L>(t.channels, [&](int64_t c, int64_t) { f(n, r, c); });
    }
  });
}

// Calls f with the activation as a compile-time constant.
template <typename F>
void with_activation(int64_t activation, F&& f) {
  if (activation == kRelu) {
    f(std::integral_constant<int64_t, kRelu>{});
  } else if (activation == kSilu) {
    f(std::integral_constant<int64_t, kSilu>{});
  } else {
    f(std::integral_constant<int64_t, kIdentity>{});
  }
}

void check_rows(const at::Tensor& tensor, const at::Tensor& x, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat && tensor.dim() == 5 &&
                  tensor.is_contiguous(at::MemoryFormat::ChannelsLast3d) && tensor.sizes() == x.sizes(),
              name, " must be a float32 CPU tensor in channels_last_3d memory of x's size");
  TORCH_CHECK(tensor.numel() > 0, name, " must not be empty");
}

const float* per_channel(const at::Tensor& tensor, int64_t numel, const char* name) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat && tensor.is_contiguous() &&
                  tensor.numel() == numel,
              name, " must be a contiguous float32 CPU tensor of ", numel, " values");
  return tensor.data_ptr<float>();
}

// The Rows of x and the optional tensors every pass shares.
Rows rows_of(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& a, const at::Tensor& bias,
             const std::optional<at::Tensor>& gate) {
  check_rows(x, x, "x");
  const int64_t N = x.size(0), C = x.size(1);
  Rows t{N, x.numel() / (N * C), C, x.data_ptr<float>()};
  t.mean = per_channel(mean, C, "mean");
  t.a = per_channel(a, C, "scale");
  t.bias = per_channel(bias, C, "bias");
  t.gate = gate.has_value() ? per_channel(*gate, N * C, "gate") : nullptr;
  return t;
}

at::Tensor per_sample_tensor(const std::vector<double>& values, const at::Tensor& like, int64_t samples) {
  const int64_t C = static_cast<int64_t>(values.size()) / samples;
  at::Tensor out = at::empty({samples, C}, like.options());
  std::copy(values.begin(), values.end(), out.data_ptr<float>());
  return out;
}

// (mean, biased variance) per channel and each sample's channel means of x.
std::tuple<at::Tensor, at::Tensor, at::Tensor> stats(const at::Tensor& x) {
  check_rows(x, x, "x");
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  TORCH_CHECK(N * S > 1, "batchnorm_act: more than one value per channel is needed");
  Rows t{N, S, C, x.data_ptr<float>()};
  std::vector<float> shift(C, 0.0f);  // the mean of the first rows: near the batch mean, so no cancellation
  const int64_t first = std::min(N * S, kBlockRows);
  for (int64_t r = 0; r < first; ++r) {
    for (int64_t c = 0; c < C; ++c) shift[c] += t.x[r * C + c] / first;
  }
  std::array<std::vector<double>, 2> s;
  with_lanes(C, [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    using V = typename Lanes<L>::V;
    s = sample_sums<L, 2, 1>(t, [&](int64_t, int64_t r, int64_t c) {
      const V u = load<L>(t.x, r, c, C) - Lanes<L>::load(shift.data() + c);
      return std::array<V, 2>{u, u * u};
    });
  });
  at::Tensor mean = at::empty({C}, x.options()), var = at::empty({C}, x.options());
  std::vector<double> sample_means(N * C);
  for (int64_t c = 0; c < C; ++c) {
    double su = 0.0, sq = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      su += s[0][n * C + c];
      sq += s[1][n * C + c];
      sample_means[n * C + c] = shift[c] + s[0][n * C + c] / S;
    }
    const double d = su / (N * S);
    mean.data_ptr<float>()[c] = static_cast<float>(shift[c] + d);
    var.data_ptr<float>()[c] = static_cast<float>(std::max(0.0, sq / (N * S) - d * d));
  }
  return {mean, var, per_sample_tensor(sample_means, x, N)};
}

// y = act(((x - mean) * scale + bias) * gate + residual).
at::Tensor apply(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& scale, const at::Tensor& bias,
                 int64_t activation, const std::optional<at::Tensor>& gate,
                 const std::optional<at::Tensor>& residual) {
  Rows t = rows_of(x, mean, scale, bias, gate);
  if (residual.has_value()) {
    check_rows(*residual, x, "residual");
    TORCH_CHECK(activation != kSilu, "batchnorm_act: a residual goes with ReLU or no activation");
    t.residual = residual->data_ptr<float>();
  }
  at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  float* out = y.data_ptr<float>();
  with_lanes(t.channels, [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    using V = typename Lanes<L>::V;
    with_activation(activation, [&](auto act) {
      constexpr int64_t A = decltype(act)::value;
      for_rows<L>(t, [&](int64_t n, int64_t r, int64_t c) {
        V v = pre_activation<L>(t, n, r, c, normalised<L>(t, r, c));
        if constexpr (A == kRelu) {
          v = v < V{} ? V{} : v;  // NaN passes through, as in torch.relu
        } else if constexpr (A == kSilu) {
          v *= sigmoid_lanes<L>(v);
        }
        Lanes<L>::store(out + r * t.channels + c, v);
      });
    });
  });
  return y;
}

// Backward with the rows of `grad`: a Rows with dy and y (ReLU) set.
Rows grad_rows_of(const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& y,
                  const at::Tensor& mean, const at::Tensor& scale, const at::Tensor& bias, int64_t activation,
                  const std::optional<at::Tensor>& gate) {
  Rows t = rows_of(x, mean, scale, bias, gate);
  check_rows(grad, x, "grad");
  t.dy = grad.data_ptr<float>();
  if (activation == kRelu) {
    TORCH_CHECK(y.has_value(), "batchnorm_act: ReLU's backward needs y");
    check_rows(*y, x, "y");
    t.y = y->data_ptr<float>();
  }
  return t;
}

// Per sample and channel: sums of h = dy * act' * gate and of h * (x - mean); with a gate, also of
// dy * act' * z (the gate's gradient), else an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> grad_sums(const at::Tensor& grad, const at::Tensor& x,
                                                         const std::optional<at::Tensor>& y, const at::Tensor& mean,
                                                         const at::Tensor& scale, const at::Tensor& bias,
                                                         int64_t activation, const std::optional<at::Tensor>& gate) {
  const Rows t = grad_rows_of(grad, x, y, mean, scale, bias, activation, gate);
  const int64_t C = t.channels;
  std::array<std::vector<double>, 3> s;
  with_lanes(C, [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    using V = typename Lanes<L>::V;
    with_activation(activation, [&](auto act) {
      constexpr int64_t A = decltype(act)::value;
      const auto centred = [&](int64_t r, int64_t c) { return load<L>(t.x, r, c, C) - Lanes<L>::load(t.mean + c); };
      if (t.gate == nullptr) {
        const auto two = sample_sums<L, 2, 2 + (A == kRelu)>(t, [&](int64_t n, int64_t r, int64_t c) {
          const V z = A == kSilu ? normalised<L>(t, r, c) : V{};
          const V h = activation_grad<L, A>(t, n, r, c, z);
          return std::array<V, 2>{h, h * centred(r, c)};
        });
        s = {two[0], two[1], {}};
      } else {
        s = sample_sums<L, 3, 2 + (A == kRelu)>(t, [&](int64_t n, int64_t r, int64_t c) {
          const V z = normalised<L>(t, r, c);
          const V d = activation_grad<L, A>(t, n, r, c, z);
          const V h = d * Lanes<L>::load(t.gate + n * C + c);
          return std::array<V, 3>{h, h * centred(r, c), d * z};
        });
      }
    });
  });
  return {per_sample_tensor(s[0], x, t.samples), per_sample_tensor(s[1], x, t.samples),
          t.gate == nullptr ? at::empty({0}, x.options()) : per_sample_tensor(s[2], x, t.samples)};
}

// dx = scale * h + kx * (x - mean) + k0[sample] and, if `residual`, the residual's gradient
// dy * act' (else an empty tensor).
std::tuple<at::Tensor, at::Tensor> grad_input(const at::Tensor& grad, const at::Tensor& x,
                                              const std::optional<at::Tensor>& y, const at::Tensor& mean,
                                              const at::Tensor& scale, const at::Tensor& bias, int64_t activation,
                                              const std::optional<at::Tensor>& gate, const at::Tensor& kx,
                                              const at::Tensor& k0, bool residual) {
  const Rows t = grad_rows_of(grad, x, y, mean, scale, bias, activation, gate);
  const int64_t C = t.channels;
  const float* kxp = per_channel(kx, C, "kx");
  const float* k0p = per_channel(k0, t.samples * C, "k0");
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  at::Tensor dres = residual ? at::empty_like(x, at::MemoryFormat::ChannelsLast3d) : at::empty({0}, x.options());
  float* out = dx.data_ptr<float>();
  float* rout = residual ? dres.data_ptr<float>() : nullptr;
  with_lanes(C, [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    using V = typename Lanes<L>::V;
    with_activation(activation, [&](auto act) {
      constexpr int64_t A = decltype(act)::value;
      for_rows<L>(t, [&](int64_t n, int64_t r, int64_t c) {
        const V z = A == kSilu ? normalised<L>(t, r, c) : V{};
        const V d = activation_grad<L, A>(t, n, r, c, z);
        const V h = t.gate == nullptr ? d : d * Lanes<L>::load(t.gate + n * C + c);
        const V centred = load<L>(t.x, r, c, C) - Lanes<L>::load(t.mean + c);
        Lanes<L>::store(out + r * C + c, h * Lanes<L>::load(t.a + c) + centred * Lanes<L>::load(kxp + c) +
                                             Lanes<L>::load(k0p + n * C + c));
        if (rout != nullptr) Lanes<L>::store(rout + r * C + c, d);
      });
    });
  });
  return {dx, dres};
}

}  // namespace

TORCH_LIBRARY(x3dsearch_batchnorm_act, m) {
  m.def("stats(Tensor x) -> (Tensor, Tensor, Tensor)", &stats);
  m.def("apply(Tensor x, Tensor mean, Tensor scale, Tensor bias, int activation, Tensor? gate, Tensor? residual) "
        "-> Tensor",
        &apply);
  m.def("grad_sums(Tensor grad, Tensor x, Tensor? y, Tensor mean, Tensor scale, Tensor bias, int activation, "
        "Tensor? gate) -> (Tensor, Tensor, Tensor)",
        &grad_sums);
  m.def("grad_input(Tensor grad, Tensor x, Tensor? y, Tensor mean, Tensor scale, Tensor bias, int activation, "
        "Tensor? gate, Tensor kx, Tensor k0, bool residual) -> (Tensor, Tensor)",
        &grad_input);
}
