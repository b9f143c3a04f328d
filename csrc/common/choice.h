#pragma once
// Mode arguments cross the Python boundary as strings ("mean", "focal", ...) and are parsed
// here, once, into the enums the kernels take. Each op keeps its table of names next to its
// entry points; bindings.cpp exports the tables as _C.choices, so Python checks against the
// same names.
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <array>
#include <string>
#include <utility>
#include <vector>

namespace fgo {

template <typename Enum, size_t N>
using Choices = std::array<std::pair<const char*, Enum>, N>;

// The enum named `value`, or an error naming the argument, the choices and the value. Mode
// strings are c10::string_view throughout, the type the dispatcher passes a `str` argument as
// (an alias of std::string_view in recent torch), so the entry points are the ops' kernels.
template <typename Enum, size_t N>
Enum parse_choice(const char* op, const char* argument, c10::string_view value,
                  const Choices<Enum, N>& choices) {
  std::string names;
  for (const auto& [name, code] : choices) {
    if (value == name) return code;
    names += std::string(names.empty() ? "" : ", ") + "'" + name + "'";
  }
  TORCH_CHECK_VALUE(false, op, ": ", argument, " must be one of ", names, ", got '", value, "'");
}

template <typename Enum, size_t N>
std::vector<std::string> choice_names(const Choices<Enum, N>& choices) {
  std::vector<std::string> names;
  for (const auto& choice : choices) names.emplace_back(choice.first);
  return names;
}

}  // namespace fgo
