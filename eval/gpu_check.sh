#!/usr/bin/env bash
# GPU check for a lent one-GPU machine: one short script (about 5 minutes), installs nothing.
#
#   eval/gpu_check.sh [--dry-run] [--out DIR] [--n N] [--steps env,faiss,pytest,encode]
#
# Steps (each under its own `timeout`, each one's output also in DIR/<step>.log; a failing step is reported
# and the next one still runs; the exit status is the number of failed steps):
#   1. env      nvidia-smi, torch CUDA / bf16 support, faiss version and faiss.get_num_gpus()
#   2. faiss    1M x 384 clustered vectors: exact search on CPU vs GPU (Flat), and the automatic index
#               (auto_factory + tune to recall@10 0.95) searched on the CPU and on the GPU; QPS and recall
#               (skipped, not failed, when this faiss has no GPU support: install the `gpu` extra first)
#   3. pytest   the tests marked `gpu` (pytest -m gpu)
#   4. encode   item texts/s of the default encoder on the GPU, fp32 vs bf16 autocast, and the cosine
#               between the two (bf16 must not change the embeddings beyond ~1e-2)
# Then one table (DIR/summary.md) with a line per step.
#
# --dry-run prints the steps and the commands and checks that the Python of each step compiles, without running
# anything (tests/test_index_gpu_check.py runs it, and the faiss step on a CPU-only faiss, which skips).
set -uo pipefail

DRY=0
ONLY="env,faiss,pytest,encode"
OUT="runs/gpu_check"
N=1000000
PY="${PYTHON:-python}"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT="$2"; shift ;;
        --n) N="$2"; shift ;;
        --steps) ONLY="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --out DIR, --n N, --steps LIST)" >&2; exit 2 ;;
    esac
    shift
done
case "$N" in ''|*[!0-9]*) echo "gpu_check.sh: --n must be a positive integer, got '$N'" >&2; exit 2 ;; esac

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

read -r -d '' FAISS_PY <<'EOF'
import sys, tempfile, time
import faiss, numpy as np
from recsys_llm.config import IndexConfig
from recsys_llm.index.choose import index_from_config
from recsys_llm.index.faiss_index import FaissIndex, faiss_gpus
from recsys_llm.index.registry import load_index
from recsys_llm.index.tuning import recall_at_k, timed_search, tune
if faiss_gpus() == 0:
    print("SKIP: this faiss has no GPU support (faiss.get_num_gpus() == 0); pip install -e '.[gpu]'")
    sys.exit(0)
