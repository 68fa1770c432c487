// Train-mode depthwise re-parameterizable block in few memory passes (CPU, float32, channels-last).
//
// A depthwise RepConvBN in train mode is B parallel k×k depthwise convs z_b = w_b ⊛ x, each followed by BN
// with batch statistics, plus optional centre-tap branches (1×1 scale conv-BN: BN(s·x); identity: BN(x)),
// summed. PyTorch runs that as B convs, up to B + 2 BN passes and the sums, forward and backward: ~30
// kernels, each a full pass over a full-size map. The maps are what cost on a CPU, so here:
//   forward  1. statistics: z_b (stored for the backward) and, per channel, the correlations
//               Σ_p z_b(p) x_t(p) and Σ_p x_t(p) with every kernel tap t: each branch's sum and sum of
//               squares follow from them, and so does the kernel gradient later (they do not depend on
//               the upstream gradient);
//            2. output: y = W ⊛ x + bias, one conv whose kernel W = Σ_b a_b w_b (+ the centre-tap branches)
//               and bias come from the batch statistics (a_b = γ_b / sqrt(var_b + eps)).
//   backward 1. correlations of the upstream gradient g with the input, Σ_p g(p) x_t(p), and Σ_p g(p);
//               the kernel gradients are then per-channel algebra (BN's input gradient of branch b is
//               a_b g - e_b z_b + f_b, see train_backward);
//            2. input gradient: Σ_t over kernel taps of W_t g - Σ_b e_b w_b,t z_b + Σ_b f_b w_b,t, gathered.
// Full-size maps read or written: 6 forward (x twice, z, y), 8 backward (g twice, x twice, z, the input
// gradient); z counts B maps. PyTorch: ~40. The per-channel algebra runs in double.
//
// Layouts: x, y and their gradients are channels-last (N, H, W, C in memory); kernels are (B, k, k, C);
// z keeps each branch's output row contiguous: (N, Ho, B, Wo, C).
#include "depthwise_common.h"
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace ghostdet {

namespace {

inline void multiply_add(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b,
                         int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a[i] * b[i];
}

inline void add(float* __restrict__ out, const float* __restrict__ a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a[i];
}

// acc[t * C + c] += Σ_{p < pixels} a[p C + c] · in[t][p C + c], for N terms t and channels c < C:
// one register sum per term, so that N independent multiply-add chains run side by side.
template <int N>
void correlate_group(float* acc, const float* a, const float* const* in, int64_t pixels, int64_t C) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    Vec8 sum[N] = {};
    for (int64_t p = 0; p < pixels; ++p) {
      const Vec8 av = load8(a + p * C + c);
      for (int t = 0; t < N; ++t) sum[t] += av * load8(in[t] + p * C + c);
    }
    for (int t = 0; t < N; ++t) store8(acc + t * C + c, load8(acc + t * C + c) + sum[t]);
  }
  for (; c + 4 <= C; c += 4) {  // GhostNetV3 has many widths of 8k + 4 channels
    Vec4 sum[N] = {};
    for (int64_t p = 0; p < pixels; ++p) {
      const Vec4 av = load4(a + p * C + c);
      for (int t = 0; t < N; ++t) sum[t] += av * load4(in[t] + p * C + c);
    }
    for (int t = 0; t < N; ++t) *reinterpret_cast<Vec4*>(acc + t * C + c) = load4(acc + t * C + c) + sum[t];
  }
  for (; c < C; ++c) {
    float sum[N] = {};
    for (int64_t p = 0; p < pixels; ++p)
      for (int t = 0; t < N; ++t) sum[t] += a[p * C + c] * in[t][p * C + c];
    for (int t = 0; t < N; ++t) acc[t * C + c] += sum[t];
  }
}

