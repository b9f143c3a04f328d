#!/usr/bin/env bash
# Compile-check every CUDA source with nvcc, on machines without a GPU or a CUDA torch.
#   tools/cuda_check.sh NVCC ARCH PYTHON
# 1. Each csrc/**/*_kernels.cuh alone (CUDA headers only); FGO_CUDA_CHECK makes it take its
#    launchers' addresses, so every kernel is instantiated for every dtype.
# 2. Each torch-facing csrc/**/*_cuda.cu, and the CUDA emulation's self-test kernels (real
#    CUDA too), against the installed torch's headers. A CPU wheel
#    lacks one generated header of c10/cuda (cuda_cmake_macros.h); a stub stands in for it.
#    Skipped when PYTHON has no torch.
# Objects go to build/cuda-check/ and are rebuilt only when a csrc/ file is newer. The
# compiles run CUDA_CHECK_JOBS (default: the cores) at a time; any failure fails the script.
set -euo pipefail
nvcc=$1 arch=$2 python=$3
out=build/cuda-check
jobs=${CUDA_CHECK_JOBS:-$(nproc)}
mkdir -p "$out"
pids=()

# Runs "$@" in the background once fewer than $jobs compiles are running.
spawn() {
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 0.2; done
  "$@" &
  pids+=($!)
}

# Waits for every compile; the exit status is 1 if any failed.
join() {
  local failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  pids=()
  return $failed
}

stale() { [ ! -f "$1" ] || [ -n "$(find csrc tests/cuda_emulation -type f -newer "$1" | head -1)" ]; }

for header in $(cd csrc && find . -name '*_kernels.cuh' | sort); do
  header=${header#./}
  tu=$out/$(basename "$header" .cuh).cu
  stale "${tu%.cu}.o" || continue
  printf '#include "%s"\n' "$header" > "$tu"
  echo "nvcc $arch: csrc/$header"
  # C++17: the oldest standard a supported torch builds extensions with (2.11; 2.13 uses 20).
  spawn "$nvcc" -std=c++17 -arch="$arch" -Icsrc -DFGO_CUDA_CHECK -c "$tu" -o "${tu%.cu}.o"
done

if ! includes=$("$python" -c 'import sysconfig; from torch.utils.cpp_extension import include_paths
print(" ".join("-I" + p for p in include_paths() + [sysconfig.get_paths()["include"]]))' 2>/dev/null)
then
  echo "cuda-check: no torch for $python, torch-facing *_cuda.cu launchers skipped"
  join
  exit 0
fi
stub=$out/stub/c10/cuda/impl/cuda_cmake_macros.h
mkdir -p "$(dirname "$stub")"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stub"
for source in $(find csrc -name '*_cuda.cu' | sort) tests/cuda_emulation/selftest_kernels.cu; do
  object=$out/$(basename "$source" .cu).o
  stale "$object" || continue
  echo "nvcc $arch: $source (against torch's headers)"
  # The stub include dir comes last: a CUDA torch's own header wins where it exists.
  # shellcheck disable=SC2086
  spawn "$nvcc" -std=c++20 -arch="$arch" -Icsrc -Itests/cuda_emulation $includes -I"$out/stub" \
    -DWITH_CUDA --expt-relaxed-constexpr -diag-suppress 20013,20015 -c "$source" -o "$object"
done
join