n, d, k = int(sys.argv[1]), 384, 10
rng = np.random.default_rng(0)
c = rng.standard_normal((10_000, d), dtype=np.float32)
def make(m):
    x = c[rng.integers(0, len(c), m)] + rng.standard_normal((m, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
x, q = make(n), make(1200)
ids = np.arange(n)
truth = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
rows = []
for dev in ("no", "yes"):
    flat = FaissIndex(d, "Flat", use_gpu=dev); flat.add(x, ids)
    found, qps = timed_search(flat, q[200:], k, repeats=3)
    rows.append((f"Flat ({'GPU' if dev == 'yes' else 'CPU'})", "-", recall_at_k(found, truth[200:]), qps, 0.0)); del flat
idx, reason = index_from_config(IndexConfig(use_gpu="no"), d, n)
t0 = time.perf_counter(); idx.add(x, ids); build = time.perf_counter() - t0
row = tune(idx, q[:200], truth[:200], k, 0.95)
with tempfile.TemporaryDirectory() as tmp:
    idx.save(tmp)  # the tuned nprobe travels in index.json; the GPU copy is the saved index loaded with use_gpu
    for dev, loaded in (("CPU", idx), ("GPU", load_index(tmp, use_gpu="yes"))):
        found, qps = timed_search(loaded, q[200:], k, repeats=3)
        rows.append((f"auto {idx.factory} ({dev})", row.setting, recall_at_k(found, truth[200:]), qps, build))
base = rows[0][3]
print(f"| index ({n:,} x {d}) | setting | recall@{k} | queries/s | x CPU exact | build (s) |")
print("|---|---|---|---|---|---|")
for name, setting, rec, qps, b in rows:
    print(f"| {name} | {setting} | {rec:.4f} | {qps:,.0f} | {qps / base:.1f}x | {b:.0f} |")
EOF

read -r -d '' ENCODE_PY <<'EOF'
import time
import numpy as np, torch
from recsys_llm.config import EncoderConfig
from recsys_llm.encoder.model import TwoTowerEncoder
assert torch.cuda.is_available(), "no CUDA device visible to torch"
texts = [f"Movie {i} ({1950 + i % 70}). Genres: Drama, Comedy. A story number {i} about people." for i in range(4096)]
out = {}
for precision in ("fp32", "bf16"):
    cfg = EncoderConfig(); cfg.inference_precision = precision
    enc = TwoTowerEncoder.from_config(cfg, lora=False, device="cuda")
    enc.encode_items(texts[:256], 64, batch_size=256, show_progress=False)  # warm-up
    torch.cuda.synchronize(); t0 = time.perf_counter()
    out[precision] = enc.encode_items(texts, 64, batch_size=256, show_progress=False)
    torch.cuda.synchronize(); dt = time.perf_counter() - t0
    print(f"| encode {precision} | {len(texts) / dt:,.0f} texts/s |")
    del enc; torch.cuda.empty_cache()
cos = (out["fp32"] * out["bf16"]).sum(1)
print(f"| cosine(fp32, bf16) | min {cos.min():.4f}, mean {cos.mean():.4f} |")
EOF

STEPS=()
IFS=',' read -r -a WANTED <<< "$ONLY"
for s in "${WANTED[@]}"; do
    case "$s" in
        env|faiss|pytest|encode) STEPS+=("$s") ;;
        *) echo "gpu_check.sh: unknown step '$s' in --steps (choose from env,faiss,pytest,encode)" >&2; exit 2 ;;
    esac
done
declare -A LIMIT=([env]=20 [faiss]=180 [pytest]=60 [encode]=40)
declare -A CMD=(
    [env]="nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c 'import torch, faiss; print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(), \"bf16\", torch.cuda.is_available() and torch.cuda.is_bf16_supported()); print(\"faiss\", faiss.__version__, \"gpus\", faiss.get_num_gpus() if hasattr(faiss, \"get_num_gpus\") else 0)'"
    [faiss]="$PY -c \"\$FAISS_PY\" $N"
    [pytest]="$PY -m pytest -m gpu -q -p no:cacheprovider tests/"
    [encode]="$PY -c \"\$ENCODE_PY\""
)

if [ "$DRY" = 1 ]; then
    echo "gpu_check.sh --dry-run: would run ${#STEPS[@]} steps, logs and summary in $OUT/"
    for s in "${STEPS[@]}"; do
        echo "step $s (timeout ${LIMIT[$s]} s): ${CMD[$s]}"
    done
    total=0
    for s in "${STEPS[@]}"; do total=$(( total + ${LIMIT[$s]} )); done
    echo "total time limit: $total s"
    export FAISS_PY ENCODE_PY
    $PY -c 'import os; [compile(os.environ[v], v, "exec") for v in ("FAISS_PY", "ENCODE_PY")]' || exit 1
    echo "step scripts compile"
    exit 0
fi

mkdir -p "$OUT"
export FAISS_PY ENCODE_PY
FAILED=0
{ echo "| step | status | seconds | log |"; echo "|---|---|---|---|"; } > "$OUT/summary.md"
for s in "${STEPS[@]}"; do
    echo "== $s (timeout ${LIMIT[$s]} s)"
    t0=$(date +%s)
    timeout "${LIMIT[$s]}" bash -c "${CMD[$s]}" 2>&1 | tee "$OUT/$s.log"
    rc=${PIPESTATUS[0]}
    dt=$(( $(date +%s) - t0 ))
    if [ "$rc" = 0 ]; then status=ok; elif [ "$rc" = 124 ]; then status="timed out"; else status="failed ($rc)"; fi
    grep -q '^SKIP:' "$OUT/$s.log" && status=skipped
    [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
    echo "| $s | $status | $dt | $OUT/$s.log |" >> "$OUT/summary.md"
done
echo
echo "== summary"
cat "$OUT/summary.md"
grep -h '^|' "$OUT/faiss.log" "$OUT/encode.log" 2>/dev/null
exit "$FAILED"
