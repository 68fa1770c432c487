// Train-mode depthwise re-parameterizable block in few memory passes (CPU, float32, NHWC).
//
// A depthwise RepConvBN in train mode is B parallel k×k depthwise convs, each followed by BN with batch
// statistics, plus optional "pointwise" branches (1×1 scale conv-BN, BN identity) that only read the
// centre tap. PyTorch runs that as B convs, up to B + 2 BN passes and the sums, forward and backward
// (~30 kernels and as many full-size maps). Here the forward is two passes (branch outputs + their sums,
// then the normalized sum) and the backward three (two reductions, one gather). The per-channel algebra
// (means, variances, BN gradients) is done by the caller on (branches × channels) tensors; see
// ghostdet/models/layers/depthwise_train.py for the formulas.
//
// Layouts: x and every map are channels-last (N, H, W, C in memory); kernels are (B, k, k, C).
// z / gz hold each conv branch's output row contiguously: (N, Ho, B, Wo, C).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace {

struct Geometry {
  int64_t n, c, h, w, k, stride, pad, ho, wo, branches;
  int64_t tile;  // channels × pixels per tile: per-channel values are repeated to this length (see below)
  int64_t row() const { return wo * c; }
};

// Loops run along whole rows (Wo × C floats) with per-channel values repeated over a tile of pixels,
// so that few-channel maps (8..48 channels at high resolution) still get long vectorizable loops.
constexpr int64_t kTileFloats = 256;

Geometry geometry_of(const at::Tensor& x, const at::Tensor& weight, int64_t stride) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && !x.is_cuda() &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "depthwise_branches: x must be a float32 CPU tensor in channels-last memory format");
  TORCH_CHECK(weight.dim() == 4 && weight.is_contiguous() && weight.size(1) == weight.size(2) &&
                  weight.size(1) % 2 == 1 && weight.size(3) == x.size(1),
              "depthwise_branches: weight must be a contiguous (branches, k, k, channels) tensor, odd k");
  TORCH_CHECK(stride >= 1, "depthwise_branches: stride must be positive");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), weight.size(1), stride, weight.size(1) / 2,
             0, 0, weight.size(0), 0};
  g.ho = (g.h + 2 * g.pad - g.k) / stride + 1;
  g.wo = (g.w + 2 * g.pad - g.k) / stride + 1;
  g.tile = std::max<int64_t>(1, kTileFloats / g.c) * g.c;
  return g;
}

// (rows, C) per-channel values -> (rows, tile) float, each row repeated tile / C times.
at::Tensor tiled(const at::Tensor& per_channel, const Geometry& g) {
  const at::Tensor values = per_channel.to(at::kFloat).contiguous();
  const int64_t rows = values.numel() / g.c;
  at::Tensor out = at::empty({rows, g.tile}, values.options());
  const float* in = values.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < g.tile; s += g.c) std::copy_n(in + r * g.c, g.c, o + r * g.tile + s);
  return out;
}

// (rows × tile) tiled sums -> (rows, C).
at::Tensor untiled(const at::Tensor& sums, const Geometry& g) {
  return sums.view({-1, g.tile / g.c, g.c}).sum(1);
}

inline void multiply_add(float* __restrict__ out, const float* __restrict__ a,
                         const float* __restrict__ b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a[i] * b[i];
}

inline void add(float* __restrict__ out, const float* __restrict__ a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a[i];
}

// out[m] += tile_values[m % tile] * b[m], m < len (len and tile are multiples of C).
inline void tiled_multiply_add(float* out, const float* tile_values, const float* b, int64_t len,
                               int64_t tile) {
  for (int64_t s = 0; s < len; s += tile) multiply_add(out + s, tile_values, b + s, std::min(tile, len - s));
}

// acc[m % tile] += a[m] * b[m], m < len.
inline void tiled_dot(float* acc, const float* a, const float* b, int64_t len, int64_t tile) {
  for (int64_t s = 0; s < len; s += tile) multiply_add(acc, a + s, b + s, std::min(tile, len - s));
}

