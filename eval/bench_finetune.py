"""Fine-tuning throughput benchmark: our two-tower loop vs sentence-transformers' trainer, same LoRA.

Both run in this one process, one after the other, on the same (user history text, next item text) training
pairs of the bundled ml-latest-small data, the same backbone, the same LoRA config (r, alpha, dropout and
target modules from ``recsys_llm.encoder.backbone.ARCHITECTURES``), the same batches in the same order, the
same optimizer (torch AdamW), learning rate, linear warm-up/decay schedule, seed and temperature
(ours: ``TrainConfig(temperature=0.05, logq_correction=False)``; theirs: ``MultipleNegativesRankingLoss``
with ``scale = 1 / 0.05 = 20``). Then both trained models are evaluated on validation NDCG@10 (full
ranking over every catalog item, each user's training items filtered). Last, our loop is run again with
full fine-tuning (no LoRA) to compare peak memory.

Usage:
    HF_HUB_OFFLINE=1 python eval/bench_finetune.py                    # defaults: 30 steps, batch 32, 200 users
    HF_HUB_OFFLINE=1 python eval/bench_finetune.py --device cuda --steps 100 --batch-size 64

Needs ``sentence-transformers[train]>=3`` (a benchmark-only dependency, not in pyproject.toml):
    python -m pip install "sentence-transformers[train]>=3"

Measured:
    * step time: wall time between consecutive optimizer steps (a global torch optimizer step hook, so data
      loading, tokenization, forward, backward and the update are all inside), after ``--warmup`` untimed
      steps; samples/s = batch size / mean step time. CUDA is synchronised at each step.
    * peak memory during the training call (trainer construction included for theirs, accelerator setup for
      ours): on CUDA ``torch.cuda.max_memory_allocated``; always the process RSS, sampled every 10 ms by a
      thread (psutil), as the peak above the RSS just before training and as the absolute peak. Without psutil
      ``ru_maxrss`` is used: it is a lifetime maximum, so only the first run's number is meaningful.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.metadata as md
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import AutoConfig

from recsys_llm.config import EncoderConfig, PipelineConfig, TrainConfig
from recsys_llm.data.io import load_dataset
from recsys_llm.data.splits import histories, make_split, targets
from recsys_llm.device import resolve_device
from recsys_llm.encoder.backbone import architecture_spec, load_tokenizer, resolve_backbone_path
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.ranking import full_ranking_metrics
from recsys_llm.report.stats import paired_bootstrap
from recsys_llm.text.templates import history_text, item_texts
from recsys_llm.train.pairs import build_pairs
from recsys_llm.train.two_tower import train_two_tower

# ------------------------------------------------------------------------------------------ 0. arguments
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
parser.add_argument("--backbone", default="minilm", help="'minilm' (bundled all-MiniLM-L6-v2) or a local folder")
parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run (warm-up steps included)")
parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
parser.add_argument("--batch-size", type=int, default=32, help="pairs per step (in-batch negatives)")
parser.add_argument("--users", type=int, default=200, help="validation users for NDCG@10 (seeded sample)")
parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (both LoRA runs)")
parser.add_argument("--lr-warmup-steps", type=int, default=10, help="linear LR warm-up steps (both)")
parser.add_argument("--temperature", type=float, default=0.05, help="ours: temperature; theirs: scale=1/T")
parser.add_argument("--seed", type=int, default=0, help="seed of the batches, LoRA init and dropout")
parser.add_argument("--st-optim", default="adamw_torch",
                    help="HF optimizer name for theirs; adamw_torch = torch.optim.AdamW like ours "
                         "(the HF default on torch>=2.8 is adamw_torch_fused)")
parser.add_argument("--st-max-grad-norm", type=float, default=0.0,
                    help="theirs: gradient clipping (HF default 1.0); 0 = off, like ours")
parser.add_argument("--full-steps", type=int, default=10,
                    help="steps of the full fine-tuning run (memory; 0 skips it)")
parser.add_argument("--full-lr", type=float, default=5e-5, help="learning rate of the full fine-tuning run")
parser.add_argument("--eval-full", action="store_true", help="also evaluate the fully fine-tuned model")
parser.add_argument("--order", choices=("ours-first", "theirs-first"), default="ours-first",
                    help="which LoRA run goes first (the second may reuse memory freed by the first)")
parser.add_argument("--json", help="also write every number to this JSON file")
args = parser.parse_args()
if args.steps <= args.warmup:
    parser.error("--steps must exceed --warmup")

try:
    import datasets  # the trainer needs it (the [train] extra)
    import sentence_transformers
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    try:  # v6 layout, then v3-v5
        from sentence_transformers import DefaultBatchSampler
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.sampler import DefaultBatchSampler
except ImportError as e:
    sys.exit(f"bench_finetune.py needs sentence-transformers with its training extras ({e}).\n"
             "It is a benchmark-only dependency, not in pyproject.toml; install it with:\n"
             '    python -m pip install "sentence-transformers[train]>=3"')
try:
    import psutil
except ImportError:
    psutil = None

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
device = resolve_device(args.device)
cuda = device.type == "cuda"
torch.manual_seed(args.seed)
print(f"device {device}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
      f"memory sampler: {'psutil RSS thread' if psutil else 'ru_maxrss (coarse: lifetime max)'}")

# ------------------------------------------------------------ 1. data: split, training pairs, texts (library)
cfg = PipelineConfig()  # the pipeline defaults: ml-latest-small, leave-last-out, 5% cold items
ds = load_dataset(cfg.data)
split = make_split(ds, cfg.split)
titles = ds.items["title"].astype(str).tolist()
items_txt = item_texts(ds.items, cfg.text.item_template)
train_hist = histories(split.train, split.n_users)
pairs = build_pairs(train_hist, titles, cfg.text.user_max_items, cfg.train.min_history, cfg.train.pairs_per_user)
print(f"{ds.n_users} users, {ds.n_items} items, {len(pairs)} training pairs")

# Validation: the user's training history as text, the validation item as target, training items filtered.
valid_targets = targets(split.valid, split.n_users)
val_users = np.array([u for u in range(split.n_users) if len(valid_targets[u]) and len(train_hist[u])])
if args.users and len(val_users) > args.users:
    val_users = np.sort(np.random.default_rng(args.seed).choice(val_users, args.users, replace=False))
val_texts = [history_text(train_hist[u], titles, cfg.text.user_max_items) for u in val_users]
val_seen = [train_hist[u] for u in val_users]
val_true = [valid_targets[u] for u in val_users]

# ----------------------------------------- 2. the shared batch sequence: exactly what train_two_tower draws
# train_two_tower draws batch b from PairBatchSampler(seed, b) (no repeated item inside a batch by default);
# the same draw here gives sentence-transformers the same batches, in order (sequential sampler).
from recsys_llm.train.sampler import PairBatchSampler  # noqa: E402

_batches = PairBatchSampler(pairs.pos_items, pairs.users, args.batch_size, args.seed, "pairs", True)
seq = [int(i) for b in range(args.steps) for i in _batches.batch(b)]
seq_user = [pairs.user_texts[i] for i in seq]
seq_item = [items_txt[int(pairs.pos_items[i])] for i in seq]
seq_ids = pairs.pos_items[seq].reshape(args.steps, args.batch_size)
dup_batches = int(sum(len(np.unique(b)) < len(b) for b in seq_ids))

# ------------------------------------------------------------------ 3. the shared model and LoRA settings
backbone_path = resolve_backbone_path(args.backbone)
model_type = AutoConfig.from_pretrained(backbone_path).model_type
targets_modules = list(architecture_spec(model_type).lora_target_modules)
enc_cfg = EncoderConfig(backbone=args.backbone, target_modules=targets_modules)  # r=16, alpha=32, dropout 0.05
lora_kw = dict(r=enc_cfg.lora_r, lora_alpha=enc_cfg.lora_alpha, lora_dropout=enc_cfg.lora_dropout)
tok = load_tokenizer(args.backbone)
user_len = np.array([len(x) for x in tok(seq_user, truncation=False)["input_ids"]])
item_len = np.array([len(x) for x in tok(seq_item, truncation=False)["input_ids"]])
U_TOK, I_TOK, ST_TOK = cfg.text.user_max_tokens, cfg.text.item_max_tokens, cfg.text.user_max_tokens
print(f"LoRA r={lora_kw['r']} alpha={lora_kw['lora_alpha']} dropout={lora_kw['lora_dropout']} "
      f"targets={targets_modules} ({model_type}); tokens: user {U_TOK}, item {I_TOK} (ours), {ST_TOK} (theirs)")


# ---------------------------------------------------------------------- 4. measuring: step clock, memory
def _trim() -> None:
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the next RSS baseline is honest


def _rss() -> int:
    if psutil:
        return psutil.Process().memory_info().rss
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@contextlib.contextmanager
def measured(out: dict):
    """Optimizer-step timestamps and peak memory of everything inside the block."""
    stamps: list[float] = []

    def on_step(*_):
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    _trim()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        gpu0 = torch.cuda.memory_allocated()
    rss0 = _rss()
    peak = [rss0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.01):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    if psutil:
        sampler.start()
    handle = register_optimizer_step_post_hook(on_step)
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        wall = time.perf_counter() - t0
        handle.remove()
        stop.set()
        if psutil:
            sampler.join()
    peak[0] = max(peak[0], _rss())
    timed = np.diff(stamps[args.warmup - 1:]) if args.warmup else np.diff([t0, *stamps])
    if len(timed) == 0:
        raise RuntimeError(f"only {len(stamps)} optimizer steps seen; need more than --warmup={args.warmup}")
    out.update(steps=len(stamps), timed_steps=len(timed), wall_s=wall,
               step_s=float(timed.mean()), step_median_s=float(np.median(timed)),
               samples_per_s=out["batch_size"] / float(timed.mean()),
               rss_peak_mib=peak[0] / 2**20, rss_delta_mib=(peak[0] - rss0) / 2**20)
    if cuda:
        out.update(gpu_peak_mib=torch.cuda.max_memory_allocated() / 2**20,
                   gpu_delta_mib=(torch.cuda.max_memory_allocated() - gpu0) / 2**20)


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_checksum(model: torch.nn.Module) -> float:
    """Sum of every lora_A weight: equal checksums = the same LoRA initialisation."""
    return float(sum(p.detach().double().sum() for n, p in model.named_parameters() if "lora_A" in n))


def ndcg10(user_emb: np.ndarray, item_emb: np.ndarray) -> np.ndarray:
    """Per-user NDCG@10, full ranking over every catalog item, each user's training items filtered."""
    return full_ranking_metrics(user_emb @ item_emb.T, val_true, 10, seen=val_seen, metrics=("ndcg",))["ndcg@10"]


