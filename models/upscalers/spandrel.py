"""spandrel image-to-image models (upscalers and restorers of some 40 architectures) for the spandrel nodes.

spandrel recognises a checkpoint's architecture from its keys and builds the network, as InvokeAI uses it.
spandrel imports torchvision, which is not a dependency here (it is the ``[spandrel]`` extra): where it cannot
be imported, such checkpoints are not recognised by the probe and the nodes fail saying why. The tiled run
is InvokeAI's: tiles of ``tile_size`` overlapping by at least 20 pixels, taken left to right, top to bottom,
each pasted over the last with the first half of its top and left overlap dropped.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from invokeai_provider.errors import InvokeAIProviderError, exception_summary

if TYPE_CHECKING:
    import numpy as np

MIN_OVERLAP = 20  # InvokeAI's overlap between upscaling tiles
INSTALL_HINT = "pip install 'airflow-provider-invokeai[spandrel]' (spandrel and a torchvision matching torch)"


class SpandrelModelError(InvokeAIProviderError):
    """A file spandrel cannot load as an image-to-image model, or spandrel itself cannot be imported."""


@lru_cache(maxsize=1)
def unavailable_reason() -> Optional[str]:
    """None when spandrel imports; otherwise why not (a torchvision built for another torch fails here)."""
    try:
        import spandrel  # noqa: F401
    except Exception as exc:  # ImportError, or the RuntimeError/OSError of a torchvision that does not match
        return exception_summary(exc)
    return None


def require_spandrel() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise SpandrelModelError(f"spandrel cannot be imported ({reason}); {INSTALL_HINT}")


class SpandrelModel:
    """A spandrel ImageModelDescriptor as a model-cache entry (sized and moved by its network's tensors)."""

    def __init__(self, descriptor: Any, path: Path) -> None:
        self.descriptor = descriptor
        self.path = path

    def parameters(self) -> Iterator[Any]:
        return self.descriptor.model.parameters()

    def buffers(self) -> Iterator[Any]:
        return self.descriptor.model.buffers()

    def to(self, device: Any) -> "SpandrelModel":
        self.descriptor.to(device)
        return self

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def device(self) -> Any:
        return self.descriptor.device

    @property
    def dtype(self) -> Any:
        return self.descriptor.dtype

    def run(self, batch: Any) -> Any:
        """(1, C, H, W) in [0, 1] -> (1, C, H * scale, W * scale); spandrel pads to the size the net needs."""
        import torch

        with torch.inference_mode():
            return self.descriptor(batch.to(device=self.device, dtype=self.dtype))


def _descriptor(path: Path) -> Any:
    from spandrel import ImageModelDescriptor, ModelLoader

    try:
        descriptor = ModelLoader().load_from_file(str(path))
    except Exception as exc:  # spandrel's UnsupportedModelError, ValueError for the extension, unpickling errors
        raise SpandrelModelError(f"{path}: not a model spandrel recognises ({exception_summary(exc)})") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise SpandrelModelError(f"{path}: spandrel loads it as a {type(descriptor).__name__} "
                                 f"({descriptor.architecture.name}); only image-to-image models are supported")
    return descriptor


def identify(path: Path) -> Optional[str]:
    """The spandrel architecture of an image-to-image checkpoint; None when spandrel is not importable or does
    not take the file as one. Loads the whole model, as InvokeAI's probe does: spandrel's detection is not
    public, and some architectures cannot be built on the meta device."""
    if unavailable_reason() is not None:
        return None
    try:
        return str(_descriptor(path).architecture.name)
    except SpandrelModelError:
        return None


def load(path: Path, dtype: Any) -> SpandrelModel:
    """The model in ``dtype``, or in float32 where its architecture does not support that dtype (as InvokeAI)."""
    import torch

    require_spandrel()
    descriptor = _descriptor(path)
    supported = {torch.float16: descriptor.supports_half, torch.bfloat16: descriptor.supports_bfloat16}
    descriptor.to(dtype if supported.get(dtype, True) else torch.float32)
    descriptor.eval()
    return SpandrelModel(descriptor, path)


def upscale(model: Any, rgb: "np.ndarray", tile_size: int,
            on_tile: Optional[Callable[[int, int], None]] = None) -> "np.ndarray":
    """The uint8 (H, W, 3) image run through ``model`` (``run``, ``scale``) in tiles of ``tile_size`` (0: whole);
    ``on_tile(done, total)`` is called before the first tile and after each (it may raise to cancel)."""
    import numpy as np
    import torch

    from invokeai_provider.models.image_util.tiling import TBLR, Tile, calc_tiles_min_overlap, tiled_inference

    height, width = rgb.shape[:2]
    if tile_size > 0 and (height > tile_size or width > tile_size):
        tiles = calc_tiles_min_overlap(height, width, tile_size, tile_size, MIN_OVERLAP)
    else:
        tiles = [Tile(coords=TBLR(top=0, bottom=height, left=0, right=width),
                      overlap=TBLR(top=0, bottom=0, left=0, right=0))]
    tiles.sort(key=lambda tile: (tile.coords.top, tile.coords.left))
    scale = model.scale

    def run(crop: "np.ndarray") -> "np.ndarray":
        batch = torch.from_numpy(crop.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0  # copy: writable
        result = model.run(batch)[0].permute(1, 2, 0).clamp(0, 1).float().cpu().numpy()
        if result.shape[:2] != (crop.shape[0] * scale, crop.shape[1] * scale):
            raise SpandrelModelError(f"{getattr(model, 'path', 'the model')}: a {crop.shape[1]}x{crop.shape[0]} "
                                     f"tile came out {result.shape[1]}x{result.shape[0]}, not {scale}x its size")
        return (result * 255.0).round().astype(np.uint8)

    out = np.zeros((height * scale, width * scale, 3), dtype=np.uint8)
    return tiled_inference(run, rgb, out, tiles, scale=scale, on_tile=on_tile)
