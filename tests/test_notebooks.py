"""The notebooks run top to bottom on a tiny run, so they cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_report_walkthrough_executes(tiny_run, monkeypatch):
    import nbclient
    import nbformat
    monkeypatch.setenv("RECSYS_RUN_DIR", str(tiny_run))
    nb = nbformat.read(NOTEBOOKS / "report_walkthrough.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "fine-tuned retrieval" in text and "NDCG@10" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # curves, per-slice bars, popularity histogram