def reset_accelerate() -> None:
    # Each trainer builds its own Accelerator; clear accelerate's process-wide singleton between them
    # (train_two_tower does the same for itself).
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


results: dict[str, dict] = {}
per_user: dict[str, np.ndarray] = {}


# ---------------------------------------------------------------------- 5. ours: train_two_tower + LoRA
def run_ours(name: str, lora: bool, steps: int, lr: float, evaluate: bool) -> None:
    encoder = TwoTowerEncoder.from_config(enc_cfg, lora=lora, device=str(device), seed=args.seed)
    train_cfg = TrainConfig(batch_size=args.batch_size, max_steps=steps, lr=lr, warmup_steps=args.lr_warmup_steps,
                            temperature=args.temperature, logq_correction=False, seed=args.seed,
                            device=str(device), log_every=10)
    first: list[list[str]] = []
    tokenize = encoder.tokenize

    def recording_tokenize(texts, max_tokens):  # remember the first user batch, to check the shared sequence
        if not first:
            first.append(list(texts))
        return tokenize(texts, max_tokens)

    encoder.tokenize = recording_tokenize
    out = {"batch_size": args.batch_size, "trainable": trainable(encoder), "lora_checksum": lora_checksum(encoder)}
    with measured(out):
        res = train_two_tower(encoder, pairs, items_txt, cfg.text, train_cfg)
    encoder.tokenize = tokenize
    out["final_loss"] = res.log[-1]["loss"]
    out["same_first_batch"] = first[0] == seq_user[: args.batch_size]
    if evaluate:
        t0 = time.perf_counter()
        item_emb = encoder.encode_items(items_txt, I_TOK, show_progress=False)
        user_emb = encoder.encode_users(val_texts, U_TOK, show_progress=False)
        per_user[name] = ndcg10(user_emb, item_emb)
        out.update(ndcg10=float(np.nanmean(per_user[name])), eval_s=time.perf_counter() - t0)
    results[name] = out
    print(f"{name}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()})}")
    del encoder, res
    _trim()


