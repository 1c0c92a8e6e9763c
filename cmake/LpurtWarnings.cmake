# One INTERFACE target carries the warning set, the numerics flags and the sanitizer flags; every lpurt
# target links it PRIVATE.
add_library(lpurt_warnings INTERFACE)
target_compile_options(lpurt_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align -Woverloaded-virtual
  -Wconversion -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough
  $<$<BOOL:${LPURT_WERROR}>:-Werror>)
# Exact numerics in every target, not only the kernels: float results must not depend on whether the
# compiler fuses a*b+c into one rounding, or the prefill (many tokens) and decode (one token) paths could
# round differently, and so could any float computed outside chip/ (reductions, modelled times).
target_compile_options(lpurt_warnings INTERFACE -ffp-contract=off -fno-fast-math)

set(LPURT_SANITIZE_FLAGS "")
if(LPURT_SANITIZE_ADDRESS)
  list(APPEND LPURT_SANITIZE_FLAGS -fsanitize=address)
endif()
if(LPURT_SANITIZE_UNDEFINED)
  list(APPEND LPURT_SANITIZE_FLAGS -fsanitize=undefined -fno-sanitize-recover=undefined)
endif()
if(LPURT_SANITIZE_FLAGS)
  add_compile_options(${LPURT_SANITIZE_FLAGS} -fno-omit-frame-pointer)
  add_link_options(${LPURT_SANITIZE_FLAGS})
endif()
