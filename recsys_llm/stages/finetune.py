"""Stage ``finetune``: LoRA-fine-tune the two-tower encoder on (user history text -> next item text) pairs."""

from __future__ import annotations

import logging
from pathlib import Path

from recsys_llm.data.splits import histories
from recsys_llm.encoder.model import TwoTowerEncoder
from recsys_llm.io_utils import atomic_write_json
from recsys_llm.protocol import blind_histories, hidden_record, validation_users
from recsys_llm.run import Context, timed
from recsys_llm.text.templates import history_text
from recsys_llm.train.pairs import build_pairs
from recsys_llm.train.two_tower import ValidationSet, train_two_tower

logger = logging.getLogger(__name__)


@timed("finetune")
def finetune(run_dir: str | Path, resume: bool = False) -> None:
    """LoRA-fine-tune the two-tower encoder on (user history text -> next item text) training pairs.

    With ``train.eval_every > 0`` the validation split (each user's validation item, ranked from their training
    history) is evaluated during training and the best adapter kept in ``encoder/best/``; with
    ``train.checkpoint_every > 0`` checkpoints go to ``encoder/checkpoints/`` and ``resume=True`` continues
    from the latest one.
    """
    ctx = Context.load(run_dir)
    cfg = ctx.cfg
    train_hist = histories(ctx.split.train, ctx.split.n_users)
    blind_hist, hidden = blind_histories(cfg, ctx.split, train_hist)
    if len(hidden):
        logger.info("%d pseudo-cold items (the hybrid's cold validation) hidden from fine-tuning", len(hidden))
    pairs = build_pairs(blind_hist, ctx.titles, cfg.text.user_max_items, cfg.train.min_history,
                        cfg.train.pairs_per_user)
    logger.info("%d training pairs from %d users", len(pairs.pos_items), len(set(pairs.users.tolist())))
    valid = None
    if cfg.train.eval_every > 0:
        users, tg = validation_users(ctx.split, train_hist, cfg.eval.max_users, cfg.eval.seed)
        valid = ValidationSet([history_text(train_hist[u], ctx.titles, cfg.text.user_max_items) for u in users],
                              [tg[u] for u in users], seen=[train_hist[u] for u in users])
        logger.info("validating on %d users every %d steps", len(users), cfg.train.eval_every)
    encoder = TwoTowerEncoder.from_config(cfg.encoder, lora=True, device=cfg.train.device)
    train_two_tower(encoder, pairs, ctx.item_texts(), cfg.text, cfg.train, out_dir=ctx.run.encoder,
                    resume=resume, valid=valid)
    encoder.save(ctx.run.encoder)
    atomic_write_json(ctx.run.encoder_blind, hidden_record(hidden))
