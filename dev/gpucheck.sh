#!/usr/bin/env bash
# dev/gpucheck.sh (make gpucheck): everything the GPU side needs verified, in one call on a GPU machine.
#
#   1. builds build/gpu_tests (every test/*_cuda.cu) and the CUDA benchmarks (dev/*.cu)
#   2. runs every GPU test
#   3. runs the GPU tests again under compute-sanitizer: memcheck, then racecheck
#   4. trains tiny for 60 steps with ./train --device cuda (the loss must fall), and 2 steps under each sanitizer
#   5. runs every benchmark (each checks its versions against the CPU reference, then times them against
#      the ceilings it measures) and, where PyTorch is installed, dev/peers_torch.py on the same shapes
#   6. prints one summary table: each step's result, then every benchmark's SUMMARY line
# Logs go to $OUT (or build/gpucheck) as <step>.log. The exit status is non-zero if any step failed.
# Without a GPU it says so and exits 1: nothing here can be verified on a CPU.
#
# GoogleTest and LAPACK: the system's if it has them, else what `make gpudeps` copied into build/deps on a
# machine that has the Debian packages (GoogleTest's sources, built here; LAPACK's shared libraries). Carry
# build/deps to the GPU machine: `run` with carry ["build/deps"], command `make gpucheck`.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-build/gpucheck}
mkdir -p "$LOG"
JOBS=$(nproc)
STEP_TIMEOUT=${STEP_TIMEOUT:-150}   # seconds any one step may take
BUDGET=${BUDGET:-480}               # seconds for the whole check: later steps are skipped past it, so the
                                    # table still comes back inside a short device lease
START=$(date +%s)
over_budget() { [ $(( $(date +%s) - START )) -ge "$BUDGET" ]; }
results=()
failed=0
record() {  # name status detail
    results+=("$(printf '%-28s %-6s %s' "$1" "$2" "$3")")
    [ "$2" = ok ] || [ "$2" = skip ] || failed=1
}

if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOG/gpu.log" 2>&1; then
    echo "gpucheck: no GPU here (nvidia-smi failed: $(head -c 200 "$LOG/gpu.log")); nothing to verify"
    exit 1
fi
echo "gpucheck on: $(cat "$LOG/gpu.log")"

GTEST_VARS=()
if ! echo '#include <gtest/gtest.h>' | g++ -E -x c++ - >/dev/null 2>&1; then
    src=build/deps/googletest
    if [ ! -d "$src" ]; then
        echo "gpucheck: no GoogleTest headers on this machine and no $src (run 'make gpudeps' where"
        echo "          libgtest-dev is installed, then carry build/deps)"
        exit 1
    fi
    mkdir -p build/deps/gtest
    g++ -O2 -std=c++17 -isystem $src/include -I$src -c $src/src/gtest-all.cc -o build/deps/gtest/gtest-all.o &&
        g++ -O2 -std=c++17 -isystem $src/include -I$src -c $src/src/gtest_main.cc -o build/deps/gtest/gtest_main.o &&
        ar rcs build/deps/gtest/libgtest.a build/deps/gtest/gtest-all.o &&
        ar rcs build/deps/gtest/libgtest_main.a build/deps/gtest/gtest_main.o || { echo "gpucheck: building GoogleTest failed"; exit 1; }
    GTEST_VARS=("GTEST_CFLAGS=-isystem $src/include" "GTEST_LIBS=build/deps/gtest/libgtest_main.a build/deps/gtest/libgtest.a -lpthread")
fi

if ! echo 'int main() {}' | g++ -x c++ - -llapack -lblas -o /dev/null >/dev/null 2>&1; then
    deps=$PWD/build/deps/lib
    if [ ! -f "$deps/liblapack.so.3" ]; then
        echo "gpucheck: no LAPACK/BLAS on this machine and none in build/deps/lib (run 'make gpudeps' where"
        echo "          liblapack-dev is installed, then carry build/deps)"
        exit 1
    fi
    GTEST_VARS+=("LAPACK_LIBS=-L$deps -Xlinker -l:liblapack.so.3 -Xlinker -l:libblas.so.3")
    export LD_LIBRARY_PATH=$deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

t0=$(date +%s)
if make -j"$JOBS" "${GTEST_VARS[@]}" build/gpu_tests cuda-benchmarks > "$LOG/build.log" 2>&1; then
    record build ok "$(( $(date +%s) - t0 )) s"
else
    record build FAIL "see $LOG/build.log"
    grep -m 20 -E "error" "$LOG/build.log"
    printf '%s\n' "${results[@]}"
    exit 1
fi

gtest_counts() {  # the pass / fail / skip counts of a gtest log
    local p f s
    p=$(grep -oP '^\[  PASSED  \] \K[0-9]+' "$1" | tail -1)
    f=$(grep -oP '^\[  FAILED  \] \K[0-9]+(?= tests?, listed)' "$1" | tail -1)
    s=$(grep -oP '^\[  SKIPPED \] \K[0-9]+(?= tests?, listed)' "$1" | tail -1)
    echo "${p:-0} passed, ${f:-0} failed, ${s:-0} skipped"
}

timeout "$STEP_TIMEOUT" build/gpu_tests --gtest_output=xml:"$LOG/gpu_tests.xml" > "$LOG/gpu_tests.log" 2>&1
rc=$?
skipped=$(grep -oP '^\[  SKIPPED \] \K[0-9]+' "$LOG/gpu_tests.log" | tail -1)
[ "${skipped:-0}" -gt 0 ] && rc="$rc, tests skipped on a GPU machine: $(grep -m1 -oP 'no CUDA GPU \(.*?\)' "$LOG/gpu_tests.log")"
record "GPU tests" "$([ "$rc" = 0 ] && echo ok || echo FAIL)" "$(gtest_counts "$LOG/gpu_tests.log") (rc $rc)"
grep -E '^\[  FAILED  \] [A-Za-z]' "$LOG/gpu_tests.log" | sort -u | head -20