// acc[m % tile] += a[m], m < len.
inline void tiled_sum(float* acc, const float* a, int64_t len, int64_t tile) {
  for (int64_t s = 0; s < len; s += tile) add(acc, a + s, std::min(tile, len - s));
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

// Output columns [lo, hi) whose kernel tap column j lands inside the input (not in the padding).
inline std::pair<int64_t, int64_t> column_range(const Geometry& g, int64_t j) {
  const int64_t first = g.pad - j, last = g.w - 1 + g.pad - j;  // wo * stride must lie in [first, last]
  const int64_t lo = first > 0 ? (first + g.stride - 1) / g.stride : 0;
  const int64_t hi = last < 0 ? 0 : std::min(g.wo, last / g.stride + 1);
  return {lo, std::max(lo, hi)};
}

// The input pixels that tap (i, j) reads for output row (n, ho), columns [p0, p1): `data` holds the one
// for output column lo, then the next ones contiguously up to hi (stride 1: a view of the input row;
// otherwise gathered into `scratch`, (p1 - p0) × C floats). lo == hi when the tap only sees padding.
struct TapRow {
  const float* data;
  int64_t lo, hi;
};

TapRow tap_row(const Geometry& g, const float* x, int64_t n, int64_t ho, int64_t i, int64_t j, int64_t p0,
               int64_t p1, float* scratch) {
  const int64_t hi_in = ho * g.stride - g.pad + i;
  auto [lo, hi] = column_range(g, j);
  lo = std::max(lo, p0);
  hi = std::min(hi, p1);
  if (hi_in < 0 || hi_in >= g.h || lo >= hi) return {nullptr, 0, 0};
  const float* row = x + (n * g.h + hi_in) * g.w * g.c;
  if (g.stride == 1) return {row + (lo - g.pad + j) * g.c, lo, hi};
  for (int64_t wo = lo; wo < hi; ++wo)
    std::copy_n(row + (wo * g.stride - g.pad + j) * g.c, g.c, scratch + (wo - lo) * g.c);
  return {scratch, lo, hi};
}

// Work goes tile by tile along a row (a tile = tile / C pixels, all branches), so partial sums stay in L1.
template <typename Body>
void for_each_tile(const Geometry& g, int64_t columns, const Body& body) {
  const int64_t pixels = g.tile / g.c;
  for (int64_t p0 = 0; p0 < columns; p0 += pixels) body(p0, std::min(columns, p0 + pixels));
}

// The k² taps' input pixels for output columns [p0, p1) of row (n, ho), each (p1 - p0) × C floats: views
// into x where a tap sees only input (stride 1), else copies in `scratch` (k² × tile floats) with zeros
// for the padding.
void tap_tiles(const Geometry& g, const float* x, int64_t n, int64_t ho, int64_t p0, int64_t p1, float* scratch,
               const float** taps) {
  const int64_t len = (p1 - p0) * g.c;
  for (int64_t i = 0; i < g.k; ++i) {
    const int64_t hi_in = ho * g.stride - g.pad + i;
    const bool row_inside = hi_in >= 0 && hi_in < g.h;
    const float* row = x + (n * g.h + (row_inside ? hi_in : 0)) * g.w * g.c;
    for (int64_t j = 0; j < g.k; ++j) {
      auto [lo, hi] = column_range(g, j);
      lo = std::max(lo, p0);
      hi = std::min(hi, p1);
      const int64_t t = i * g.k + j;
      if (g.stride == 1 && row_inside && lo == p0 && hi == p1) {
        taps[t] = row + (p0 - g.pad + j) * g.c;
        continue;
      }
      float* copy = scratch + t * g.tile;
      std::fill_n(copy, len, 0.f);
      for (int64_t wo = lo; row_inside && wo < hi; ++wo)
        std::copy_n(row + (wo * g.stride - g.pad + j) * g.c, g.c, copy + (wo - p0) * g.c);
      taps[t] = copy;
    }
  }
}

// Eight floats as one value (GCC/Clang vector extension: one AVX register, or two SSE ones).
typedef float Vec8 __attribute__((vector_size(32)));

inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// out[m] = sum_t w[t][m] * in[t][m], m < len: the sums stay in registers over all terms (one load of each
// operand per multiply-add instead of also loading and storing the sum).
void weighted_sum(float* out, const float* const* w, const float* const* in, int64_t terms, int64_t len) {
  int64_t m = 0;
  for (; m + 16 <= len; m += 16) {
    Vec8 low = {}, high = {};
    for (int64_t t = 0; t < terms; ++t) {
      low += load8(w[t] + m) * load8(in[t] + m);
      high += load8(w[t] + m + 8) * load8(in[t] + m + 8);
    }
    std::memcpy(out + m, &low, sizeof low);
    std::memcpy(out + m + 8, &high, sizeof high);
  }
  for (; m < len; ++m) {
    float acc = 0.f;
    for (int64_t t = 0; t < terms; ++t) acc += w[t][m] * in[t][m];
    out[m] = acc;
  }
}

}  // namespace