// correlate_group over any number of terms, in near-equal groups of at most 8 (16 vector registers).
void correlate(float* acc, const float* a, const float* const* in, int64_t terms, int64_t pixels, int64_t C) {
  const int64_t groups = (terms + 7) / 8;
  for (int64_t t0 = 0, g = 0; g < groups; ++g) {
    const int64_t n = (terms - t0 + (groups - g) - 1) / (groups - g);
    float* out = acc + t0 * C;
    const float* const* inputs = in + t0;
    switch (n) {
      case 1: correlate_group<1>(out, a, inputs, pixels, C); break;
      case 2: correlate_group<2>(out, a, inputs, pixels, C); break;
      case 3: correlate_group<3>(out, a, inputs, pixels, C); break;
      case 4: correlate_group<4>(out, a, inputs, pixels, C); break;
      case 5: correlate_group<5>(out, a, inputs, pixels, C); break;
      case 6: correlate_group<6>(out, a, inputs, pixels, C); break;
      case 7: correlate_group<7>(out, a, inputs, pixels, C); break;
      default: correlate_group<8>(out, a, inputs, pixels, C); break;
    }
    t0 += n;
  }
}

// Sums `width` values over `rows` rows: body(row, acc) adds one row into a zeroed float buffer, which is
// flushed into a double accumulator per row (float rounding stays row-sized). One fixed chunk of rows per
// thread keeps the result deterministic for a given thread count.
template <typename Body>
at::Tensor reduce_rows(int64_t rows, int64_t width, const Body& body) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows));
  at::Tensor partial = at::zeros({chunks, width}, at::kDouble);
  double* partial_data = partial.data_ptr<double>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row_acc(width);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      double* acc = partial_data + chunk * width;
      for (int64_t row = rows * chunk / chunks; row < rows * (chunk + 1) / chunks; ++row) {
        std::fill(row_acc.begin(), row_acc.end(), 0.f);
        body(row, row_acc.data());
        for (int64_t i = 0; i < width; ++i) acc[i] += row_acc[i];
      }
    }
  });
  return partial.sum(0);
}


// Row layout of the forward statistics, (rows, C) per channel. Each branch's sum and sum of squares follow
// from them: Σ_p z_b = Σ_t w_b,t Σ_p x_t and Σ_p z_b² = Σ_t w_b,t Σ_p z_b x_t.
struct StatRows {
  int64_t branches, taps;
  int64_t cross(int64_t b, int64_t t) const { return b * taps + t; }  // Σ_p z_b(p) x_t(p)
  int64_t tap(int64_t t) const { return branches * taps + t; }        // Σ_p x_t(p)
  int64_t centre_square() const { return (branches + 1) * taps; }     // Σ_p x_centre(p)²
  int64_t count() const { return centre_square() + 1; }
};

// Forward pass 1: z (N, Ho, B, Wo, C) and the statistics (StatRows, C) in double.
std::vector<at::Tensor> forward_statistics(const at::Tensor& x, const at::Tensor& weight, int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t B = g.branches, C = g.c, K = g.taps(), T = g.tile, row_len = g.wo * C;
  const StatRows rows{B, K};
  at::Tensor z = at::empty({g.n, g.ho, B, g.wo, C}, x.options());
  const at::Tensor kernel = tiled(weight, g);
  const float* x_data = x.data_ptr<float>();
  const float* w_data = kernel.data_ptr<float>();
  float* z_data = z.data_ptr<float>();
  const std::vector<float> ones(T, 1.f);
  at::Tensor sums = reduce_rows(g.n * g.ho, rows.count() * C, [&](int64_t row, float* acc) {
    std::vector<float> scratch(K * T);
    std::vector<const float*> taps(K), weights(K);
    float* out = z_data + row * B * row_len;
    for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
      const int64_t len = (p1 - p0) * C;
      tap_tiles(g, x_data, row / g.ho, row % g.ho, p0, p1, scratch.data(), taps.data());
      for (int64_t b = 0; b < B; ++b) {
        float* zb = out + b * row_len + p0 * C;
        for (int64_t t = 0; t < K; ++t) weights[t] = w_data + (b * K + t) * T;
        weighted_sum(zb, weights.data(), taps.data(), K, len, false);
        correlate(acc + rows.cross(b, 0) * C, zb, taps.data(), K, p1 - p0, C);
      }
      correlate(acc + rows.tap(0) * C, ones.data(), taps.data(), K, p1 - p0, C);
      correlate(acc + rows.centre_square() * C, taps[g.centre()], taps.data() + g.centre(), 1, p1 - p0, C);
    });
  });
  return {z, sums.view({rows.count(), C})};
}

