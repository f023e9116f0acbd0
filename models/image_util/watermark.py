"""Invisible byte watermark, interchangeable with invisible-watermark's ``dwtDct`` method (what InvokeAI's
img_watermark and decode_watermark use): a mark made here reads back with that package, and one made there
reads back here.

The scheme, as that package implements it:

* Only the U plane of OpenCV's BGR->YUV conversion carries the mark. Its default scales are 0/36/36 for
  Y/U/V, but it only visits the first two planes, so V is never touched; we follow what it does.
* The plane, cropped to a multiple of 4 pixels, goes through a one-level Haar DWT; the mark lives in the
  approximation band, cut into 4x4 blocks in row-major order. Block ``k`` carries bit ``k % n_bits``, so
  the payload repeats over the whole image.
* Despite the name there is no DCT: in each block the coefficient of largest magnitude (the block's first
  one excluded) is quantised to a step of 36, landing a quarter (bit 0) or three quarters (bit 1) into its
  step. Reading takes the same coefficient, tests which half of the step it lies in, and a bit is 1 when
  more than 127/255 of its blocks vote 1.
* Bytes are bits MSB first (``numpy.unpackbits``).

Two deliberate differences on the embedding side, neither visible to either decoder (both read only the
approximation band): the detail bands are put back in their own places (the package swaps the horizontal
and vertical ones), and the new plane is rounded and clipped to 0..255 rather than truncated and wrapped.
"""

from __future__ import annotations

import cv2
import numpy as np
import pywt

from invokeai_provider.models.image_util.arrays import to_uint8

BLOCK = 4
"""Side of the square blocks of approximation coefficients that each carry one bit."""
U_CHANNEL = 1
"""Index of U in OpenCV's YUV; the only plane that carries the mark."""
SCALE = 36.0
"""Quantisation step of the carrier coefficient in the U plane."""
VOTE_THRESHOLD = 127
"""A bit is 1 when the share of its blocks reading 1, times 255, exceeds this (the package's own test)."""


def bytes_to_bits(data: bytes) -> np.ndarray:
    """The payload as 0/1 uint8 bits, most significant bit of each byte first."""
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))


def bits_to_bytes(bits: np.ndarray) -> bytes:
    """Whole bytes from MSB-first bits; a trailing partial byte is dropped."""
    bits = np.asarray(bits, dtype=np.uint8)
    return np.packbits(bits[: len(bits) // 8 * 8]).tobytes()


def _crop(bgr: np.ndarray) -> tuple[int, int]:
    """Rows and columns of the region that is marked: both cut down to a multiple of 4 (two DWT halvings)."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got shape {bgr.shape} of {bgr.dtype}")
    return bgr.shape[0] // 4 * 4, bgr.shape[1] // 4 * 4


def _block_rows(band: np.ndarray) -> np.ndarray:
    """The band's whole 4x4 blocks in row-major order, each flattened to a row of 16 (a copy)."""
    rows, cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    blocks = band[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2)
    return blocks.reshape(rows * cols, BLOCK * BLOCK)


def _put_block_rows(band: np.ndarray, flat: np.ndarray) -> None:
    """Write rows from ``_block_rows`` back into the band in place; a ragged edge is left as it was."""
    rows, cols = band.shape[0] // BLOCK, band.shape[1] // BLOCK
    blocks = flat.reshape(rows, cols, BLOCK, BLOCK).swapaxes(1, 2).reshape(rows * BLOCK, cols * BLOCK)
    band[: rows * BLOCK, : cols * BLOCK] = blocks


def _carriers(flat: np.ndarray) -> np.ndarray:
    """Per block, the index of the largest-magnitude coefficient other than the first (first one on ties)."""
    return np.argmax(np.abs(flat[:, 1:]), axis=1) + 1


def _check_capacity(n_blocks: int, n_bits: int) -> None:
    if n_bits < 1:
        raise ValueError("the watermark needs at least one bit")
    if n_blocks < n_bits:
        raise ValueError(f"the image holds {n_blocks} watermark blocks but the watermark has {n_bits} bits; "
                         "every bit needs at least one block")


def _u_approximation(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """(YUV image, Haar approximation band of its cropped U plane, detail bands) for an image."""
    rows, cols = _crop(bgr)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    approx, details = pywt.dwt2(yuv[:rows, :cols, U_CHANNEL], "haar")
    return yuv, approx, details


def embed_bits(bgr: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """A copy of the BGR uint8 image with the bits hidden in it, repeated over every block."""
    bits = np.asarray(bits, dtype=np.uint8) & 1
    yuv, approx, details = _u_approximation(bgr)
    flat = _block_rows(approx)
    _check_capacity(len(flat), len(bits))
    index = np.arange(len(flat))
    carrier = _carriers(flat)
    value = flat[index, carrier]
    wanted = bits[index % len(bits)]
    # Same sign, same step of SCALE; the offset in the step (1/4 or 3/4) is the bit.
    flat[index, carrier] = np.sign(value + (value == 0)) * (np.abs(value) // SCALE + 0.25 + 0.5 * wanted) * SCALE
    _put_block_rows(approx, flat)
    rows, cols = approx.shape[0] * 2, approx.shape[1] * 2
    plane = pywt.idwt2((approx, details), "haar")
    yuv[:rows, :cols, U_CHANNEL] = to_uint8(plane, scale=1)
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)


def extract_bits(bgr: np.ndarray, n_bits: int) -> np.ndarray:
    """The n_bits hidden in a BGR uint8 image, as 0/1 uint8, by majority vote over the blocks of each bit."""
    _, approx, _ = _u_approximation(bgr)
    flat = _block_rows(approx)
    _check_capacity(len(flat), n_bits)
    index = np.arange(len(flat))
    value = np.abs(flat[index, _carriers(flat)])
    votes = (value % SCALE > 0.5 * SCALE).astype(np.float64)
    ones = np.bincount(index % n_bits, weights=votes, minlength=n_bits)
    counts = np.bincount(index % n_bits, minlength=n_bits)
    return ((ones / counts) * 255 > VOTE_THRESHOLD).astype(np.uint8)


def embed_bytes(bgr: np.ndarray, data: bytes) -> np.ndarray:
    """A copy of the BGR uint8 image carrying the bytes (e.g. UTF-8 text), readable with ``extract_bytes``."""
    return embed_bits(bgr, bytes_to_bits(data))


def extract_bytes(bgr: np.ndarray, length: int) -> bytes:
    """The ``length`` bytes hidden in a BGR uint8 image; garbage, not an error, when none were hidden."""
    return bits_to_bytes(extract_bits(bgr, length * 8))