// Every conv branch's output z (N, Ho, B, Wo, C) and, in double, (2, B + 1, C): per channel the sum and
// the sum of squares of each branch's output (rows 0..B-1) and of the centre-tap input (row B).
static std::vector<at::Tensor> branches_forward(const at::Tensor& x, const at::Tensor& weight, int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t B = g.branches, C = g.c, row_len = g.row(), T = g.tile, width = (B + 1) * T;
  at::Tensor z = at::empty({g.n, g.ho, B, g.wo, C}, x.options());
  const at::Tensor taps = tiled(weight, g);
  const float* x_data = x.data_ptr<float>();
  const float* w_data = taps.data_ptr<float>();
  float* z_data = z.data_ptr<float>();
  at::Tensor sums = reduce_rows(g.n * g.ho, 2 * width, [&](int64_t row, float* acc) {
    const int64_t n = row / g.ho, ho = row % g.ho;
    std::vector<float> scratch(std::max(g.k * g.k * T, g.stride == 1 ? 0 : row_len));
    std::vector<const float*> taps(g.k * g.k), weights(g.k * g.k);
    float* out = z_data + row * B * row_len;
    for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
      const int64_t len = (p1 - p0) * C;
      tap_tiles(g, x_data, n, ho, p0, p1, scratch.data(), taps.data());
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < g.k * g.k; ++t) weights[t] = w_data + (b * g.k * g.k + t) * T;
        weighted_sum(out + b * row_len + p0 * C, weights.data(), taps.data(), g.k * g.k, len);
      }
      for (int64_t b = 0; b < B; ++b) {
        const float* values = out + b * row_len + p0 * C;
        add(acc + b * T, values, len);
        multiply_add(acc + width + b * T, values, values, len);
      }
    });
    const TapRow centre = tap_row(g, x_data, n, ho, g.pad, g.pad, 0, g.wo, scratch.data());
    tiled_sum(acc + B * T, centre.data, row_len, T);
    tiled_dot(acc + width + B * T, centre.data, centre.data, row_len, T);
  });
  return {z, untiled(sums, g).view({2, B + 1, C})};
}