# ------------------------------------------------- 6. theirs: SentenceTransformerTrainer + MNRL + same LoRA
def run_theirs(name: str) -> None:
    from peft import LoraConfig, TaskType

    model = SentenceTransformer(backbone_path, device=str(device))
    model.max_seq_length = ST_TOK  # one budget for both columns (ours: user 64, item 48)
    torch.manual_seed(args.seed)  # same LoRA init as TwoTowerEncoder.from_config(seed=...)
    model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, target_modules=targets_modules,
                                 bias="none", **lora_kw))
    out = {"batch_size": args.batch_size, "trainable": trainable(model), "lora_checksum": lora_checksum(model)}
    train_ds = datasets.Dataset.from_dict({"anchor": seq_user, "positive": seq_item})

    def sequential(dataset, batch_size, drop_last, **_):  # the shared batch sequence, in order
        return DefaultBatchSampler(torch.utils.data.SequentialSampler(dataset), batch_size=batch_size,
                                   drop_last=drop_last)

    with tempfile.TemporaryDirectory() as tmp:
        reset_accelerate()
        targs = SentenceTransformerTrainingArguments(
            output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_steps=args.lr_warmup_steps, lr_scheduler_type="linear",
            weight_decay=0.0, optim=args.st_optim, max_grad_norm=args.st_max_grad_norm, seed=args.seed,
            batch_sampler=sequential, dataloader_drop_last=True, use_cpu=not cuda,
            logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none")
        loss = MultipleNegativesRankingLoss(model, scale=1.0 / args.temperature)
        with measured(out):
            trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train_ds, loss=loss)
            trainer.train()
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        out["final_loss"] = float(losses[-1]) if losses else float("nan")
    model.eval()
    t0 = time.perf_counter()
    enc = dict(batch_size=128, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    item_emb = model.encode(items_txt, **enc)
    user_emb = model.encode(val_texts, **enc)
    per_user[name] = ndcg10(user_emb, item_emb)
    out.update(ndcg10=float(np.nanmean(per_user[name])), eval_s=time.perf_counter() - t0)
    results[name] = out
    print(f"{name}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()})}")
    del model, trainer, loss
    _trim()


# ------------------------------------------------------------------------------------ 7. run everything
runs = [lambda: run_ours("ours", True, args.steps, args.lr, True), lambda: run_theirs("theirs")]
for run in runs if args.order == "ours-first" else runs[::-1]:
    run()
if args.full_steps:
    if args.full_steps <= args.warmup:
        sys.exit("--full-steps must exceed --warmup (or be 0)")
    run_ours("ours-full", False, args.full_steps, args.full_lr, args.eval_full)

# ------------------------------------------------------------------------------------------- 8. tables
o, t = results["ours"], results["theirs"]
mem = "gpu" if cuda else "rss"


def row(label: str, key: str, fmt: str, ratio: bool = True) -> str:
    a, b = o.get(key), t.get(key)
    r = f"{a / b:.2f}x" if ratio and a is not None and b else ""
    return f"| {label} | {format(a, fmt)} | {format(b, fmt)} | {r} |"


diff = paired_bootstrap(per_user["ours"], per_user["theirs"], n_boot=1000, seed=args.seed)
stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [
    f"Fine-tuning benchmark, {stamp}: {device}"
    + (f" ({torch.cuda.get_device_name()})" if cuda else f", {torch.get_num_threads()} torch threads")
    + f"; {args.backbone}, batch {args.batch_size}, {args.steps} steps ({args.steps - args.warmup} timed), "
      f"lr {args.lr}, {len(val_users)} validation users",
    f"torch {torch.__version__}, transformers {md.version('transformers')}, peft {md.version('peft')}, "
    f"sentence-transformers {sentence_transformers.__version__}, python {platform.python_version()}",
    "",
    "| LoRA fine-tuning | ours (train_two_tower) | sentence-transformers (MNRL) | ours/theirs |",
    "|---|---|---|---|",
    row("throughput (samples/s)", "samples_per_s", ".1f"),
    row("step time, mean (s)", "step_s", ".3f"),
    row("step time, median (s)", "step_median_s", ".3f"),
    row(f"peak {'GPU allocated' if cuda else 'RSS'} above pre-training (MiB)", f"{mem}_delta_mib", ".0f"),
    row(f"peak {'GPU allocated' if cuda else 'RSS'}, absolute (MiB)", f"{mem}_peak_mib", ".0f"),
    row("training call wall time incl. setup (s)", "wall_s", ".1f"),
    row("trainable parameters", "trainable", ","),
    row("loss, last logged window", "final_loss", ".4f", ratio=False),
    row("validation NDCG@10", "ndcg10", ".4f"),
    f"| NDCG@10 difference ours - theirs (95% paired bootstrap) | {diff.diff:+.4f} "
    f"[{diff.low:+.4f}, {diff.high:+.4f}] | p = {diff.p_value:.2f} | |",
]
if "ours-full" in results:
    f = results["ours-full"]
    lines += [
        "",
        "| our loop | LoRA | full fine-tuning | full/LoRA |",
        "|---|---|---|---|",
        f"| trainable parameters | {o['trainable']:,} | {f['trainable']:,} | {f['trainable'] / o['trainable']:.0f}x |",
    ]
    for label, key, fmt in [(f"peak {'GPU allocated' if cuda else 'RSS'} above pre-training (MiB)",
                             f"{mem}_delta_mib", ".0f"),
                            (f"peak {'GPU allocated' if cuda else 'RSS'}, absolute (MiB)", f"{mem}_peak_mib", ".0f"),
                            ("throughput (samples/s)", "samples_per_s", ".1f")]:
        lines.append(f"| {label} | {format(o[key], fmt)} | {format(f[key], fmt)} | {f[key] / o[key]:.2f}x |")
    lines.append(f"| steps (timed) | {o['steps']} ({o['timed_steps']}) | {f['steps']} ({f['timed_steps']}) | |")
    if "ndcg10" in f:
        lines.append(f"| validation NDCG@10 | {o['ndcg10']:.4f} | {f['ndcg10']:.4f} | |")
ratio = o["samples_per_s"] / t["samples_per_s"]
equal = diff.low <= 0.0 <= diff.high
lines += [
    "",
    f"Goal (throughput >= 1.0x theirs at equal validation NDCG@10): throughput {ratio:.2f}x -> "
    f"{'met' if ratio >= 1.0 else 'NOT met'}; NDCG@10 {'statistically indistinguishable' if equal else 'differs'} "
    f"(95% interval of the difference {'contains' if equal else 'excludes'} 0, {len(val_users)} users).",
    f"Same first batch in both runs: {o['same_first_batch']}; LoRA init checksum ours {o['lora_checksum']:.6f}, "
    f"theirs {t['lora_checksum']:.6f}. Batches with a repeated positive item: {dup_batches}/{args.steps} "
    "(ours masks those duplicates out of the softmax, MNRL counts them as negatives).",
    f"Token budgets: ours user {U_TOK} / item {I_TOK}, theirs {ST_TOK} for both; "
    f"{np.mean(item_len > I_TOK):.1%} of the sampled item texts exceed {I_TOK} tokens (mean {item_len.mean():.0f}), "
    f"{np.mean(user_len > U_TOK):.1%} of the user texts exceed {U_TOK} (both truncate those to {U_TOK}).",
    f"Run order: {args.order}; the second run may reuse memory the first freed (malloc_trim between runs).",
]
print("\n" + "\n".join(lines))
if args.json:
    with open(args.json, "w") as fh:
        json.dump({"args": vars(args), "results": results, "ndcg_diff": diff.to_dict(), "table": lines}, fh,
                  indent=2, default=str)
