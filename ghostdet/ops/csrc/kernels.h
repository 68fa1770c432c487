// What ghostdet's CPU extension exports (see bindings.cpp); each function lives in its own source file.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace ghostdet {

// depthwise_branches.cpp: train-mode depthwise re-parameterizable block, forward and backward.
std::vector<at::Tensor> train_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                                      const at::Tensor& gamma, const at::Tensor& beta, double eps, int64_t stride,
                                      bool has_identity);
std::vector<at::Tensor> train_backward(const at::Tensor& grad_y, const at::Tensor& z, const at::Tensor& x,
                                       const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& stats,
                                       const at::Tensor& state, int64_t stride);

// ghost_module.cpp: a ghost module's output from its primary half, in one pass (inference).
at::Tensor ghost_module_output(const at::Tensor& primary, const at::Tensor& kernel, const at::Tensor& bias,
                               bool relu, const c10::optional<at::Tensor>& gate, const at::Tensor& gate_rows,
                               const at::Tensor& gate_cols);

}  // namespace ghostdet
