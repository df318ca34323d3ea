// Input checks whose messages never go through a C++ stream.
//
// TORCH_CHECK(cond, a, b, ...) formats its message with std::ostringstream, compiled into the
// extension; an extension built by another compiler than the one behind the process's C++
// runtime then runs stream code whose locale the process never set up (formatting a number
// crashed the process). RO_CHECK takes exactly one message, a string literal or a std::string
// (numbers via std::to_string), which TORCH_CHECK passes through untouched.
#pragma once

#include <c10/util/Exception.h>

#include <string>

namespace renderocc {

inline const char* check_text(const char* message) { return message; }
inline const std::string& check_text(const std::string& message) { return message; }

}  // namespace renderocc

#define RO_CHECK(cond, message) TORCH_CHECK((cond), ::renderocc::check_text(message))