// y = bias + sum_b coef[b] * z_b + coef[B] * centre-tap input, as an (N, C, Ho, Wo) channels-last map.
static at::Tensor branches_combine(const at::Tensor& z, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& coef, const at::Tensor& bias, int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t B = g.branches, row_len = g.row(), T = g.tile;
  TORCH_CHECK(coef.numel() == (B + 1) * g.c && bias.numel() == g.c,
              "depthwise_branches: coef must be (B + 1, C) and bias (C)");
  at::Tensor y = at::empty({g.n, g.c, g.ho, g.wo}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const at::Tensor coef_tiles = tiled(coef, g), bias_tile = tiled(bias, g);
  const float* x_data = x.data_ptr<float>();
  const float* z_data = z.data_ptr<float>();
  const float* coef_data = coef_tiles.data_ptr<float>();
  const float* bias_data = bias_tile.data_ptr<float>();
  float* y_data = y.data_ptr<float>();
  at::parallel_for(0, g.n * g.ho, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(g.stride == 1 ? 0 : row_len);
    for (int64_t row = begin; row < end; ++row) {
      float* out = y_data + row * row_len;
      for (int64_t s = 0; s < row_len; s += T) std::copy_n(bias_data, std::min(T, row_len - s), out + s);
      for (int64_t b = 0; b < B; ++b)
        tiled_multiply_add(out, coef_data + b * T, z_data + (row * B + b) * row_len, row_len, T);
      const TapRow centre = tap_row(g, x_data, row / g.ho, row % g.ho, g.pad, g.pad, 0, g.wo, scratch.data());
      tiled_multiply_add(out, coef_data + B * T, centre.data, row_len, T);
    }
  });
  return y;
}

// Per channel, in double, (B + 2, C): sum of gy * z_b (rows 0..B-1), of gy (row B) and of gy * centre-tap
// input (row B + 1): what BN's backward needs from the upstream gradient gy.
static at::Tensor branches_grad_sums(const at::Tensor& gy, const at::Tensor& z, const at::Tensor& x,
                              const at::Tensor& weight, int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t B = g.branches, row_len = g.row(), T = g.tile;
  TORCH_CHECK(gy.is_contiguous(at::MemoryFormat::ChannelsLast) && gy.numel() == g.n * g.ho * row_len,
              "depthwise_branches: gy must be a channels-last (N, C, Ho, Wo) map");
  const float* x_data = x.data_ptr<float>();
  const float* z_data = z.data_ptr<float>();
  const float* gy_data = gy.data_ptr<float>();
  at::Tensor sums = reduce_rows(g.n * g.ho, (B + 2) * T, [&](int64_t row, float* acc) {
    std::vector<float> scratch(g.stride == 1 ? 0 : row_len);
    const float* grad = gy_data + row * row_len;
    for (int64_t b = 0; b < B; ++b) tiled_dot(acc + b * T, grad, z_data + (row * B + b) * row_len, row_len, T);
    tiled_sum(acc + B * T, grad, row_len, T);
    const TapRow centre = tap_row(g, x_data, row / g.ho, row % g.ho, g.pad, g.pad, 0, g.wo, scratch.data());
    tiled_dot(acc + (B + 1) * T, grad, centre.data, row_len, T);
  });
  return untiled(sums, g);
}

