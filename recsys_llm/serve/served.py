"""The served configuration: which first stage and which rerank setting the Recommender uses.

Chosen on validation users by ``recsys-llm select`` (:mod:`recsys_llm.stages.select`) from every candidate
the run can serve (dense retrieval or the hybrid, each without reranking or reranked at each depth x fusion
weight of the grid), written once to ``<run>/served.json`` and read by everything that ranks: the CLI
``recommend``, cold-start users, the HTTP service and the report's **served** row. ``recsys-llm info`` prints
it.

Example:
    >>> ServedConfig("hybrid", rerank_depth=50, rerank_weight=0.25).label
    'hybrid -> rerank (depth 50, w 0.25)'
    >>> ServedConfig("dense").label
    'dense'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from recsys_llm.io_utils import atomic_write_json
from recsys_llm.run import ArtifactError, RunDir, read_json

FIRST_STAGES = ("dense", "hybrid")
FORMAT = 1


@dataclass
class ServedConfig:
    """What the Recommender serves.

    Attributes:
        first_stage: ``dense`` (fine-tuned text retrieval from the index) or ``hybrid`` (text + collaborative).
        rerank_depth: candidates the cross-encoder reorders (0 = no reranking).
        rerank_weight: the cross-encoder's share of the fused score of the top ``rerank_depth``.
        chosen_by: ``validation`` (``recsys-llm select``) or ``default`` (no selection ran yet).
        validation: the selection record: every candidate's validation NDCG@10, users, metric.
    """

    first_stage: str = "dense"
    rerank_depth: int = 0
    rerank_weight: float = 1.0
    chosen_by: str = "default"
    validation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.first_stage not in FIRST_STAGES:
            raise ValueError(f"first_stage={self.first_stage!r}; choose one of {', '.join(FIRST_STAGES)}")
        if self.rerank_depth < 0 or not 0.0 <= self.rerank_weight <= 1.0:
            raise ValueError(f"rerank depth {self.rerank_depth} / weight {self.rerank_weight}: need depth >= 0 "
                             "and a weight in [0, 1]")

    @property
    def reranks(self) -> bool:
        return self.rerank_depth > 0

    @property
    def label(self) -> str:
        if not self.reranks:
            return self.first_stage
        return f"{self.first_stage} -> rerank (depth {self.rerank_depth}, w {self.rerank_weight:g})"

    def save(self, run: RunDir) -> None:
        atomic_write_json(run.served, {"format": FORMAT, **asdict(self)})

    @classmethod
    def load(cls, run: RunDir) -> ServedConfig:
        d = read_json(run, run.served, "select")
        if d.pop("format", None) != FORMAT:
            raise ArtifactError(run.served, "written by another version", "select", run.root)
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ArtifactError(run.served, f"invalid ({e})", "select", run.root) from None

    @classmethod
    def default(cls, run: RunDir) -> ServedConfig:
        """Before ``select`` has run: the hybrid when the run has one, else dense retrieval; no reranking."""
        return cls("hybrid" if (run.hybrid / "hybrid.json").exists() else "dense")

    @classmethod
    def for_run(cls, run: RunDir) -> ServedConfig:
        """``served.json`` when the run has one, else :meth:`default`."""
        return cls.load(run) if run.served.exists() else cls.default(run)
