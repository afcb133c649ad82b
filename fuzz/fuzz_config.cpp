// The TOML configuration parser and validator (config::parse; `pacsnode check-config`, startup).
#include <exception>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)config::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  } catch (const config::ConfigError&) {
  }
  return 0;
}
