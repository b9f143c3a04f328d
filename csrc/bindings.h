#pragma once
#include <pybind11/pybind11.h>

namespace fgo {

// Adds every native entry point of finegrained_ops to the Python module m.
void bind_ops(pybind11::module_& m);

}  // namespace fgo