// Backward of the conv branches given BN's per-channel coefficients (3, B, C): each branch's output
// gradient is gz_b = a_b * gy - e_b * z_b + f_b. Returns the input gradient (N, C, H, W, channels-last),
// adding the pointwise branches' centre-tap term A * gy - E * x + F (pointwise rows 0, 1, 2), and the
// kernels' gradient (B, k, k, C).
static std::vector<at::Tensor> branches_backward(const at::Tensor& gy, const at::Tensor& z, const at::Tensor& x,
                                          const at::Tensor& weight, const at::Tensor& coef,
                                          const at::Tensor& pointwise, int64_t stride) {
  const Geometry g = geometry_of(x, weight, stride);
  const int64_t B = g.branches, C = g.c, row_len = g.row(), T = g.tile, kk = g.k * g.k;
  TORCH_CHECK(coef.numel() == 3 * B * C && pointwise.numel() == 3 * C,
              "depthwise_branches: coef must be (3, B, C) and pointwise (3, C)");
  const at::Tensor coef_tiles = tiled(coef, g), pointwise_tiles = tiled(pointwise, g), taps = tiled(weight, g);
  const float* x_data = x.data_ptr<float>();
  const float* z_data = z.data_ptr<float>();
  const float* gy_data = gy.data_ptr<float>();
  const float* w_data = taps.data_ptr<float>();
  const float *a = coef_tiles.data_ptr<float>(), *e = a + B * T, *f = e + B * T;
  at::Tensor gz = at::empty_like(z);
  float* gz_data = gz.data_ptr<float>();
  at::Tensor grad_weight = reduce_rows(g.n * g.ho, B * kk * T, [&](int64_t row, float* acc) {
    const int64_t n = row / g.ho, ho = row % g.ho;
    std::vector<float> scratch(g.stride == 1 ? 0 : T);
    const float* grad = gy_data + row * row_len;
    const float* out = z_data + row * B * row_len;
    float* grad_out = gz_data + row * B * row_len;
    for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
      for (int64_t b = 0; b < B; ++b) {
        const int64_t base = b * row_len + p0 * C;
        const float *ab = a + b * T, *eb = e + b * T, *fb = f + b * T, *gr = grad + p0 * C;
        for (int64_t m = 0; m < (p1 - p0) * C; ++m)
          grad_out[base + m] = ab[m] * gr[m] - eb[m] * out[base + m] + fb[m];
      }
      for (int64_t i = 0; i < g.k; ++i) {
        for (int64_t j = 0; j < g.k; ++j) {
          const TapRow tap = tap_row(g, x_data, n, ho, i, j, p0, p1, scratch.data());
          for (int64_t b = 0; b < B && tap.lo < tap.hi; ++b)
            multiply_add(acc + ((b * g.k + i) * g.k + j) * T, grad_out + b * row_len + tap.lo * C, tap.data,
                         (tap.hi - tap.lo) * C);
        }
      }
    });
  });

  at::Tensor grad_x = at::empty({g.n, C, g.h, g.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  float* gx_data = grad_x.data_ptr<float>();
  const float *big_a = pointwise_tiles.data_ptr<float>(), *big_e = big_a + T, *big_f = big_e + T;
  at::parallel_for(0, g.n * g.h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(T);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.h, hi = row % g.h;
      float* out = gx_data + row * g.w * C;
      std::fill_n(out, g.w * C, 0.f);
      for (int64_t i = 0; i < g.k; ++i) {  // output row ho reads this input row through tap row i
        const int64_t num = hi + g.pad - i;
        if (num < 0 || num % g.stride != 0 || num / g.stride >= g.ho) continue;
        const float* grad_out = gz_data + (n * g.ho + num / g.stride) * B * row_len;
        // Tiles of output columns; each tap (i, j) adds its columns' share into the input columns it read.
        for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
          for (int64_t j = 0; j < g.k; ++j) {
            auto [lo, hi_col] = column_range(g, j);
            lo = std::max(lo, p0);
            hi_col = std::min(hi_col, p1);
            if (lo >= hi_col) continue;
            const int64_t len = (hi_col - lo) * C;
            float* target = g.stride == 1 ? out + (lo - g.pad + j) * C : scratch.data();
            if (g.stride != 1) std::fill_n(target, len, 0.f);
            for (int64_t b = 0; b < B; ++b)
              multiply_add(target, w_data + ((b * g.k + i) * g.k + j) * T, grad_out + b * row_len + lo * C, len);
            for (int64_t wo = lo; wo < hi_col && g.stride != 1; ++wo)
              add(out + (wo * g.stride - g.pad + j) * C, target + (wo - lo) * C, C);
          }
        });
      }
      if (hi % g.stride != 0) continue;  // centre taps: input pixel (hi, wo * stride) of output (hi / stride, wo)
      const float* grad = gy_data + (n * g.ho + hi / g.stride) * row_len;
      const float* in = x_data + row * g.w * C;
      for_each_tile(g, g.wo, [&](int64_t p0, int64_t p1) {
        for (int64_t wo = p0; wo < p1; wo += (g.stride == 1 ? p1 - p0 : 1)) {  // stride 1: the tile at once
          const int64_t len = (g.stride == 1 ? p1 - p0 : 1) * C;
          float* o = out + wo * g.stride * C;
          const float *gr = grad + wo * C, *xi = in + wo * g.stride * C;
          for (int64_t m = 0; m < len; ++m) o[m] += big_a[m] * gr[m] - big_e[m] * xi[m] + big_f[m];
        }
      });
    }
  });
  return {grad_x, untiled(grad_weight, g).to(at::kFloat).view({B, g.k, g.k, C})};
}

