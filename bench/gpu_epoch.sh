#!/usr/bin/env bash
# One training epoch of the `paper` preset (batch 64) on a synthetic corpus on one CUDA GPU, then
# the dev evaluation, plus the side-by-side benchmarks; prints the card's name. Prepared for a GPU
# machine (none was lent when it was written, so its figures are not in docs/benchmarks.md yet).
# Run from anywhere:
#
#   bash bench/gpu_epoch.sh [CORPUS_DIR] [OUT_DIR]               # MIND-small's shape
#   SCALE=large bash bench/gpu_epoch.sh /tmp/nram-large [OUT_DIR]  # MIND-large's shape
#
# Every step prints one JSON line, also saved under OUT_DIR. MIND-small scale: about 6-8 minutes on
# an H100 (~40 s to generate the corpus, ~1 min to prepare it, the epoch, the benchmarks). MIND-large
# scale (73k steps of 64, 376k dev impressions): generating and preparing take several minutes on
# their own (docs/benchmarks.md, "MIND-large scale"); the epoch's train and dev-evaluation seconds
# come from the run's metrics.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-small}
DATA=${1:-/tmp/nram-$SCALE}
OUT=${2:-/tmp/nram-gpu-epoch-$SCALE}
WORKERS=${WORKERS:-4}
export NRAM_HOME=${NRAM_HOME:-$OUT/home}
mkdir -p "$OUT"

python - <<'PY' | tee "$OUT/card.json"
import json, os, torch
assert torch.cuda.is_available(), "no CUDA device visible"
print(json.dumps({"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cpus": os.cpu_count()}))
PY

[ -f "$DATA/truth.json" ] || python -m nram_core demo-data "$DATA" --scale "$SCALE" >/dev/null
python -m bench.prepare --data "$DATA" --preset paper | tee "$OUT/prepare.json"

# The epoch itself: the CLI, timed with its peak RSS; metrics.jsonl has seconds and eval_seconds.
rm -rf "$OUT/run"
python -m bench.rss -- python -m nram_core train --data "$DATA" --preset paper --batch-size 64 --epochs 1 \
    --num-workers "$WORKERS" --device cuda --out "$OUT/run" --no-progress | tee "$OUT/epoch_rss.json"
python - "$OUT/run/metrics.jsonl" "$OUT/card.json" <<'PY' | tee "$OUT/epoch.json"
import json, sys
epoch = json.loads(open(sys.argv[1]).readline())
card = json.load(open(sys.argv[2]))["card"]
train_s = epoch["seconds"] - epoch["eval_seconds"]
print(json.dumps({"card": card, "preset": "paper", "batch_size": 64, "steps": epoch["steps"],
                  "train_seconds": round(train_s, 1), "eval_seconds": round(epoch["eval_seconds"], 1),
                  "samples_per_s": round(epoch["steps"] * 64 / train_s, 1), "train_loss": epoch["train_loss"],
                  "dev": {k: epoch["metrics"][k] for k in ("auc", "mrr", "ndcg@5", "ndcg@10", "impressions")}}))
PY

# Side by side with the reference paths, on the same card.
python -m bench.train --data "$DATA" --preset paper --device cuda --steps 200 --warmup 20 --rounds 2 \
    --workers "$WORKERS" | tee "$OUT/train.json"
python -m bench.train --data "$DATA" --preset paper --device cuda --steps 200 --warmup 30 --rounds 2 \
    --workers "$WORKERS" --compile --no-baseline | tee "$OUT/train_compile.json"
python -m bench.evaluate --data "$DATA" --preset paper --device cuda --baseline-impressions 5000 \
    | tee "$OUT/evaluate.json"
python -m bench.recommend --data "$DATA" --preset paper --device cuda --catalog 50000 \
    --baseline-catalog-requests 5 | tee "$OUT/recommend.json"