if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
        if over_budget; then record "compute-sanitizer $tool" skip "past the ${BUDGET} s budget"; continue; fi
        timeout "$STEP_TIMEOUT" compute-sanitizer --tool $tool --error-exitcode 9 build/gpu_tests --gtest_brief=1 --gtest_filter=-*Long* \
            > "$LOG/sanitizer_$tool.log" 2>&1
        rc=$?
        detail=$(grep -m1 -E "ERROR SUMMARY|RACECHECK SUMMARY" "$LOG/sanitizer_$tool.log")
        [ $rc = 124 ] && detail="timed out after ${STEP_TIMEOUT} s"
        record "compute-sanitizer $tool" "$([ $rc = 0 ] && echo ok || echo FAIL)" "${detail:-rc $rc}"
    done
else
    record compute-sanitizer skip "not installed here"
fi

# a short ./train --device cuda on the bundled corpus (gpt2 tokens): the loss must fall, then two steps under
# each sanitizer (./train links LAPACK for the CPU methods: a machine without it fails this step alone)
if over_budget; then
    record "train --device cuda" skip "past the ${BUDGET} s budget"
elif make -j"$JOBS" "${GTEST_VARS[@]}" train tokenizer > "$LOG/build_train.log" 2>&1; then
    shards=build/gpucheck_shards
    ./tokenizer shard --encoding gpt2 --docs line --prefix text --out $shards --quiet data/text > /dev/null 2>&1
    TRAIN="./train --device cuda --data $shards --encoding gpt2 --model tiny --batch 16 --seq 256 --sample-tokens 0"
    timeout "$STEP_TIMEOUT" $TRAIN --steps 60 --eval-every 0 --val-batches 4 --out "$LOG/train" > "$LOG/train.log" 2>&1
    rc=$?
    first=$(grep -m1 -oP 'step +1/60 \| loss \K[0-9.]+' "$LOG/train.log")
    last=$(grep -oP 'step +60/60 \| loss \K[0-9.]+' "$LOG/train.log")
    speed=$(grep -oP 'step +60/60 .*\| \K[0-9]+(?= tok/s)' "$LOG/train.log")
    falls=$(awk -v a="${first:-0}" -v b="${last:-0}" 'BEGIN { print (b > 0 && b < a) ? "yes" : "no" }')
    record "train --device cuda" "$([ $rc = 0 ] && [ "$falls" = yes ] && echo ok || echo FAIL)" \
        "rc $rc, tiny 60 steps: loss ${first:-?} -> ${last:-?}, ${speed:-?} tok/s, $(grep -m1 -oP 'GPU peak [^)]+' "$LOG/train.log" | tail -1)"
    if command -v compute-sanitizer >/dev/null; then
        for tool in memcheck racecheck; do
            if over_budget; then record "train under $tool" skip "past the ${BUDGET} s budget"; continue; fi
            timeout "$STEP_TIMEOUT" compute-sanitizer --tool $tool --error-exitcode 9 $TRAIN --batch 2 --seq 64 \
                --steps 2 --val-batches 1 --out "$LOG/train_$tool" > "$LOG/train_sanitizer_$tool.log" 2>&1
            rc=$?
            detail=$(grep -m1 -E "ERROR SUMMARY|RACECHECK SUMMARY" "$LOG/train_sanitizer_$tool.log")
            [ $rc = 124 ] && detail="timed out after ${STEP_TIMEOUT} s"
            record "train under $tool" "$([ $rc = 0 ] && echo ok || echo FAIL)" "${detail:-rc $rc}"
        done
    fi
else
    record "train --device cuda" FAIL "build failed: see $LOG/build_train.log ($(grep -m1 -oE 'cannot find -l[a-z]+' "$LOG/build_train.log"))"
fi

for bench in $(make -s print-cuda-benchmarks); do
    name=$(basename "$bench")
    if over_budget; then record "bench $name" skip "past the ${BUDGET} s budget"; continue; fi
    timeout "$STEP_TIMEOUT" "$bench" > "$LOG/bench_$name.log" 2>&1
    rc=$?
    rows=$(grep -c '^SUMMARY|' "$LOG/bench_$name.log")
    record "bench $name" "$([ $rc = 0 ] && [ "$rows" -gt 0 ] && echo ok || echo FAIL)" "rc $rc, $rows rows"
    [ $rc = 0 ] || tail -3 "$LOG/bench_$name.log"
done
if over_budget; then
    record "bench peers_torch" skip "past the ${BUDGET} s budget"
elif python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    timeout "$STEP_TIMEOUT" python3 dev/peers_torch.py > "$LOG/bench_peers_torch.log" 2>&1
    rc=$?
    record "bench peers_torch" "$([ $rc = 0 ] && echo ok || echo FAIL)" "rc $rc"
else
    record "bench peers_torch" skip "no PyTorch with CUDA here"
fi

echo
echo "== gpucheck summary ($(cat "$LOG/gpu.log"), $(( $(date +%s) - START )) s) =="
printf '%s\n' "${results[@]}"
echo
echo "== benchmarks (time, achieved, ratio to the ceiling measured in the same run) =="
# sorted by benchmark (stable), so each op's llmq versions and PyTorch's rows sit together
cat "$LOG"/bench_*.log | grep '^SUMMARY|' | cut -d'|' -f2- | sort -s -t'|' -k1,1 | column -t -s'|'
exit $failed
