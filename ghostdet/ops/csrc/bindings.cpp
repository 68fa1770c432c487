// The Python module of ghostdet's CPU extension (built on first use by ghostdet/ops/build.py).
#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("train_forward", &ghostdet::train_forward, "train-mode forward of a depthwise re-parameterizable block");
  m.def("train_backward", &ghostdet::train_backward, "its backward");
  m.def("ghost_module_output", &ghostdet::ghost_module_output,
        "a ghost module's output (cheap depthwise conv, concatenation, DFC gate) in one pass");
}
