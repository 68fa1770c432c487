// A ghost module's output in one pass over the maps (inference: CPU, float32, channels-last).
//
// At inference a ghost module's output is cat(p, act(w ⊛ p + b)), its primary half p = act(q) (P channels, q
// the primary conv's output) and a cheap 3×3 depthwise conv of it, act ReLU or nothing, then, in a bottleneck's first one, times the DFC gate upsampled (nearest) from half
// resolution. PyTorch runs a conv, an activation, a concatenation, an upsampling and a
// multiplication: several full-size maps written and read back. Here each output row is computed
// block of channels by block of channels, the block's nine kernel taps held in registers, and written once,
// gated. Same float operations as PyTorch's, up to the order of the conv's sums.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace ghostdet {

namespace {

// V floats as one value (GCC/Clang vector extension), unaligned.
template <int V>
struct Lanes {
  typedef float type __attribute__((vector_size(4 * V), aligned(4)));
};
template <int V>
using Vec = typename Lanes<V>::type;

template <int V>
inline Vec<V> load(const float* p) {
  return *reinterpret_cast<const Vec<V>*>(p);
}

template <int V>
inline void store(float* p, Vec<V> v) {
  *reinterpret_cast<Vec<V>*>(p) = v;
}

// One output row's pointers; rows above and below the map point to zeros.
struct Row {
  const float* in[3];          // input rows h - 1, h, h + 1: (W, P)
  const float* gate;           // gate row (Wg, C), or null
  const int64_t* gate_cols;    // gate column of each output column
  float* out;                  // (W, C)
};

struct Shape {
  int64_t w, p, c;
};

// Channels [c0, c0 + V) of both halves of one output row (Relu: act is ReLU, applied to q as it is read).
template <int V, bool Relu, bool Gated>
void row_block(const Row& row, const Shape& s, const float* kernel, const float* bias, int64_t c0) {
  Vec<V> w[9];
  for (int t = 0; t < 9; ++t) w[t] = load<V>(kernel + t * s.p + c0);
  const Vec<V> b = load<V>(bias + c0), zero = Vec<V>{} * 0.f;
  auto act = [&](Vec<V> v) {
    if constexpr (Relu) return v < zero ? zero : v;  // NaN stays NaN, as torch.relu keeps it
    return v;
  };
  auto p_at = [&](const float* px) { return act(load<V>(px)); };
  // The cheap conv at column q; `left`/`right`: whether the pixels left and right of q exist. Taps in
  // row-major order, then the bias, as oneDNN sums them (bitwise equal to PyTorch's conv for blocks of 8
  // and 16 channels, within float rounding for the rest).
  auto cheap_at = [&](int64_t q, bool left, bool right) {
    Vec<V> acc = zero;
    for (int i = 0; i < 3; ++i) {
      const float* px = row.in[i] + q * s.p + c0;
      if (left) acc += w[3 * i] * p_at(px - s.p);
      acc += w[3 * i + 1] * p_at(px);
      if (right) acc += w[3 * i + 2] * p_at(px + s.p);
    }
    return act(acc + b);
  };
  auto emit = [&](int64_t q, Vec<V> cheap) {
    Vec<V> primary = p_at(row.in[1] + q * s.p + c0);
    const int64_t at = q * s.c + c0;
    if constexpr (Gated) {
      const float* g = row.gate + row.gate_cols[q] * s.c + c0;
      primary *= load<V>(g);
      cheap *= load<V>(g + s.p);
    }
    store<V>(row.out + at, primary);
    store<V>(row.out + at + s.p, cheap);
  };
  if (s.w == 1) {
    emit(0, cheap_at(0, false, false));
    return;
  }
  emit(0, cheap_at(0, false, true));
  for (int64_t q = 1; q + 1 < s.w; ++q) emit(q, cheap_at(q, true, true));
  emit(s.w - 1, cheap_at(s.w - 1, true, false));
}

// All channels of one output row: blocks of 16, then 8, 4 and single channels.
template <bool Relu, bool Gated>
void row_all(const Row& row, const Shape& s, const float* kernel, const float* bias) {
  int64_t c = 0;
  for (; c + 16 <= s.p; c += 16) row_block<16, Relu, Gated>(row, s, kernel, bias, c);
  for (; c + 8 <= s.p; c += 8) row_block<8, Relu, Gated>(row, s, kernel, bias, c);
  for (; c + 4 <= s.p; c += 4) row_block<4, Relu, Gated>(row, s, kernel, bias, c);
  for (; c < s.p; ++c) row_block<1, Relu, Gated>(row, s, kernel, bias, c);
}

using RowFn = void (*)(const Row&, const Shape&, const float*, const float*);

template <bool Relu>
RowFn row_fn(bool gated) {
  return gated ? row_all<Relu, true> : row_all<Relu, false>;
}

void check_map(const at::Tensor& map, const at::Tensor& primary, int64_t channels, int64_t h, int64_t w,
               const char* what) {
  TORCH_CHECK(map.dim() == 4 && map.scalar_type() == at::kFloat && !map.is_cuda() &&
                  map.is_contiguous(at::MemoryFormat::ChannelsLast) && map.size(0) == primary.size(0) &&
                  map.size(1) == channels && map.size(2) == h && map.size(3) == w,
              "ghost_module_output: ", what, " must be a float32 channels-last (N, ", channels, ", ", h, ", ", w,
              ") map");
}

}  // namespace

