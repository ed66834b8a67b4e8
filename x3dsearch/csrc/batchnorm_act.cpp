// Training-mode BatchNorm fused with the activation after it, on CPU, for channels-last float32
// tensors.
//
// A (N, C, T, H, W) tensor in channels_last_3d memory is M = N * T * H * W rows of C contiguous
// floats. The forward pass reads x twice: once for each channel's batch mean and variance, once
// to write y = act(z + residual), z = (x - mean) * a + bias (the residual, optional, with ReLU or
// no activation: the end of a residual block). The backward pass reads x and the output gradient
// twice: once for each channel's sums of g = dy * act'(.) and g * (x - mean), once to write the
// input gradient (and g, the residual's). g is recomputed, never stored: ReLU's mask comes from y,
// SiLU's derivative from z. Sums run in float over short blocks of rows and in double across
// blocks, over x minus its first row (a shift that keeps the variance's sum of squares from
// cancelling). Registered as torch.ops.x3dsearch_batchnorm_act.{forward, backward}.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "lanes.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

namespace {

using x3dsearch::Lanes;
using x3dsearch::with_lanes;

enum Activation : int64_t { kIdentity = 0, kRelu = 1, kSilu = 2 };

constexpr int64_t kBlockRows = 64;  // rows summed in float before the sums go into double
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

template <int L, int64_t A>
typename Lanes<L>::V activate(typename Lanes<L>::V z) {
  using V = typename Lanes<L>::V;
  if constexpr (A == kRelu) {
    return z < V{} ? V{} : z;  // NaN passes through, as in torch.relu
  } else if constexpr (A == kSilu) {
    return z * sigmoid_lanes<L>(z);
  } else {
    return z;
  }
}

// The rows, the per-channel mean, scale a = weight * invstd and bias of z = (x - mean) * a + bias
// (centred first: x * a + (bias - mean * a) loses digits when the spread is small), and the tensors
// of the backward pass, as flat float pointers.
struct Rows {
  int64_t rows, channels;
  const float* x;
  const float* y;   // the forward output, read by ReLU's backward only
  const float* dy;  // the output gradient (backward only)
  const float* mean;
  const float* a;
  const float* bias;
  const float* residual;  // added to z before the activation (forward only; may be null)
};

template <int L>
typename Lanes<L>::V normalised(const Rows& t, int64_t r, int64_t c) {
  return (Lanes<L>::load(t.x + r * t.channels + c) - Lanes<L>::load(t.mean + c)) * Lanes<L>::load(t.a + c) +
         Lanes<L>::load(t.bias + c);
}

// g = dy * act'(z) at row r, channels [c, c + L).
template <int L, int64_t A>
typename Lanes<L>::V grad_of(const Rows& t, int64_t r, int64_t c) {
  using V = typename Lanes<L>::V;
  const int64_t i = r * t.channels + c;
  const V dy = Lanes<L>::load(t.dy + i);
  if constexpr (A == kRelu) {
    return Lanes<L>::load(t.y + i) > V{} ? dy : V{};
  } else if constexpr (A == kSilu) {
    const V z = normalised<L>(t, r, c);
    const V s = sigmoid_lanes<L>(z);
    return dy * s * (1.0f + z * (1.0f - s));
  } else {
    return dy;
  }
}

// Adds, per channel, the sums over rows [r0, r1) of u and u * v into su and suv (double), where
// u and v are given by pair(r, c) as vectors of L channels; two rows per step for two FMA chains.
template <int L, typename Pair>
void sum_rows(const Rows& t, int64_t r0, int64_t r1, Pair&& pair, double* su, double* suv) {
  using V = typename Lanes<L>::V;
  for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
    const int64_t b1 = std::min(r1, b0 + kBlockRows);
    for_vectors<L>(t.channels, [&](int64_t c, int64_t skip) {
      V s0{}, s1{}, q0{}, q1{};
      int64_t r = b0;
      for (; r + 1 < b1; r += 2) {
        const auto [u0, v0] = pair(r, c);
        const auto [u1, v1] = pair(r + 1, c);
        s0 += u0;
        q0 += u0 * v0;
        s1 += u1;
        q1 += u1 * v1;
      }
      if (r < b1) {
        const auto [u0, v0] = pair(r, c);
        s0 += u0;
        q0 += u0 * v0;
      }
      const V s = s0 + s1, q = q0 + q1;
      for (int l = static_cast<int>(skip); l < L; ++l) {
        su[c + l] += s[l];
        suv[c + l] += q[l];
      }
    });
  }
}

