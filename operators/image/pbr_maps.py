"""PBR material maps (``pbr_maps``): a normal, a roughness and a displacement map of a texture image.

Type string, version, fields, category and the ``pbr_maps-output`` output follow InvokeAI 6.11
(``pbr_maps.py``). Two RRDB generators (:mod:`invokeai_provider.models.upscalers.pbr`) load
``normal_map_generator.safetensors`` and ``franken_map_generator.safetensors`` from
``<model root>/core/InvokeAI/pbr-material-maps`` (InvokeAI downloads them from that hub repository); torch is
imported inside ``invoke()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import (
    BaseInvocation,
    BaseInvocationOutput,
    InputField,
    OutputField,
    WithBoard,
    WithMetadata,
    invocation,
    invocation_output,
)
from invokeai_provider.operators.image.io import fail, load_rgb, save_image

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from invokeai_provider.core.context import InvocationContext

# The padding added on each side before inference when a border mode is chosen, cropped off afterwards.
_BORDER = 16
# numpy.pad modes equal to the OpenCV borders InvokeAI pads with (wrap, reflect-101, replicate).
_PAD_MODES = {"seamless": "wrap", "mirror": "reflect", "replicate": "edge"}


@invocation_output("pbr_maps-output")
class PBRMapsOutput(BaseInvocationOutput):
    """The three maps, by name, each the size of the input image."""

    normal_map: ImageField = OutputField(default=None, description="The generated normal map")
    roughness_map: ImageField = OutputField(default=None, description="The generated roughness map")
    displacement_map: ImageField = OutputField(default=None, description="The generated displacement map")


def pad_borders(rgb: "np.ndarray", border_mode: str) -> "np.ndarray":
    """The image with ``_BORDER`` pixels added on each side as ``border_mode`` says (unchanged for "none"):
    the networks see the texture's continuation at the edges, so a tiling texture's maps tile too."""
    import numpy as np

    if border_mode == "none":
        return rgb
    return np.pad(rgb, ((_BORDER, _BORDER), (_BORDER, _BORDER), (0, 0)), mode=_PAD_MODES[border_mode])


@invocation("pbr_maps", title="PBR Maps", tags=["image", "material"],
            category="image",  # InvokeAI 6.11; later releases moved it to "controlnet_preprocessors"
            version="1.0.0", gpu=True)
class PBRMapsInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Normal, roughness and displacement maps of a material texture, for 3D rendering or ControlNets."""

    image: ImageField = InputField(description="Input image")
    tile_size: int = InputField(default=512, description="Tile size")
    border_mode: Literal["none", "seamless", "mirror", "replicate"] = InputField(
        default="none", description="Border mode to apply to eliminate any artifacts or seams")

    def invoke(self, context: "InvocationContext") -> PBRMapsOutput:
        import numpy as np

        from invokeai_provider.models.annotators.checkpoint import load_strict, read_state_dict
        from invokeai_provider.models.model_manager.core_models import CORE_DIR, CoreModel, use_core_model
        from invokeai_provider.models.upscalers.pbr import (
            NORMAL_MAP_CHECKPOINT,
            OTHER_MAPS_CHECKPOINT,
            PBR_REPO,
            PBRNet,
            run_tiled,
        )

        if self.tile_size < 1:
            raise fail(self, "tile_size", f"must be at least 1 pixel, got {self.tile_size}")
        rgb = load_rgb(self, context)
        padded = pad_borders(rgb, self.border_mode)

        def build(filename: str) -> "object":
            def make(folder: "Path", device: str) -> "CoreModel":
                file = folder / filename
                try:
                    state_dict = read_state_dict(file)
                except Exception as exc:  # a truncated or foreign file
                    first_line = (str(exc).splitlines() or [""])[0]
                    raise fail(self, "image", f"cannot read {file} as a checkpoint of tensors: "
                                              f"{type(exc).__name__}: {first_line}") from None
                net = PBRNet()
                load_strict(self, "image", net, state_dict, file)
                for parameter in net.parameters():
                    parameter.requires_grad_(False)
                return CoreModel(net.eval().to(device))
            return make

        folder = f"{CORE_DIR}/{PBR_REPO}"
        outputs = []
        for filename, what in ((NORMAL_MAP_CHECKPOINT, "the PBR normal-map generator"),
                               (OTHER_MAPS_CHECKPOINT, "the PBR roughness/displacement generator")):
            with use_core_model(self, context, "image", folder, build(filename), required=(filename,),
                                what=f"{what} {filename} (hub repository {PBR_REPO})") as core:
                outputs.append(run_tiled(core.model, padded, self.tile_size))
        if self.border_mode != "none":
            outputs = [out[_BORDER:-_BORDER, _BORDER:-_BORDER] for out in outputs]
        normal, other = outputs
        # InvokeAI's roughness and displacement are grey RGB images: one channel each of the second network's
        # output (roughness the middle one, displacement the last), repeated in all three.
        roughness = np.repeat(other[..., 1:2], 3, axis=2)
        displacement = np.repeat(other[..., 2:3], 3, axis=2)
        normal_field, roughness_field, displacement_field = (
            save_image(self, context, np.ascontiguousarray(array)).image for array in (normal, roughness, displacement))
        return PBRMapsOutput(normal_map=normal_field, roughness_map=roughness_field,
                             displacement_map=displacement_field)