// BN's per-channel algebra, branch j < J: conv branches first (j < B), then the centre-tap ones, whose
// per-channel weight is the 1×1 scale conv's (j == B, when `scale` is not empty) or 1 (identity). Scalar
// loops over (J, C): a few dozen small tensor ops here would cost more than the passes on small maps.
struct CentreTaps {
  const float* scale;  // nullptr without a scale branch
  int64_t first;       // B
  double weight(int64_t j, int64_t c) const { return j == first && scale ? scale[c] : 1.0; }
};

// Train-mode forward: returns y (N, C, Ho, Wo, channels-last), z, the state the backward needs (sums
// (2, B + 1, C) and (3, J, C) double: each branch's batch mean, 1 / sqrt(var + eps), a = gamma / sqrt(var +
// eps)) and, for the running statistics, the batch means and unbiased variances (J, C, float).
std::vector<at::Tensor> train_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                      const at::Tensor& gamma, const at::Tensor& beta, double eps, int64_t stride,
                                      bool has_identity) {
  const int64_t B = weight.size(0), C = weight.size(3);
  const int64_t J = B + (scale.numel() > 0) + has_identity;
  TORCH_CHECK(gamma.numel() == J * C && beta.numel() == J * C && gamma.is_contiguous() && beta.is_contiguous() &&
                  scale.is_contiguous(), "depthwise_branches: gamma and beta must be contiguous (J, C)");
  std::vector<at::Tensor> passes = branches_forward(x, weight, stride);
  const at::Tensor z = passes[0], sums = passes[1];
  const double count = double(z.size(0) * z.size(1) * z.size(3));
  at::Tensor state = at::empty({3, J, C}, sums.options());
  at::Tensor batch = at::empty({2, J, C}, x.options());
  at::Tensor coef = at::empty({B + 1, C}, x.options()), bias = at::empty({C}, x.options());
  const double* sum = sums.data_ptr<double>();
  const double* square = sum + (B + 1) * C;
  const float *g = gamma.data_ptr<float>(), *bt = beta.data_ptr<float>();
  const CentreTaps centre{scale.numel() > 0 ? scale.data_ptr<float>() : nullptr, B};
  double *mean_out = state.data_ptr<double>(), *inv_out = mean_out + J * C, *a_out = inv_out + J * C;
  float *batch_mean = batch.data_ptr<float>(), *batch_var = batch_mean + J * C;
  float *coef_out = coef.data_ptr<float>(), *bias_out = bias.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double centre_mean = sum[B * C + c] / count;
    const double centre_var = std::max(square[B * C + c] / count - centre_mean * centre_mean, 0.0);
    double centre_coef = 0, shift = 0;
    for (int64_t j = 0; j < J; ++j) {
      const int64_t at = j * C + c;
      double mean, var, w = 1;
      if (j < B) {
        mean = sum[at] / count;
        var = std::max(square[at] / count - mean * mean, 0.0);
      } else {
        w = centre.weight(j, c);
        mean = w * centre_mean;
        var = w * w * centre_var;
      }
      const double inv = 1.0 / std::sqrt(var + eps), a = g[at] * inv;
      mean_out[at] = mean;
      inv_out[at] = inv;
      a_out[at] = a;
      batch_mean[at] = float(mean);
      batch_var[at] = float(var * count / std::max(count - 1, 1.0));
      if (j < B) coef_out[at] = float(a);
      else centre_coef += w * a;
      shift += bt[at] - mean * a;
    }
    coef_out[B * C + c] = float(centre_coef);
    bias_out[c] = float(shift);
  }
  at::Tensor y = branches_combine(z, x, weight, coef, bias, stride);
  return {y, z, sums, state, batch[0], batch[1]};
}