// Per-channel sums of u and u * v over all rows, split over threads in contiguous row ranges.
template <int L, typename Pair>
std::pair<std::vector<double>, std::vector<double>> sums(const Rows& t, Pair&& pair) {
  const int64_t C = t.channels;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), t.rows / kBlockRows));
  std::vector<double> partial(parts * 2 * C, 0.0);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      double* su = partial.data() + p * 2 * C;
      sum_rows<L>(t, p * t.rows / parts, (p + 1) * t.rows / parts, pair, su, su + C);
    }
  });
  std::vector<double> su(C, 0.0), suv(C, 0.0);
  for (int64_t p = 0; p < parts; ++p) {
    for (int64_t c = 0; c < C; ++c) {
      su[c] += partial[p * 2 * C + c];
      suv[c] += partial[p * 2 * C + C + c];
    }
  }
  return {std::move(su), std::move(suv)};
}

// Calls f(r, c) for every row and vector of L channels, rows split over threads.
template <int L, typename F>
void for_rows(const Rows& t, F&& f) {
  at::parallel_for(0, t.rows, kGrainRows, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) for_vectors<L>(t.channels, [&](int64_t c, int64_t) { f(r, c); });
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

void check(const at::Tensor& tensor, const char* name, bool activation_like) {
  TORCH_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
  if (activation_like) {
    TORCH_CHECK(tensor.dim() == 5 && tensor.is_contiguous(at::MemoryFormat::ChannelsLast3d), name,
                " must be a 5-D tensor in channels_last_3d memory");
  } else {
    TORCH_CHECK(tensor.dim() == 1 && tensor.is_contiguous(), name, " must be a contiguous 1-D tensor");
  }
}

Rows rows_of(const at::Tensor& x) {
  const int64_t C = x.size(1);
  return Rows{x.numel() / C, C, x.data_ptr<float>(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& weight,
                                                       const at::Tensor& bias, double eps, int64_t activation,
                                                       const std::optional<at::Tensor>& residual) {
  check(x, "x", true);
  check(weight, "weight", false);
  check(bias, "bias", false);
  const int64_t C = x.size(1);
  TORCH_CHECK(weight.numel() == C && bias.numel() == C && x.numel() > C, "batchnorm_act: bad sizes");
  Rows t = rows_of(x);
  if (residual.has_value()) {
    check(*residual, "residual", true);
    TORCH_CHECK(residual->sizes() == x.sizes(), "batchnorm_act: residual and x differ in size");
    TORCH_CHECK(activation != kSilu, "batchnorm_act: a residual goes with ReLU or no activation");
    t.residual = residual->data_ptr<float>();
  }
  const std::vector<float> shift(t.x, t.x + C);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  at::Tensor mean = at::empty({C}, x.options()), var = at::empty({C}, x.options());
  std::vector<float> m(C), a(C);
  with_lanes(C, [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    const auto [s, q] = sums<L>(t, [&](int64_t r, int64_t c) {
      const auto u = Lanes<L>::load(t.x + r * C + c) - Lanes<L>::load(shift.data() + c);
      return std::make_pair(u, u);
    });
    const float* w = weight.data_ptr<float>();
    const float* beta = bias.data_ptr<float>();
    for (int64_t c = 0; c < C; ++c) {
      const double d = s[c] / t.rows;
      const double v = std::max(0.0, q[c] / t.rows - d * d);
      const double inv = 1.0 / std::sqrt(v + eps);
      m[c] = static_cast<float>(shift[c] + d);
      a[c] = static_cast<float>(w[c] * inv);
      mean.data_ptr<float>()[c] = m[c];
      var.data_ptr<float>()[c] = static_cast<float>(v);
    }
    t.mean = m.data();
    t.a = a.data();
    t.bias = beta;
    float* out = y.data_ptr<float>();
    with_activation(activation, [&](auto act) {
      constexpr int64_t A = decltype(act)::value;
      for_rows<L>(t, [&](int64_t r, int64_t c) {
        auto z = normalised<L>(t, r, c);
        if (t.residual != nullptr) z += Lanes<L>::load(t.residual + r * C + c);
        Lanes<L>::store(out + r * C + c, activate<L, A>(z));
      });
    });
  });
  return {y, mean, var};
}

// Gradients of x, weight, bias and, if `residual` (else an empty tensor), of the residual: g itself.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& grad, const at::Tensor& x, const std::optional<at::Tensor>& y, const at::Tensor& weight,
    const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& invstd, int64_t activation, bool residual) {
  check(grad, "grad", true);
  check(x, "x", true);
  TORCH_CHECK(grad.sizes() == x.sizes(), "batchnorm_act: grad and x differ in size");
  TORCH_CHECK(activation != kRelu || (y.has_value() && y->sizes() == x.sizes()), "ReLU's backward needs y");
  if (activation == kRelu) check(*y, "y", true);
  for (const auto* v : {&weight, &bias, &mean, &invstd}) check(*v, "a per-channel tensor", false);
  const int64_t C = x.size(1);
  Rows t = rows_of(x);
  std::vector<float> a(C);
  const float *w = weight.data_ptr<float>(), *beta = bias.data_ptr<float>();
  const float *m = mean.data_ptr<float>(), *inv = invstd.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    a[c] = w[c] * inv[c];
  }
  t.y = activation == kRelu ? y->data_ptr<float>() : nullptr;
  t.dy = grad.data_ptr<float>();
  t.mean = m;
  t.a = a.data();
  t.bias = beta;
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::ChannelsLast3d);
  at::Tensor dweight = at::empty({C}, x.options()), dbias = at::empty({C}, x.options());
  at::Tensor dresidual = residual ? at::empty_like(x, at::MemoryFormat::ChannelsLast3d) : at::empty({0}, x.options());
  float* gout = residual ? dresidual.data_ptr<float>() : nullptr;
  with_lanes(C, [&](auto lanes) {
    constexpr int L = decltype(lanes)::value;
    with_activation(activation, [&](auto act) {
      constexpr int64_t A = decltype(act)::value;
      const auto [sg, sgx] = sums<L>(t, [&](int64_t r, int64_t c) {
        return std::make_pair(grad_of<L, A>(t, r, c), Lanes<L>::load(t.x + r * C + c) - Lanes<L>::load(t.mean + c));
      });
      // dx = a (g - mean(g) - xhat mean(g xhat)) = a g + k_x (x - mean) + k_0, xhat = (x - mean) invstd.
      std::vector<float> kx(C), k0(C);
      for (int64_t c = 0; c < C; ++c) {
        const double mg = sg[c] / t.rows, mgx = sgx[c] / t.rows * inv[c];
        kx[c] = static_cast<float>(-a[c] * inv[c] * mgx);
        k0[c] = static_cast<float>(-a[c] * mg);
        dweight.data_ptr<float>()[c] = static_cast<float>(sgx[c] * inv[c]);
        dbias.data_ptr<float>()[c] = static_cast<float>(sg[c]);
      }
      float* out = dx.data_ptr<float>();
      for_rows<L>(t, [&](int64_t r, int64_t c) {
        const auto g = grad_of<L, A>(t, r, c);
        const auto centred = Lanes<L>::load(t.x + r * C + c) - Lanes<L>::load(t.mean + c);
        Lanes<L>::store(out + r * C + c, g * Lanes<L>::load(t.a + c) + centred * Lanes<L>::load(kx.data() + c) +
                                             Lanes<L>::load(k0.data() + c));
        if (gout != nullptr) Lanes<L>::store(gout + r * C + c, g);
      });
    });
  });
  return {dx, dweight, dbias, dresidual};
}

}  // namespace

TORCH_LIBRARY(x3dsearch_batchnorm_act, m) {
  m.def("forward(Tensor x, Tensor weight, Tensor bias, float eps, int activation, Tensor? residual) -> "
        "(Tensor, Tensor, Tensor)",
        &forward);
  m.def("backward(Tensor grad, Tensor x, Tensor? y, Tensor weight, Tensor bias, Tensor mean, Tensor invstd, "
        "int activation, bool residual) -> (Tensor, Tensor, Tensor, Tensor)",
        &backward);
}