// Forward pass 2: y = kernel ⊛ x + bias, kernel (k, k, C), as an (N, C, Ho, Wo) channels-last map.
at::Tensor forward_output(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& kernel,
                          const at::Tensor& bias, int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t C = g.c, K = g.taps(), T = g.tile;
  at::Tensor y = at::empty({g.n, C, g.ho, g.wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const at::Tensor kernel_tiles = tiled(kernel, g), bias_tile = tiled(bias, g);
  const float* x_data = x.data_ptr<float>();
  const float* bias_data = bias_tile.data_ptr<float>();
  float* y_data = y.data_ptr<float>();
  std::vector<const float*> weights(K + 1);
  for (int64_t t = 0; t < K; ++t) weights[t] = kernel_tiles.data_ptr<float>() + t * T;
  weights[K] = bias_data;
  const std::vector<float> ones(T, 1.f);
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(K * T);
    std::vector<const float*> taps(K + 1);
    taps[K] = ones.data();
    for (int64_t row = begin; row < end; ++row) {
      for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
        tap_tiles(g, x_data, row / g.ho, row % g.ho, p0, p1, scratch.data(), taps.data());
        weighted_sum(y_data + (row * g.wo + p0) * C, weights.data(), taps.data(), K + 1, (p1 - p0) * C, false);
      });
    }
  });
  return y;
}

// Backward pass 1: per channel, in double, (K + 1, C): Σ_p g(p) x_t(p) for every tap t, then Σ_p g(p).
at::Tensor gradient_statistics(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& weight,
                               int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t C = g.c, K = g.taps(), T = g.tile;
  TORCH_CHECK(gy.is_contiguous(at::MemoryFormat::ChannelsLast) && gy.numel() == g.n * g.ho * g.wo * C,
              "depthwise_branches: the output gradient must be a channels-last (N, C, Ho, Wo) map");
  const float* x_data = x.data_ptr<float>();
  const float* gy_data = gy.data_ptr<float>();
  const std::vector<float> ones(T, 1.f);
  at::Tensor sums = reduce_rows(g.n * g.ho, (K + 1) * C, [&](int64_t row, float* acc) {
    std::vector<float> scratch(K * T);
    std::vector<const float*> taps(K + 1);
    taps[K] = ones.data();
    for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
      tap_tiles(g, x_data, row / g.ho, row % g.ho, p0, p1, scratch.data(), taps.data());
      correlate(acc, gy_data + (row * g.wo + p0) * C, taps.data(), K + 1, p1 - p0, C);
    });
  });
  return sums.view({K + 1, C});
}

// Columns [q0 + shift, q1 + shift) of a row of `columns` pixels, zeros outside it: a view when inside,
// else a zero-padded copy in `copy`. A null row stands for a row of ones.
const float* shifted_columns(const float* row, const float* ones, int64_t q0, int64_t q1, int64_t shift,
                             int64_t columns, int64_t C, float* copy) {
  const int64_t first = q0 + shift, last = q1 + shift;
  if (first >= 0 && last <= columns) return row ? row + first * C : ones;
  std::fill_n(copy, (q1 - q0) * C, 0.f);
  const int64_t lo = std::max<int64_t>(first, 0), hi = std::min(last, columns);
  if (lo < hi) std::copy_n(row ? row + lo * C : ones, (hi - lo) * C, copy + (lo - first) * C);
  return copy;
}

