#!/usr/bin/env bash
# bench_wtacrs: WTA-CRS against exact gradients on the demo setup (make run's shards).
#   For full, WTA-CRS 0.3 and 0.1, LoRA, and LoRA + WTA-CRS 0.3 (all on --wtacrs-layers all), each also with
#   --recompute mlp (gate/up recomputed in the backward; the same math, so the same losses as without): activation
#   memory (mem_activations, what the plan holds plus the kept rows) and its ratio to full's, the kept rows alone,
#   median tokens/s, and the val loss after the same budget of steps; then the largest batch whose activations fit
#   under CAP_MB (activation bytes are affine in the batch: measured at batch 1 and 2, extrapolated).
# Usage: dev/bench_wtacrs.sh [STEPS=200] [CAP_MB=64] [MODEL=tiny]   (run from the repository root after `make`)
#   MODEL 60m with STEPS 2 measures the memory of the paper's smallest shape (the val loss then means nothing);
#   EXTRA="flags" adds ./train flags to every run (e.g. EXTRA="--val-batches 1" there).
set -euo pipefail
STEPS=${1:-200}
CAP_MB=${2:-64}
MODEL=${3:-tiny}
source "$(dirname "$0")/demo_runs.sh" bench_wtacrs  # DATA, OUT, DEMO_FLAGS, last, median
COMMON="--model $MODEL $DEMO_FLAGS --eval-every 0 ${EXTRA:-}"
declare -A FLAGS=(
  [full]="--method full"
  [wtacrs0.3]="--method full --wtacrs 0.3 --wtacrs-layers all"
  [wtacrs0.1]="--method full --wtacrs 0.1 --wtacrs-layers all"
  [lora]="--method lora --rank 16 --lr 3e-3"
  [lora+wtacrs0.3]="--method lora --rank 16 --lr 3e-3 --wtacrs 0.3 --wtacrs-layers all"
)
for m in full wtacrs0.3 wtacrs0.1 lora lora+wtacrs0.3; do FLAGS[$m+rc]="${FLAGS[$m]} --recompute mlp"; done
ORDER="full full+rc wtacrs0.3 wtacrs0.3+rc wtacrs0.1 wtacrs0.1+rc lora lora+rc lora+wtacrs0.3 lora+wtacrs0.3+rc"
act_at_batch() {  # activation bytes of a 2-step run at batch $2
  ./train $COMMON ${FLAGS[$1]} --steps 2 --batch "$2" --val-batches 0 --out "$OUT/$1_b$2" >/dev/null 2>&1
  last "$OUT/$1_b$2/metrics.jsonl" mem_activations
}
echo "model $MODEL, $STEPS steps; rc = --recompute mlp"
printf "%-19s %10s %8s %10s %9s %9s %14s\n" method act_MB x_full kept_MB tok/s val_loss "max_batch@${CAP_MB}MB"
for m in $ORDER; do
  ./train $COMMON ${FLAGS[$m]} --steps "$STEPS" --out "$OUT/$m" >"$OUT/$m.log" 2>&1
  f="$OUT/$m/metrics.jsonl"
  act=$(last "$f" mem_activations)
  [ "$m" = full ] && full_act=$act
  a1=$(act_at_batch "$m" 1); a2=$(act_at_batch "$m" 2)
  maxb=$(awk -v a1="$a1" -v a2="$a2" -v cap="$CAP_MB" 'BEGIN { s = a2 - a1; printf "%d", (cap * 1e6 - (a1 - s)) / s }')
  printf "%-19s %10.2f %8.2f %10.2f %9.0f %9.4f %14s\n" "$m" "$(awk -v x="$act" 'BEGIN{print x/1e6}')" \
    "$(awk -v a="$full_act" -v x="$act" 'BEGIN{print a/x}')" "$(awk -v x="$(last "$f" wtacrs_kept_bytes)" 'BEGIN{print x/1e6}')" \
    "$(median "$f" tokens_per_s)" "$(last "$f" val_loss)" "$maxb"
done
echo "(runs under $OUT; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
