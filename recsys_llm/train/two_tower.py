"""The two-tower training loop on accelerate: LoRA on a shared backbone, in-batch InfoNCE.

The same code runs on CPU, one GPU, or several via ``accelerate launch`` (each process draws
``batch_size`` pairs per step; the ``max_steps * batch_size`` sampled pairs are split across processes).
Only ``accelerate.Accelerator`` knows about devices.

Example:
    >>> pairs = build_pairs(histories, titles, max_items=20)  # doctest: +SKIP
    >>> encoder = TwoTowerEncoder.from_config(EncoderConfig(), device="auto")  # doctest: +SKIP
    >>> result = train_two_tower(encoder, pairs, item_texts, TextConfig(), TrainConfig(), out_dir=Path("enc"))
    >>> result.final_loss < result.log[0]["loss"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from recsys_llm.config import TextConfig, TrainConfig
from recsys_llm.device import resolve_device
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.losses.info_nce import in_batch_info_nce
from recsys_llm.train.pairs import TrainingPairs

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"


@dataclass
class TrainResult:
    steps: int
    """Optimizer steps taken (on this process)."""
    final_loss: float
    """Mean loss over the last logging window."""
    seconds: float
    log: list[dict] = field(default_factory=list)
    """One ``{"step", "loss", "lr", "seconds"}`` record every ``log_every`` steps (and at the last step)."""


def make_accelerator(cpu: bool, mixed_precision: str):
    """A fresh Accelerator; in a single process, reset accelerate's global state so these settings apply."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    # LoRA on layers the pooling never reads (e.g. BERT's pooler) gets no gradient: tell DDP.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision, kwargs_handlers=[ddp])


def train_two_tower(
    encoder: TwoTowerEncoder,
    pairs: TrainingPairs,
    item_texts: Sequence[str],
    text_cfg: TextConfig,
    train_cfg: TrainConfig,
    out_dir: Path | None = None,
) -> TrainResult:
    """Fine-tune ``encoder``'s trainable (LoRA) weights in place on (user text, next item) pairs.

    Args:
        encoder: the model to train; afterwards it is unwrapped, in eval mode, on the training device.
        pairs: training pairs (user text before the positive, positive item id).
        item_texts: text of every item, position = item id.
        text_cfg: token budgets (``user_max_tokens``, ``item_max_tokens``).
        train_cfg: steps, batch size, optimizer, temperature, seed, device, mixed precision.
        out_dir: when given, the log is also written to ``out_dir/train_log.jsonl`` (main process).

    Returns:
        :class:`TrainResult` with the loss log.

    Raises:
        ValueError: no pairs, or nothing trainable.
    """
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if len(pairs) == 0:
        raise ValueError("no training pairs: users need more than train.min_history interactions")
    params = [p for p in encoder.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the encoder has no trainable parameters; build it with lora=True")
    accelerator = make_accelerator(resolve_device(train_cfg.device).type == "cpu", train_cfg.mixed_precision)
    set_seed(train_cfg.seed)

    bs = train_cfg.batch_size
    generator = torch.Generator().manual_seed(train_cfg.seed)
    indices: Any = range(len(pairs))  # a map-style "dataset": position -> pair index
    sampler = RandomSampler(
        indices, replacement=True, num_samples=train_cfg.max_steps * bs, generator=generator
    )

    # logQ correction: an item's chance to be in a batch is its share of the training pairs.
    counts = np.bincount(pairs.pos_items, minlength=len(item_texts)).astype(np.float64)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1.0) / len(pairs)).astype(np.float32))  # (n_items,)

    def collate(idx: list[int]) -> dict:
        items = pairs.pos_items[idx]  # (batch,)
        return {
            "log_q": log_q[items],
            "user": encoder.tokenize([pairs.user_texts[i] for i in idx], text_cfg.user_max_tokens),
            "item": encoder.tokenize([item_texts[i] for i in items], text_cfg.item_max_tokens),
            "item_ids": torch.from_numpy(items),
        }

    loader = DataLoader(indices, batch_size=bs, sampler=sampler, collate_fn=collate)
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, min(train_cfg.warmup_steps, train_cfg.max_steps), train_cfg.max_steps
    )
    model, optimizer, loader, scheduler = accelerator.prepare(encoder, optimizer, loader, scheduler)

    log_path = Path(out_dir) / LOG_FILE if out_dir is not None else None
    if log_path is not None and accelerator.is_main_process:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    log: list[dict] = []
    window: list[torch.Tensor] = []
    t0 = time.perf_counter()
    model.train()
    n_steps = len(loader)
    bar = tqdm(total=n_steps, desc="finetune", disable=not accelerator.is_local_main_process)
    for step, batch in enumerate(loader, start=1):
        user_emb, item_emb = model(batch["user"], batch["item"])  # (batch, dim) each
        loss = in_batch_info_nce(user_emb, item_emb, train_cfg.temperature, batch["item_ids"],
                                 batch["log_q"] if train_cfg.logq_correction else None)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(loss.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % max(train_cfg.log_every, 1) == 0 or step == n_steps:
            mean = accelerator.reduce(torch.stack(window).mean(), reduction="mean").item()
            rec = {
                "step": step,
                "loss": mean,
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            log.append(rec)
            window = []
            logger.info("step %d/%d loss %.4f lr %.2e", step, n_steps, mean, rec["lr"])
            if log_path is not None and accelerator.is_main_process:
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    bar.close()

    unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    unwrapped.eval()
    accelerator.free_memory()
    seconds = time.perf_counter() - t0
    logger.info(
        "trained %d steps in %.1fs (%.3fs/step), final loss %.4f",
        n_steps,
        seconds,
        seconds / max(n_steps, 1),
        log[-1]["loss"],
    )
    return TrainResult(steps=n_steps, final_loss=log[-1]["loss"], seconds=seconds, log=log)
