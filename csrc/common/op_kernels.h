#pragma once
// Dispatch-key kernels derived from an op's signature (its entry point's function type), so
// that an op's argument list is written once, in its entry point, and not again for its
// Autograd and Autocast kernels.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstddef>
#include <tuple>
#include <utility>

#include "common/autocast.h"

namespace fgo {

// The Autograd kernel of an op of type Signature whose autograd is Function, a
// torch::autograd::Function whose forward takes the op's arguments and returns its outputs,
// in order.
template <typename Function, typename Signature>
struct AutogradKernel;

template <typename Function, typename... Outputs, typename... Args>
struct AutogradKernel<Function, std::tuple<Outputs...>(Args...)> {
  static std::tuple<Outputs...> call(Args... args) {
    return outputs(Function::apply(args...), std::index_sequence_for<Outputs...>());
  }

 private:
  template <std::size_t... I>
  static std::tuple<Outputs...> outputs(const torch::autograd::variable_list& out,
                                        std::index_sequence<I...>) {
    return {out[I]...};
  }
};

template <typename Function, typename... Args>
struct AutogradKernel<Function, at::Tensor(Args...)> {
  static at::Tensor call(Args... args) { return Function::apply(args...); }
};

// The AutocastCPU / AutocastCUDA kernel of a loss op, op() its handle: its first argument is
// the input, read in its own dtype (no cast), and its last the loss dtype, float32 for a half
// input unless the caller asked for one (autocast.h).
template <typename Signature, const c10::TypedOperatorHandle<Signature>& (*op)()>
struct AutocastLossKernel;

template <typename Result, typename Input, typename... Rest,
          const c10::TypedOperatorHandle<Result(Input, Rest...)>& (*op)()>
struct AutocastLossKernel<Result(Input, Rest...), op> {
  static Result call(Input input, Rest... rest) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    return with_loss_dtype(std::forward_as_tuple(input, rest...),
                           std::make_index_sequence<sizeof...(Rest)>());
  }

 private:
  // Every argument but the last as given, then the loss dtype.
  template <typename Arguments, std::size_t... I>
  static Result with_loss_dtype(Arguments arguments, std::index_sequence<I...>) {
    return op().call(std::get<I>(arguments)...,
                     autocast_loss_dtype(std::get<0>(arguments),
                                         std::get<sizeof...(Rest)>(arguments)));
  }
};

}  // namespace fgo