// Backward pass 2: the input gradient, an (N, C, H, W) channels-last map. Output pixel p reads input pixel
// q through tap t; q receives, for every such (p, t): kernel[t] g(p) + Σ_b cross[b, t] z_b(p) + constant[t],
// and, where q is p's centre tap, - centre_x x(q). Stride 1: gathered per input tile, all terms summed in
// registers; otherwise scattered per tap.
at::Tensor input_gradient(const at::Tensor& gy, const at::Tensor& z, const at::Tensor& x, const at::Tensor& weight,
                          const at::Tensor& kernel, const at::Tensor& cross, const at::Tensor& constant,
                          const at::Tensor& centre_x, int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t B = g.branches, C = g.c, K = g.taps(), T = g.tile, row_len = g.wo * C, terms = B + 2;
  const at::Tensor kernel_tiles = tiled(kernel, g), cross_tiles = tiled(cross, g);
  const at::Tensor constant_tiles = tiled(constant, g), centre_tile = tiled(-centre_x, g);
  const float *kernel_data = kernel_tiles.data_ptr<float>(), *cross_data = cross_tiles.data_ptr<float>();
  const float *constant_data = constant_tiles.data_ptr<float>(), *centre_data = centre_tile.data_ptr<float>();
  const float* x_data = x.data_ptr<float>();
  const float* z_data = z.data_ptr<float>();
  const float* gy_data = gy.data_ptr<float>();
  const std::vector<float> ones(T, 1.f);
  at::Tensor grad_x = at::empty({g.n, C, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  float* gx_data = grad_x.data_ptr<float>();
  at::parallel_for(0, g.n * g.h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch((K * terms + 1) * T);
    std::vector<const float*> weights(K * terms + 1), inputs(K * terms + 1);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.h, hi = row % g.h;
      float* out = gx_data + row * g.w * C;
      const float* in = x_data + row * g.w * C;
      if (g.stride == 1) {
        for_each_tile(g, g.w, [&](int64_t q0, int64_t q1) {
          int64_t used = 0;
          for (int64_t i = 0; i < g.k; ++i) {
            const int64_t ho = hi + g.pad - i;
            if (ho < 0 || ho >= g.ho) continue;
            const float* grad_row = gy_data + (n * g.ho + ho) * row_len;
            const float* z_row = z_data + (n * g.ho + ho) * B * row_len;
            for (int64_t j = 0; j < g.k; ++j) {
              const int64_t t = i * g.k + j, shift = g.pad - j;
              const auto term = [&](const float* w, const float* source_row) {
                weights[used] = w;
                inputs[used] = shifted_columns(source_row, ones.data(), q0, q1, shift, g.wo, C,
                                               scratch.data() + used * T);
                ++used;
              };
              term(kernel_data + t * T, grad_row);
              for (int64_t b = 0; b < B; ++b) term(cross_data + (b * K + t) * T, z_row + b * row_len);
              term(constant_data + t * T, nullptr);
            }
          }
          weights[used] = centre_data;
          inputs[used] = in + q0 * C;
          weighted_sum(out + q0 * C, weights.data(), inputs.data(), used + 1, (q1 - q0) * C, false);
        });
        continue;
      }
      std::fill_n(out, g.w * C, 0.f);
      for (int64_t i = 0; i < g.k; ++i) {  // output row ho reads this input row through tap row i
        const int64_t num = hi + g.pad - i;
        if (num < 0 || num % g.stride != 0 || num / g.stride >= g.ho) continue;
        const int64_t ho = num / g.stride;
        const float* grad_row = gy_data + (n * g.ho + ho) * row_len;
        const float* z_row = z_data + (n * g.ho + ho) * B * row_len;
        for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
          for (int64_t j = 0; j < g.k; ++j) {
            auto [lo, hi_col] = column_range(g, j);
            lo = std::max(lo, p0);
            hi_col = std::min(hi_col, p1);
            if (lo >= hi_col) continue;
            const int64_t t = i * g.k + j, len = (hi_col - lo) * C;
            weights[0] = kernel_data + t * T;
            inputs[0] = grad_row + lo * C;
            for (int64_t b = 0; b < B; ++b) {
              weights[1 + b] = cross_data + (b * K + t) * T;
              inputs[1 + b] = z_row + b * row_len + lo * C;
            }
            weights[B + 1] = constant_data + t * T;
            inputs[B + 1] = ones.data();
            weighted_sum(scratch.data(), weights.data(), inputs.data(), terms, len, false);
            for (int64_t wo = lo; wo < hi_col; ++wo)
              add(out + (wo * g.stride - g.pad + j) * C, scratch.data() + (wo - lo) * C, C);
          }
        });
      }
      if (hi % g.stride != 0) continue;  // centre taps: input (hi, wo * stride) of output (hi / stride, wo)
      for (int64_t wo = 0; wo < g.wo; ++wo)
        multiply_add(out + wo * g.stride * C, centre_data, in + wo * g.stride * C, C);
    }
  });
  return grad_x;
}

// The centre-tap branches after the B conv branches: the 1×1 scale conv's (if `scale` is not empty), whose
// per-channel weight is scale, then identity, weight 1.
struct CentreBranches {
  const float* scale;
  int64_t first;
  double weight(int64_t j, int64_t c) const { return j == first && scale ? scale[c] : 1.0; }
};

}  // namespace