// Train-mode backward from the forward's state: returns grad_x, grad_weight (B, k, k, C), grad_scale (C, or
// empty), grad_gamma and grad_beta (J, C). With g = dL/dy, per branch: dbeta = sum g,
// dgamma = (sum g z - mean sum g) inv_std, and BN's input gradient a g - e z + f with
// e = a dgamma inv_std / count, f = e mean - a sum g / count.
std::vector<at::Tensor> train_backward(const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& x,
                                       const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& sums,
                                       const at::Tensor& state, int64_t stride) {
  const int64_t B = weight.size(0), C = weight.size(3), J = state.size(1);
  const at::Tensor gy = grad_y.contiguous(at::MemoryFormat::ChannelsLast);
  const double count = double(z.size(0) * z.size(1) * z.size(3));
  const at::Tensor grad_sums = branches_grad_sums(gy, z, x, weight, stride);
  at::Tensor coef = at::empty({3, B, C}, x.options()), pointwise = at::zeros({3, C}, x.options());
  at::Tensor grad_affine = at::empty({2, J, C}, x.options());
  at::Tensor grad_scale = at::empty({scale.numel() > 0 ? C : 0}, x.options());
  const double* gs = grad_sums.data_ptr<double>();
  const double *mean = state.data_ptr<double>(), *inv = mean + J * C, *a_in = inv + J * C;
  const double *sum = sums.data_ptr<double>(), *square = sum + (B + 1) * C;
  const CentreTaps centre{scale.numel() > 0 ? scale.data_ptr<float>() : nullptr, B};
  float *a_out = coef.data_ptr<float>(), *e_out = a_out + B * C, *f_out = e_out + B * C;
  float *big_a = pointwise.data_ptr<float>(), *big_e = big_a + C, *big_f = big_e + C;
  float *grad_gamma = grad_affine.data_ptr<float>(), *grad_beta = grad_gamma + J * C;
  for (int64_t c = 0; c < C; ++c) {
    const double total = gs[B * C + c], centre_dot = gs[(B + 1) * C + c];
    double sum_a = 0, sum_e = 0, sum_f = 0;
    for (int64_t j = 0; j < J; ++j) {
      const int64_t at = j * C + c;
      const double w = j < B ? 1.0 : centre.weight(j, c);
      const double dot = j < B ? gs[at] : w * centre_dot;
      const double dgamma = (dot - mean[at] * total) * inv[at];
      const double e = a_in[at] * dgamma * inv[at] / count, f = e * mean[at] - a_in[at] * total / count;
      grad_gamma[at] = float(dgamma);
      grad_beta[at] = float(total);
      if (j < B) {
        a_out[at] = float(a_in[at]);
        e_out[at] = float(e);
        f_out[at] = float(f);
        continue;
      }
      sum_a += w * a_in[at];
      sum_e += w * w * e;
      sum_f += w * f;
      if (j == B && centre.scale)  // sum over pixels of (a g - e s x + f) x on the centre taps
        grad_scale.data_ptr<float>()[c] = float(a_in[at] * centre_dot - e * w * square[B * C + c] + f * sum[B * C + c]);
    }
    big_a[c] = float(sum_a);
    big_e[c] = float(sum_e);
    big_f[c] = float(sum_f);
  }
  std::vector<at::Tensor> grads = branches_backward(gy, z, x, weight, coef, pointwise, stride);
  return {grads[0], grads[1], grad_scale, grad_affine[0], grad_affine[1]};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("train_forward", &train_forward, "train-mode forward of a depthwise re-parameterizable block");
  m.def("train_backward", &train_backward, "its backward");
}