// primary: q, (N, P, H, W); kernel (P, 9) and bias (P) of the cheap conv (stride 1, padding 1); gate
// (N, 2P, Hg, Wg) read at gate_rows[h], gate_cols[w] (int64, PyTorch's nearest source indices); relu: act is ReLU (else nothing). Returns the (N, 2P, H, W) output, channels-last.
at::Tensor ghost_module_output(const at::Tensor& primary, const at::Tensor& kernel, const at::Tensor& bias,
                               bool relu, const c10::optional<at::Tensor>& gate, const at::Tensor& gate_rows,
                               const at::Tensor& gate_cols) {
  TORCH_CHECK(primary.dim() == 4 && primary.scalar_type() == at::kFloat && !primary.is_cuda() &&
                  primary.is_contiguous(at::MemoryFormat::ChannelsLast),
              "ghost_module_output: primary must be a float32 CPU map in channels-last memory format");
  const int64_t N = primary.size(0), P = primary.size(1), H = primary.size(2), W = primary.size(3), C = 2 * P;
  TORCH_CHECK(kernel.dim() == 2 && kernel.size(0) == P && kernel.size(1) == 9 && kernel.is_contiguous() &&
                  kernel.scalar_type() == at::kFloat && bias.numel() == P && bias.is_contiguous() &&
                  bias.scalar_type() == at::kFloat,
              "ghost_module_output: kernel must be contiguous float32 (P, 9), bias (P)");
  const bool gated = gate.has_value();
  if (gated) {
    check_map(*gate, primary, C, gate->size(2), gate->size(3), "gate");
    TORCH_CHECK(gate_rows.numel() == H && gate_cols.numel() == W && gate_rows.scalar_type() == at::kLong &&
                    gate_cols.scalar_type() == at::kLong && gate_rows.is_contiguous() && gate_cols.is_contiguous(),
                "ghost_module_output: gate_rows / gate_cols must be int64 indices, one per output row / column");
  }
  at::Tensor out = at::empty({N, C, H, W}, primary.options().memory_format(at::MemoryFormat::ChannelsLast));
  const std::vector<float> zeros(W * P, 0.f);
  std::vector<float> taps(9 * P);  // (9, P): a tap's weights for consecutive channels are one vector load
  const float* k_data = kernel.data_ptr<float>();
  for (int64_t c = 0; c < P; ++c)
    for (int t = 0; t < 9; ++t) taps[t * P + c] = k_data[c * 9 + t];
  const float* p_data = primary.data_ptr<float>();
  const float* gate_data = gated ? gate->data_ptr<float>() : nullptr;
  const int64_t* rows = gated ? gate_rows.data_ptr<int64_t>() : nullptr;
  const int64_t gate_h = gated ? gate->size(2) : 0, gate_w = gated ? gate->size(3) : 0;
  float* out_data = out.data_ptr<float>();
  const Shape shape{W, P, C};
  const RowFn compute_row = relu ? row_fn<true>(gated) : row_fn<false>(gated);
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / H, h = r % H;
      Row row{};
      for (int i = 0; i < 3; ++i) {
        const int64_t hi = h - 1 + i;
        row.in[i] = hi >= 0 && hi < H ? p_data + (n * H + hi) * W * P : zeros.data();
      }
      if (gated) {
        row.gate = gate_data + (n * gate_h + rows[h]) * gate_w * C;
        row.gate_cols = gate_cols.data_ptr<int64_t>();
      }
      row.out = out_data + r * W * C;
      compute_row(row, shape, taps.data(), bias.data_ptr<float>());
    }
  });
  return out;
}

}  // namespace ghostdet