// Train-mode forward: returns y (N, C, Ho, Wo, channels-last), then what the backward needs: z, the
// statistics (StatRows, C) and (3, J, C) double per branch j: batch mean, 1 / sqrt(var + eps), a = gamma /
// sqrt(var + eps); then, for the running statistics, the batch means and unbiased variances (J, C, float).
std::vector<at::Tensor> train_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                      const at::Tensor& gamma, const at::Tensor& beta, double eps, int64_t stride,
                                      bool has_identity) {
  const int64_t B = weight.size(0), C = weight.size(3), K = weight.size(1) * weight.size(2);
  const int64_t J = B + (scale.numel() > 0) + has_identity, centre_tap = K / 2;
  TORCH_CHECK(gamma.numel() == J * C && beta.numel() == J * C && gamma.is_contiguous() && beta.is_contiguous() &&
                  scale.is_contiguous() && gamma.scalar_type() == at::kFloat && beta.scalar_type() == at::kFloat,
              "depthwise_branches: gamma and beta must be contiguous float32 (J, C)");
  const StatRows rows{B, K};
  std::vector<at::Tensor> pass = forward_statistics(x, weight, stride);
  const at::Tensor z = pass[0], stats = pass[1];
  const double count = double(z.size(0) * z.size(1) * z.size(3));
  at::Tensor state = at::empty({3, J, C}, stats.options());
  at::Tensor batch = at::empty({2, J, C}, x.options());
  at::Tensor kernel = at::zeros({K, C}, stats.options()), bias = at::zeros({C}, stats.options());
  const double* s = stats.data_ptr<double>();
  const float *w = weight.data_ptr<float>(), *g = gamma.data_ptr<float>(), *bt = beta.data_ptr<float>();
  const CentreBranches centre{scale.numel() > 0 ? scale.data_ptr<float>() : nullptr, B};
  double *mean_out = state.data_ptr<double>(), *inv_out = mean_out + J * C, *a_out = inv_out + J * C;
  double *kernel_out = kernel.data_ptr<double>(), *bias_out = bias.data_ptr<double>();
  float *batch_mean = batch.data_ptr<float>(), *batch_var = batch_mean + J * C;
  for (int64_t c = 0; c < C; ++c) {
    const double centre_mean = s[rows.tap(centre_tap) * C + c] / count;
    const double centre_var = std::max(s[rows.centre_square() * C + c] / count - centre_mean * centre_mean, 0.0);
    for (int64_t j = 0; j < J; ++j) {
      const int64_t at = j * C + c;
      double mean = centre_mean, var = centre_var, weight_c = 1;
      if (j < B) {
        double sum = 0, square = 0;
        for (int64_t t = 0; t < K; ++t) {
          sum += w[(j * K + t) * C + c] * s[rows.tap(t) * C + c];
          square += w[(j * K + t) * C + c] * s[rows.cross(j, t) * C + c];
        }
        mean = sum / count;
        var = std::max(square / count - mean * mean, 0.0);
      } else {
        weight_c = centre.weight(j, c);
        mean *= weight_c;
        var *= weight_c * weight_c;
      }
      const double inv = 1.0 / std::sqrt(var + eps), a = g[at] * inv;
      mean_out[at] = mean;
      inv_out[at] = inv;
      a_out[at] = a;
      batch_mean[at] = float(mean);
      batch_var[at] = float(var * count / std::max(count - 1, 1.0));
      if (j < B)
        for (int64_t t = 0; t < K; ++t) kernel_out[t * C + c] += a * w[(j * K + t) * C + c];
      else
        kernel_out[centre_tap * C + c] += weight_c * a;
      bias_out[c] += bt[at] - mean * a;
    }
  }
  at::Tensor y = forward_output(x, weight, kernel, bias, stride);
  return {y, z, stats, state, batch[0], batch[1]};
}

