#!/usr/bin/env bash
# dev/cudasim/run.sh OP [gtest flags]: runs the GPU tests test/test_OP_cuda.cu on the CPU, against the real
# source of kernels/OP.cu executed by the host simulator in sim.h (one fiber per GPU thread). For machines
# without a GPU: it catches indexing, masking, tail and barrier mistakes before a GPU session, nothing
# about speed. Slow (seconds per test). Not built by the Makefile.
#   SAN="-fsanitize=address,undefined"  also checks every global and shared memory access is in bounds
#   REVERSE=1                           runs each block's threads in the opposite order
#   OPTIN=166912                        the A100's shared memory per block instead of the H100's
# Needs g++, the CUDA headers (/usr/local/cuda/include) and GoogleTest; the CPU reference kernels/OP_cpu.cpp.
set -euo pipefail
op=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${CUDASIM_DIR:-/tmp/cudasim_$op}
mkdir -p "$out"
python3 "$root/dev/cudasim/transform.py" "$root/kernels/$op.cu" "$out/${op}_sim.cpp"
g++ -std=c++17 -O1 -g -fopenmp -w ${SAN:-} -I"$root/dev/cudasim" -I"$root/kernels" -I"$root" \
    -I/usr/local/cuda/include -include sim.h -x c++ "$root/test/test_${op}_cuda.cu" "$root/kernels/cuda_common.cu" \
    -x none "$out/${op}_sim.cpp" "$root/dev/cudasim/sim_runtime.cpp" "$root/kernels/${op}_cpu.cpp" \
    -lgtest -lgtest_main -lpthread -o "$out/tests"
"$out/tests" --gtest_brief=1 "$@"
