"""The real CLIP tokenizer, built offline from the BPE merges that ship inside the open-clip-torch wheel.

No model hub is reachable, but single-file checkpoints and tiny models need a tokenizer with CLIP's real
vocabulary: it is rebuilt here from the merges (the standard CLIP construction) and cached on disk.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from invokeai_provider.storage.base import atomic_write

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

__all__ = ["CACHE_ENV", "CLIP_MAX_LENGTH", "CLIP_VOCAB_SIZE", "EOS", "cache_root", "clip_tokenizer", "clip_tokenizer_files"]

CACHE_ENV = "INVOKEAI_PROVIDER_CACHE"
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
_BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
_BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def cache_root() -> Path:
    """Cache directory of this package: ``$INVOKEAI_PROVIDER_CACHE`` or ``~/.cache/invokeai_provider``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "invokeai_provider"


def _bpe_gz(root: Path) -> bytes:
    """The gzipped CLIP BPE merges, from an importable ``open_clip`` or from the open-clip-torch wheel.

    The wheel is fetched with ``pip download --no-deps`` (PyPI is reachable, the model hub is not); installing
    open-clip-torch would drag in torchvision, so it is only unzipped.
    """
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / Path(_BPE_MEMBER).name
        if candidate.is_file():
            return candidate.read_bytes()
    wheels = root / "wheels"
    found = sorted(wheels.glob("open_clip_torch-*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheels) as tmp:  # rename in afterwards: no half-written wheel
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp,
                   "open_clip_torch"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            for wheel in Path(tmp).glob("open_clip_torch-*.whl"):
                os.replace(wheel, wheels / wheel.name)
        found = sorted(wheels.glob("open_clip_torch-*.whl"))
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"could not download open_clip_torch for the CLIP vocabulary:\n{proc.stderr[-2000:]}")
    with zipfile.ZipFile(found[-1]) as wheel:
        return wheel.read(_BPE_MEMBER)


def _byte_symbols() -> list[str]:
    """CLIP/GPT-2 byte-level alphabet in vocabulary order.

    Printable bytes stand for themselves and come first (so ``!`` is id 0); the other bytes follow, in byte order,
    as code points 256, 257, ...
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def clip_tokenizer_files(cache_dir: Path | None = None) -> Path:
    """Directory holding the real CLIP ``vocab.json`` + ``merges.txt`` (built once, then cached).

    The vocabulary is the standard CLIP construction: 256 byte symbols, the same with ``</w>``, one token per merge
    (the first 49152-256-2 merge lines), then the two special tokens: 49408 entries, identical ids to OpenAI CLIP.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    out = root / "clip-bpe"
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    if vocab_path.is_file() and merges_path.is_file():
        return out
    lines = gzip.decompress(_bpe_gz(root)).decode("utf-8").split("\n")
    if "#version" not in lines[0]:
        raise RuntimeError(f"unexpected CLIP BPE header {lines[0][:60]!r}")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m.split()) for m in merges), _BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(tokens) != CLIP_VOCAB_SIZE or len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary has {len(vocab)} distinct tokens, expected {CLIP_VOCAB_SIZE}")
    merges_text = ("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8")
    atomic_write(merges_path, lambda out: out.write(merges_text))
    vocab_text = json.dumps(vocab, ensure_ascii=False).encode("utf-8")
    atomic_write(vocab_path, lambda out: out.write(vocab_text))
    return out


def clip_tokenizer(pad_token: str = EOS, cache_dir: Path | None = None) -> CLIPTokenizer:
    """The real CLIP tokenizer (77 tokens). SD2 and SDXL's second tokenizer pad with ``"!"``, the others with EOS."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(
        clip_tokenizer_files(cache_dir), pad_token=pad_token, model_max_length=CLIP_MAX_LENGTH
    )
