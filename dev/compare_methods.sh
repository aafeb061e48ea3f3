#!/usr/bin/env bash
# compare_methods: issue #6's two comparison tables on the demo setup (make run's shards, one model preset).
#
#   1. pretraining from scratch with every --method at one rank (the papers' rank is dim/4 at 60m: 128 of 512;
#      the same ratio here) and one learning rate; LoRA, ReLoRA and SwitchLoRA train the embeddings, norms and
#      lm_head too (--train-rest 1, as the papers' pretraining runs do): val loss and perplexity after STEPS steps, memory by component
#      (weights, gradients, optimizer state, activations: the metrics' last values), median tokens/s;
#   2. fine-tuning the full run's checkpoint (exported with ./convert llmq-to-hf, loaded with --init-from) with
#      QLoRA on an INT4/3/2 base with the plain (B = 0), LoftQ and CLoQ initialisations, beside LoRA on the fp32
#      base: the mean calibrated output error of each layer at the start, and the val loss after FT_STEPS steps.
#
# Usage: dev/compare_methods.sh [STEPS=300] [FT_STEPS=100] [MODEL=tiny]   (from the repository root, after `make`)
# One seed, one learning rate per table: a comparison at a fixed budget on a small corpus, not a tuned benchmark.
set -euo pipefail
STEPS=${1:-300}
FT_STEPS=${2:-100}
MODEL=${3:-tiny}
source "$(dirname "$0")/demo_runs.sh" compare_methods  # DATA, OUT, DEMO_FLAGS, last, median
COMMON="--model $MODEL $DEMO_FLAGS"
DIM=$(./train $COMMON --steps 1 --val-batches 0 --out "$OUT/probe" 2>&1 | sed -nE 's/^model: .*dim ([0-9]+).*/\1/p' | head -1)
RANK=$((DIM / 4))
mb() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1e6 }'; }

echo "## 1. pretraining $MODEL from scratch, $STEPS steps, rank $RANK (dim $DIM / 4), lr 5e-3"
declare -A FLAGS=(
  [full]="--method full"
  [galore]="--method galore --rank $RANK --galore-every $((STEPS / 6 > 0 ? STEPS / 6 : 1))"
  [loqt]="--method loqt --rank $RANK --loqt-tau $((STEPS / 10 > 0 ? STEPS / 10 : 1))"
  [loqt-nq]="--method loqt-nq --rank $RANK --loqt-tau $((STEPS / 10 > 0 ? STEPS / 10 : 1))"
  [lora]="--method lora --rank $RANK --train-rest 1"
  [relora]="--method relora --rank $RANK --train-rest 1 --relora-every $((STEPS / 4 > 0 ? STEPS / 4 : 1))"
  [switchlora]="--method switchlora --rank $RANK --train-rest 1"
)
ORDER="full galore loqt loqt-nq lora relora switchlora"
printf "| %-10s | %8s | %9s | %10s | %8s | %10s | %11s | %6s |\n" method val_loss val_ppl weights_MB grads_MB optim_MB activ_MB tok/s
printf "| %-10s | %8s | %9s | %10s | %8s | %10s | %11s | %6s |\n" --- --- --- --- --- --- --- ---
for m in $ORDER; do
  ./train $COMMON ${FLAGS[$m]} --steps "$STEPS" --eval-every 0 --out "$OUT/$m" >"$OUT/$m.log" 2>&1 ||
    { echo "| $m | failed: see $OUT/$m.log |"; continue; }
  f="$OUT/$m/metrics.jsonl"
  v=$(last "$f" val_loss)
  printf "| %-10s | %8.4f | %9.2f | %10s | %8s | %10s | %11s | %6.0f |\n" "$m" "$v" "$(awk -v v="$v" 'BEGIN{print exp(v)}')" \
    "$(mb "$(last "$f" mem_weights)")" "$(mb "$(last "$f" mem_grads)")" "$(mb "$(last "$f" mem_optimizer)")" \
    "$(mb "$(last "$f" mem_activations)")" "$(median "$f" tokens_per_s)"
done

echo
echo "## 2. fine-tuning the full run's checkpoint: $FT_STEPS steps, rank 16, lr 1e-3, groups of 32, 8192 calibration tokens"
HF="$OUT/pretrained_hf"
./convert llmq-to-hf "$OUT/full/latest.ckpt" "$HF" >/dev/null
FT="--data $DATA --vocab $DATA/vocab4096.json --sample-tokens 0 --log-every 1000 --ckpt-every 0 --eval-every 0 \
    --init-from $HF --rank 16 --lr 1e-3 --warmup 10 --steps $FT_STEPS"
printf "| %-6s | %-6s | %14s | %8s |\n" base init calibrated_err val_loss
printf "| %-6s | %-6s | %14s | %8s |\n" --- --- --- ---
./train $FT --method lora --out "$OUT/ft_fp32" >"$OUT/ft_fp32.log" 2>&1
printf "| %-6s | %-6s | %14s | %8.4f |\n" fp32 lora 0 "$(last "$OUT/ft_fp32/metrics.jsonl" val_loss)"
for bits in 4 3 2; do
  for init in cloq loftq plain; do
    ./train $FT --method qlora --weights "int$bits" --quant-block 32 --init "$init" --calib-tokens 8192 \
      --out "$OUT/int${bits}_$init" >"$OUT/int${bits}_$init.log" 2>&1 || echo "int$bits $init failed: see $OUT/int${bits}_$init.log"
  done
  # each init's calibrated error at the start, averaged over the layers: plain's is column 1 of the CLoQ run's
  # per-layer lines (it computes plain's always), LoftQ's column 2 of its own, CLoQ's column 3 of its own
  layer_mean() {
    grep -E "calibrated [-0-9.]+ / " "$1" | sed -E 's/.*calibrated ([-0-9.]+) \/ ([-0-9.]+) \/ ([-0-9.]+).*/\1 \2 \3/' |
      awk -v c="$2" '{ s += $c; n++ } END { if (n) printf "%.4f", s / n; else printf "-" }'
  }
  for init in plain loftq cloq; do
    case $init in plain) err=$(layer_mean "$OUT/int${bits}_cloq.log" 1) ;; loftq) err=$(layer_mean "$OUT/int${bits}_loftq.log" 2) ;;
                  cloq) err=$(layer_mean "$OUT/int${bits}_cloq.log" 3) ;; esac
    printf "| %-6s | %-6s | %14s | %8.4f |\n" "int$bits" "$init" "$err" "$(last "$OUT/int${bits}_$init/metrics.jsonl" val_loss)"
  done
done
echo "(runs under $OUT; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
