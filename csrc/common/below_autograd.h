#pragma once
// Calls a finegrained_ops op below the autograd layer: its device kernel, or its fake kernel
// under tracing. What an op's C++ autograd function (<op>_op.cpp) runs forward.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <utility>

namespace fgo {

// Signature: the kernel's function type; name: the op's qualified name.
template <typename Signature, typename... Args>
decltype(auto) below_autograd(const char* name, Args&&... args) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Signature>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

}  // namespace fgo
