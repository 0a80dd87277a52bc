"""The report: every model on every slice of a run, with intervals, paired comparisons, curves and plots.

* :mod:`~recsys_llm.report.compare`: :func:`~recsys_llm.report.compare.compare_run` (``recsys-llm evaluate``).
* :mod:`~recsys_llm.report.scoring`: the compared models as score functions; the served row.
* :mod:`~recsys_llm.report.measures`: ranked lists -> per-user metrics and curves.
* :mod:`~recsys_llm.report.stats`: bootstrap intervals, paired differences and ratios.
* :mod:`~recsys_llm.report.fewshot`: quality as items and users gain interactions.
* :mod:`~recsys_llm.report.ablation`: what text adds over ID-only models and ID over text, per slice; the
  few-shot curve checks.
* :mod:`~recsys_llm.report.tables`: ``report.json`` / ``report.md`` and the CLI table.
* :mod:`~recsys_llm.report.plots`: Recall@K / NDCG@K curves, slice bars, popularity, few-shot.

The report reads what the stages wrote and ranks the served model through the
:class:`~recsys_llm.serve.recommender.Recommender`; nothing below it imports it.
"""
