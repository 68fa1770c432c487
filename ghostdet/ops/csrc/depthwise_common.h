// Depthwise-conv building blocks shared by ghostdet's CPU kernels (float32, channels-last maps).
//
// A k×k depthwise conv is computed output row by output row, tile by tile: the k² taps' input pixels of a
// tile (tap_tiles) are weighted and summed per channel (weighted_sum), with per-channel weights repeated
// over the tile (tiled) so that the sums run as long vector loops even for few channels.
#pragma once

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>
namespace ghostdet {

// Loops run along rows with per-channel values repeated over a tile of pixels (about kTileFloats floats),
// so that few-channel maps (8..48 channels at high resolution) still get long vectorized loops.
inline constexpr int64_t kTileFloats = 256;

struct Geometry {
  int64_t n, c, h, w, k, stride, pad, ho, wo, branches;
  int64_t tile;  // floats per tile
  int64_t taps() const { return k * k; }
  int64_t centre() const { return pad * k + pad; }
};

inline Geometry geometry_of(const at::Tensor& x, const at::Tensor& weight, int64_t stride) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && !x.is_cuda() &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "depthwise_branches: x must be a float32 CPU tensor in channels-last memory format");
  TORCH_CHECK(weight.dim() == 4 && weight.is_contiguous() && weight.scalar_type() == at::kFloat &&
                  weight.size(1) == weight.size(2) && weight.size(1) % 2 == 1 && weight.size(3) == x.size(1),
              "depthwise_branches: weight must be a contiguous float32 (branches, k, k, channels) tensor, odd k");
  TORCH_CHECK(stride >= 1, "depthwise_branches: stride must be positive");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), weight.size(1), stride, weight.size(1) / 2,
             0, 0, weight.size(0), 0};
  g.ho = (g.h + 2 * g.pad - g.k) / stride + 1;
  g.wo = (g.w + 2 * g.pad - g.k) / stride + 1;
  // A whole number of pixels and of 16-float vector steps (no scalar tail), about kTileFloats floats.
  const int64_t unit = 16 / std::gcd<int64_t>(g.c, 16);
  g.tile = std::max(unit, kTileFloats / g.c / unit * unit) * g.c;
  return g;
}

// (rows, C) per-channel values -> (rows, tile) float, each row repeated tile / C times.
inline at::Tensor tiled(const at::Tensor& per_channel, const Geometry& g) {
  const at::Tensor values = per_channel.to(at::kFloat).contiguous();
  const int64_t rows = values.numel() / g.c;
  at::Tensor out = at::empty({rows, g.tile}, values.options());
  const float* in = values.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < g.tile; s += g.c) std::copy_n(in + r * g.c, g.c, o + r * g.tile + s);
  return out;
}

// Eight floats as one value (GCC/Clang vector extension: one AVX register, or two SSE ones), unaligned.
// Typed loads and stores (not memcpy) let the compiler keep the pointer tables below in registers.
typedef float Vec8 __attribute__((vector_size(32), aligned(4)));

typedef float Vec4 __attribute__((vector_size(16), aligned(4)));

inline Vec8 load8(const float* p) { return *reinterpret_cast<const Vec8*>(p); }

inline Vec4 load4(const float* p) { return *reinterpret_cast<const Vec4*>(p); }

inline void store8(float* p, Vec8 v) { *reinterpret_cast<Vec8*>(p) = v; }

// out[m] (+)= sum_t w[t][m] * in[t][m], m < len: the sums stay in registers over all terms (one load of
// each operand per multiply-add, instead of also loading and storing the sum).
inline void weighted_sum(float* out, const float* const* w, const float* const* in, int64_t terms, int64_t len,
                  bool accumulate) {
  int64_t m = 0;
  for (; m + 16 <= len; m += 16) {
    Vec8 low = {}, high = {};
    if (accumulate) {
      low = load8(out + m);
      high = load8(out + m + 8);
    }
    for (int64_t t = 0; t < terms; ++t) {
      low += load8(w[t] + m) * load8(in[t] + m);
      high += load8(w[t] + m + 8) * load8(in[t] + m + 8);
    }
    store8(out + m, low);
    store8(out + m + 8, high);
  }
  for (; m < len; ++m) {
    float acc = accumulate ? out[m] : 0.f;
    for (int64_t t = 0; t < terms; ++t) acc += w[t][m] * in[t][m];
    out[m] = acc;
  }
}

// Output columns [lo, hi) whose kernel tap column j lands inside the input (not in the padding).
inline std::pair<int64_t, int64_t> column_range(const Geometry& g, int64_t j) {
  const int64_t first = g.pad - j, last = g.w - 1 + g.pad - j;  // wo * stride must lie in [first, last]
  const int64_t lo = first > 0 ? (first + g.stride - 1) / g.stride : 0;
  const int64_t hi = last < 0 ? 0 : std::min(g.wo, last / g.stride + 1);
  return {lo, std::max(lo, hi)};
}

// Work goes tile by tile along a row of `columns` pixels.
template <typename Body>
void for_each_tile(const Geometry& g, int64_t columns, const Body& body) {
  const int64_t pixels = g.tile / g.c;
  for (int64_t p0 = 0; p0 < columns; p0 += pixels) body(p0, std::min(columns, p0 + pixels));
}

// The k² taps' input pixels for output columns [p0, p1) of output row (n, ho), each (p1 - p0) × C floats:
// views into x where a tap sees only input (stride 1), else copies in `scratch` (k² × tile floats) with
// zeros for the padding.
inline void tap_tiles(const Geometry& g, const float* x, int64_t n, int64_t ho, int64_t p0, int64_t p1, float* scratch,
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
}  // namespace ghostdet
