"""Model hashes as InvokeAI computes them (reference §4.4): ``blake3:<hex>``.

A file hashes to the BLAKE3 of its bytes. A folder hashes to the BLAKE3 of the per-file hashes of its
weight files, in sorted path order, so renaming the folder or adding a README leaves it unchanged.
"""

from __future__ import annotations

from pathlib import Path

WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".bin", ".pt", ".pth")


def _file_digest(path: Path) -> str:
    from blake3 import blake3

    hasher = blake3()
    hasher.update_mmap(path)
    return hasher.hexdigest()


def model_hash(path: str | Path) -> str:
    """``blake3:<hex>`` of a model file or folder."""
    from blake3 import blake3

    path = Path(path)
    if path.is_file():
        return f"blake3:{_file_digest(path)}"
    weights = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise ValueError(f"{path}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) to hash")
    combined = blake3()
    for weight in weights:
        combined.update(_file_digest(weight).encode())
    return f"blake3:{combined.hexdigest()}"