// Train-mode backward from the forward's state: returns grad_x, grad_weight (B, k, k, C), grad_scale (C, or
// empty), grad_gamma and grad_beta (J, C). With g = dL/dy and G_t = Σ_p g(p) x_t(p), per branch j:
// dbeta = Σ g, Σ g z_j = Σ_t w_j,t G_t, dgamma = (Σ g z_j - mean Σ g) inv_std, and BN's input gradient
// a g - e z_j + f with e = a dgamma inv_std / count, f = e mean - a Σ g / count; so the kernel gradient is
// a G_t - e Σ z_j x_t + f Σ x_t.
std::vector<at::Tensor> train_backward(const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& x,
                                       const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& stats,
                                       const at::Tensor& state, int64_t stride) {
  const int64_t B = weight.size(0), C = weight.size(3), K = weight.size(1) * weight.size(2), J = state.size(1);
  const int64_t centre_tap = K / 2;
  const StatRows rows{B, K};
  const at::Tensor gy = grad_y.contiguous(at::MemoryFormat::ChannelsLast);
  const double count = double(z.size(0) * z.size(1) * z.size(3));
  const at::Tensor grad_stats = gradient_statistics(gy, x, weight, stride);
  at::Tensor kernel = at::zeros({K, C}, grad_stats.options()), cross = at::empty({B, K, C}, grad_stats.options());
  at::Tensor constant = at::zeros({K, C}, grad_stats.options()), centre_x = at::zeros({C}, grad_stats.options());
  at::Tensor grad_weight = at::empty({B, K, C}, x.options()), grad_affine = at::empty({2, J, C}, x.options());
  at::Tensor grad_scale = at::empty({scale.numel() > 0 ? C : 0}, x.options());
  const double *gs = grad_stats.data_ptr<double>(), *s = stats.data_ptr<double>();
  const double *mean = state.data_ptr<double>(), *inv = mean + J * C, *a_in = inv + J * C;
  const float* w = weight.data_ptr<float>();
  const CentreBranches centre{scale.numel() > 0 ? scale.data_ptr<float>() : nullptr, B};
  double *kernel_out = kernel.data_ptr<double>(), *cross_out = cross.data_ptr<double>();
  double *constant_out = constant.data_ptr<double>(), *centre_out = centre_x.data_ptr<double>();
  float *gw = grad_weight.data_ptr<float>(), *grad_gamma = grad_affine.data_ptr<float>();
  float* grad_beta = grad_gamma + J * C;
  for (int64_t c = 0; c < C; ++c) {
    const double total = gs[K * C + c], centre_dot = gs[centre_tap * C + c];
    for (int64_t j = 0; j < J; ++j) {
      const int64_t at = j * C + c;
      const double weight_c = j < B ? 1.0 : centre.weight(j, c);
      double dot = weight_c * centre_dot;
      if (j < B) {
        dot = 0;
        for (int64_t t = 0; t < K; ++t) dot += w[(j * K + t) * C + c] * gs[t * C + c];
      }
      const double dgamma = (dot - mean[at] * total) * inv[at], a = a_in[at];
      const double e = a * dgamma * inv[at] / count, f = e * mean[at] - a * total / count;
      grad_gamma[at] = float(dgamma);
      grad_beta[at] = float(total);
      if (j < B) {
        for (int64_t t = 0; t < K; ++t) {
          const double wt = w[(j * K + t) * C + c];
          gw[(j * K + t) * C + c] = float(a * gs[t * C + c] - e * s[rows.cross(j, t) * C + c] + f * s[rows.tap(t) * C + c]);
          kernel_out[t * C + c] += a * wt;
          cross_out[(j * K + t) * C + c] = -e * wt;
          constant_out[t * C + c] += f * wt;
        }
        continue;
      }
      kernel_out[centre_tap * C + c] += weight_c * a;
      constant_out[centre_tap * C + c] += weight_c * f;
      centre_out[c] += weight_c * weight_c * e;
      if (j == B && centre.scale)  // Σ over centre taps of (a g - e s x + f) x
        grad_scale.data_ptr<float>()[c] = float(a * centre_dot - e * weight_c * s[rows.centre_square() * C + c] +
                                                f * s[rows.tap(centre_tap) * C + c]);
    }
  }
  at::Tensor grad_x = input_gradient(gy, z, x, weight, kernel, cross, constant, centre_x, stride);
  return {grad_x, grad_weight.view({B, weight.size(1), weight.size(2), C}), grad_scale, grad_affine[0],
          grad_affine[1]};
}

}  // namespace ghostdet
