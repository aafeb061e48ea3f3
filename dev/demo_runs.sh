# demo_runs.sh: sourced by the dev/ scripts that run ./train on the demo setup (compare_methods.sh,
# bench_wtacrs.sh): the shards `make run` writes, a scratch directory per script, and readers of metrics.jsonl.
# Usage (after set -euo pipefail): source "$(dirname "$0")/demo_runs.sh" NAME   -> DATA, OUT=/tmp/NAME.XXXXXX, DEMO_FLAGS
DATA=data/shards
[ -f $DATA/vocab4096.json ] || { echo "no $DATA: run 'make run' once (it tokenizes the bundled corpus)"; exit 1; }
OUT=$(mktemp -d "/tmp/$1.XXXXXX")
# ./train's flags every demo run shares: the shards and vocabulary, no samples, quiet log, no periodic checkpoints
DEMO_FLAGS="--data $DATA --vocab $DATA/vocab4096.json --sample-tokens 0 --log-every 1000 --ckpt-every 0"
# the last value of a key in a metrics.jsonl ($1), the median of another
last() { grep "\"$2\"" "$1" | tail -1 | sed -E "s/.*\"$2\": ?([-0-9.e+]+).*/\1/"; }
median() { grep "\"$2\"" "$1" | sed -E "s/.*\"$2\": ?([-0-9.e+]+).*/\1/" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
