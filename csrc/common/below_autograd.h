#pragma once
// Calls a finegrained_ops op below the autograd layer: its device kernel, or its fake kernel
// under tracing. What an op's C++ autograd function (<op>_op.cpp) runs forward.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <utility>

namespace fgo {

// The typed handle of the op `name` ("finegrained_ops::..."), Signature its kernel's function
// type. Look it up once per op (a function-local static at the call site).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Signature>();
}

template <typename Signature, typename... Args>
decltype(auto) below_autograd(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(std::forward<Args>(args)...);
}

}  // namespace fgo
