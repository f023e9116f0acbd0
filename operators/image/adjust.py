"""Image colour and filter nodes: hue rotation (HSV, CIELab, Oklch, Okhsl, Okhsv), equivalent achromatic
lightness, PIL enhancement, value thresholds, dilate/erode, Oklab unsharp mask, histogram colour
correction, invisible watermarks and the NSFW blur.

Type strings, titles, versions, fields and outputs follow InvokeAI's invocations/image.py and
composition-nodes.py. The pixel work is written here on numpy, Pillow and scipy; the watermark nodes use
our ``dwt_dct_watermark`` (interchangeable with the marks InvokeAI writes) and the NSFW node a
safety-checker model from the run's model service. Heavy modules are imported inside ``invoke()``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Optional

from invokeai_provider.core.fields import ImageField
from invokeai_provider.core.invocation import BaseInvocation, InputField, WithBoard, WithMetadata, invocation
from invokeai_provider.operators.image.io import fail, load_image
from invokeai_provider.operators.core.primitives import ImageOutput, StringOutput

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from PIL.Image import Image

    from invokeai_provider.core.context import InvocationContext


def _split_alpha(image: "Image") -> tuple[str, Optional["Image"]]:
    """The mode to convert back to and the alpha band, for modes whose alpha must survive a colour edit."""
    alpha_modes = {"RGBA": "RGB", "RGBa": "RGB", "LA": "L", "La": "L", "PA": "P"}
    if image.mode in alpha_modes:
        return alpha_modes[image.mode], image.getchannel(image.mode[-1])
    return image.mode, None


def _restore_mode(image: "Image", mode: str, base_mode: str, alpha: Optional["Image"]) -> "Image":
    """Back to the input's mode with its own alpha band (P/L go through RGB as Pillow needs)."""
    if alpha is None:
        return image.convert(mode)
    image = image.convert(base_mode)
    if base_mode == "P":
        image = image.convert("RGB")
    return _merge_alpha(image, mode, alpha)


def _merge_alpha(image: "Image", mode: str, alpha: "Image") -> "Image":
    from PIL import Image

    if mode in ("RGBA", "RGBa", "LA", "La"):
        return Image.merge(mode, (*image.split(), alpha))
    image = image.convert("RGBA")
    image.putalpha(alpha)
    return image.convert(mode) if mode != "PA" else image


def _to_float(image: "Image") -> "np.ndarray":
    import numpy as np

    return np.asarray(image, dtype=np.float64) / 255.0


def _to_uint8(array: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return np.clip(np.rint(np.asarray(array) * 255.0), 0, 255).astype(np.uint8)


# --- colour spaces (sRGB, linear sRGB, Oklab, Oklch, Okhsl, Okhsv) --------------------------------------
# Arrays are [..., 3]. Oklab and its derived spaces are Björn Ottosson's published definitions.

_RGB_TO_LMS = ((0.4122214708, 0.5363325363, 0.0514459929), (0.2119034982, 0.6806995451, 0.1073969566),
               (0.0883024619, 0.2817188376, 0.6299787005))
_LMS_TO_LAB = ((0.2104542553, 0.7936177850, -0.0040720468), (1.9779984951, -2.4285922050, 0.4505937099),
               (0.0259040371, 0.7827717662, -0.8086757660))
_LAB_TO_LMS = ((1.0, 0.3963377774, 0.2158037573), (1.0, -0.1055613458, -0.0638541728),
               (1.0, -0.0894841775, -1.2914855480))
_LMS_TO_RGB = ((4.0767416621, -3.3077115913, 0.2309699292), (-1.2684380046, 2.6097574011, -0.3413193965),
               (-0.0041960863, -0.7034186147, 1.7076147010))


def _mat(matrix: tuple[tuple[float, ...], ...], values: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return values @ np.asarray(matrix).T


def linear_from_srgb(srgb: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return np.where(srgb <= 0.04045, srgb / 12.92, ((np.maximum(srgb, 0.04045) + 0.055) / 1.055) ** 2.4)


def srgb_from_linear(linear: "np.ndarray") -> "np.ndarray":
    import numpy as np

    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def oklab_from_linear(linear: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return _mat(_LMS_TO_LAB, np.cbrt(_mat(_RGB_TO_LMS, linear)))


def linear_from_oklab(lab: "np.ndarray") -> "np.ndarray":
    return _mat(_LMS_TO_RGB, _mat(_LAB_TO_LMS, lab) ** 3)


def oklch_from_oklab(lab: "np.ndarray") -> "np.ndarray":
    import numpy as np

    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    return np.stack([lab[..., 0], np.hypot(lab[..., 1], lab[..., 2]), hue], axis=-1)


def oklab_from_oklch(lch: "np.ndarray") -> "np.ndarray":
    import numpy as np

    hue = np.radians(lch[..., 2])
    return np.stack([lch[..., 0], lch[..., 1] * np.cos(hue), lch[..., 1] * np.sin(hue)], axis=-1)


def _lab_rows(L: Any, a: Any, b: Any) -> tuple[Any, Any, Any]:  # noqa: N803 - colour-science names
    """Linear r, g, b of Oklab (L, a, b) arrays."""
    import numpy as np

    lab = np.stack(np.broadcast_arrays(L, a, b), axis=-1)
    rgb = linear_from_oklab(lab)
    return rgb[..., 0], rgb[..., 1], rgb[..., 2]


def _max_saturation(a: "np.ndarray", b: "np.ndarray", steps: int) -> "np.ndarray":
    """Largest S = C/L that stays in sRGB for the hue (a, b) (a unit vector): polynomial guess + Halley steps."""
    import numpy as np

    red = -1.88170328 * a - 0.80936493 * b > 1
    green = ~red & (1.81444104 * a - 1.19445276 * b > 1)
    coeffs = {
        "r": ((1.19086277, 1.76576728, 0.59662641, 0.75515197, 0.56771245), _LMS_TO_RGB[0]),
        "g": ((0.73956515, -0.45954404, 0.08285427, 0.12541070, 0.14503204), _LMS_TO_RGB[1]),
        "b": ((1.35733652, -0.00915799, -1.15130210, -0.50559606, 0.00692167), _LMS_TO_RGB[2]),
    }

    def pick(i: int, table: int) -> "np.ndarray":
        values = [coeffs[c][table][i] for c in "rgb"]
        return np.where(red, values[0], np.where(green, values[1], values[2]))

    k = [pick(i, 0) for i in range(5)]
    wl, wm, ws = (pick(i, 1) for i in range(3))
    s = k[0] + k[1] * a + k[2] * b + k[3] * a * a + k[4] * a * b
    kl = _LAB_TO_LMS[0][1] * a + _LAB_TO_LMS[0][2] * b
    km = _LAB_TO_LMS[1][1] * a + _LAB_TO_LMS[1][2] * b
    ks = _LAB_TO_LMS[2][1] * a + _LAB_TO_LMS[2][2] * b
    for _ in range(steps):
        l_, m_, s_ = 1 + s * kl, 1 + s * km, 1 + s * ks
        f = wl * l_ ** 3 + wm * m_ ** 3 + ws * s_ ** 3
        f1 = 3 * (wl * kl * l_ ** 2 + wm * km * m_ ** 2 + ws * ks * s_ ** 2)
        f2 = 6 * (wl * kl ** 2 * l_ + wm * km ** 2 * m_ + ws * ks ** 2 * s_)
        s = s - f * f1 / (f1 * f1 - 0.5 * f * f2)
    return s


def _cusp(a: "np.ndarray", b: "np.ndarray", steps: int) -> tuple["np.ndarray", "np.ndarray"]:
    """(L, C) of the most saturated in-gamut colour of the hue (a, b)."""
    import numpy as np

    s = _max_saturation(a, b, steps)
    r, g, bl = _lab_rows(1.0, s * a, s * b)
    lightness = np.cbrt(1.0 / np.maximum(np.maximum(r, g), bl))
    return lightness, lightness * s


def _gamut_intersection(a: "np.ndarray", b: "np.ndarray", l1: Any, c1: Any, l0: Any, steps: int,
                        cusp: Optional[tuple[Any, Any]] = None) -> "np.ndarray":
    """t where the line from (l0, 0) to (l1, c1) of hue (a, b) leaves the sRGB gamut."""
    import numpy as np

    l1, c1, l0 = (np.broadcast_to(np.asarray(v, dtype=np.float64), a.shape) for v in (l1, c1, l0))
    cl, cc = cusp if cusp is not None else _cusp(a, b, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = (l1 - l0) * cc - (cl - l0) * c1 <= 0
        t_lower = cc * l0 / (c1 * cl + cc * (l0 - l1))
        t = cc * (l0 - 1) / (c1 * (cl - 1) + cc * (l0 - l1))
        kl = _LAB_TO_LMS[0][1] * a + _LAB_TO_LMS[0][2] * b
        km = _LAB_TO_LMS[1][1] * a + _LAB_TO_LMS[1][2] * b
        ks = _LAB_TO_LMS[2][1] * a + _LAB_TO_LMS[2][2] * b
        dl, dc = l1 - l0, c1
        for _ in range(steps):
            lt, ct = l0 * (1 - t) + t * l1, t * c1
            parts = [(lt + ct * k, dl + dc * k) for k in (kl, km, ks)]
            lms = [p ** 3 for p, _ in parts]
            lms1 = [3 * d * p ** 2 for p, d in parts]
            lms2 = [6 * d * d * p for p, d in parts]
            best = np.full(a.shape, np.inf)
            for row in _LMS_TO_RGB:
                f = sum(w * v for w, v in zip(row, lms)) - 1
                f1 = sum(w * v for w, v in zip(row, lms1))
                f2 = sum(w * v for w, v in zip(row, lms2))
                u = f1 / (f1 * f1 - 0.5 * f * f2)
                best = np.minimum(best, np.where(u >= 0, -f * u, np.inf))
            t = t + np.where(np.isfinite(best), best, 0.0)
        return np.nan_to_num(np.where(lower, t_lower, t))


def _hue_units(lab: "np.ndarray") -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """Chroma and the unit hue vector of Oklab values (greys get hue 0 so nothing divides by zero)."""
    import numpy as np

    chroma = np.hypot(lab[..., 1], lab[..., 2])
    safe = np.maximum(chroma, 1e-8)
    grey = chroma < 1e-8
    return chroma, np.where(grey, 1.0, lab[..., 1] / safe), np.where(grey, 0.0, lab[..., 2] / safe)


def gamut_clip(linear: "np.ndarray", alpha: float, steps: int) -> "np.ndarray":
    """Out-of-gamut linear sRGB projected into the gamut towards an adaptive lightness (Ottosson's
    "adaptive L0, 0.5" clip); a larger ``alpha`` keeps more chroma at the expense of lightness."""
    import numpy as np

    outside = (linear.max(axis=-1) > 1.0) | (linear.min(axis=-1) < 0.0)
    if not outside.any():
        return linear
    lab = oklab_from_linear(linear)
    chroma, a, b = _hue_units(lab)
    chroma = np.maximum(chroma, 1e-5)
    lightness = lab[..., 0]
    ld = lightness - 0.5
    e1 = 0.5 + np.abs(ld) + alpha * chroma
    l0 = 0.5 * (1 + np.sign(ld) * (e1 - np.sqrt(np.maximum(e1 * e1 - 2 * np.abs(ld), 0.0))))
    t = _gamut_intersection(a, b, lightness, chroma, l0, steps)
    l_clip, c_clip = l0 * (1 - t) + t * lightness, t * chroma
    clipped = linear_from_oklab(np.stack([l_clip, c_clip * a, c_clip * b], axis=-1))
    return np.where(outside[..., None], clipped, linear)


_TOE_K1, _TOE_K2 = 0.206, 0.03
_TOE_K3 = (1 + _TOE_K1) / (1 + _TOE_K2)


def _toe(x: "np.ndarray") -> "np.ndarray":
    import numpy as np

    y = _TOE_K3 * x - _TOE_K1
    return 0.5 * (y + np.sqrt(y * y + 4 * _TOE_K2 * _TOE_K3 * x))


def _toe_inv(x: "np.ndarray") -> "np.ndarray":
    return (x * x + _TOE_K1 * x) / (_TOE_K3 * (x + _TOE_K2))


def _st_mid(a: "np.ndarray", b: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
    s = 0.11516993 + 1 / (7.44778970 + 4.15901240 * b + a * (-2.19557347 + 1.75198401 * b + a * (
        -2.13704948 - 10.02301043 * b + a * (-4.24894561 + 5.38770819 * b + 4.69891013 * a))))
    t = 0.11239642 + 1 / (1.61320320 - 0.68124379 * b + a * (0.40370612 + 0.90148123 * b + a * (
        -0.27087943 + 0.61223990 * b + a * (0.00299215 - 0.45399568 * b - 0.14661872 * a))))
    return s, t


def _chroma_stops(lightness: "np.ndarray", a: "np.ndarray", b: "np.ndarray", steps: int) -> tuple[Any, Any, Any]:
    """Okhsl's C0, Cmid and Cmax for each lightness and hue."""
    import numpy as np

    cusp = _cusp(a, b, steps)
    c_max = _gamut_intersection(a, b, lightness, 1.0, lightness, steps, cusp)
    s_max, t_max = cusp[1] / cusp[0], cusp[1] / (1 - cusp[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        k = c_max / np.minimum(lightness * s_max, (1 - lightness) * t_max)
        s_mid, t_mid = _st_mid(a, b)
        ca, cb = lightness * s_mid, (1 - lightness) * t_mid
        c_mid = 0.9 * k * np.sqrt(np.sqrt(1 / (1 / ca ** 4 + 1 / cb ** 4)))
        ca, cb = lightness * 0.4, (1 - lightness) * 0.8
        c_0 = np.sqrt(1 / (1 / ca ** 2 + 1 / cb ** 2))
    return c_0, c_mid, c_max


def _unit_hue(hue_degrees: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
    import numpy as np

    radians = np.radians(hue_degrees)
    return np.cos(radians), np.sin(radians)


def okhsl_from_srgb(srgb: "np.ndarray", steps: int = 1) -> "np.ndarray":
    """Okhsl (hue in degrees, saturation and lightness in [0, 1])."""
    import numpy as np

    lab = oklab_from_linear(linear_from_srgb(srgb))
    chroma, a, b = _hue_units(lab)
    lightness = np.clip(lab[..., 0], 1e-9, 1 - 1e-9)
    c_0, c_mid, c_max = _chroma_stops(lightness, a, b, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        k1 = 0.8 * c_0
        low = chroma / (k1 + (1 - k1 / c_mid) * chroma) * 0.8
        k1h = 0.2 * c_mid ** 2 * 1.25 ** 2 / c_0
        high = 0.8 + 0.2 * (chroma - c_mid) / (k1h + (1 - k1h / (c_max - c_mid)) * (chroma - c_mid))
        sat = np.nan_to_num(np.where(chroma < c_mid, low, high))
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    return np.stack([hue, np.clip(sat, 0.0, 1.0), _toe(np.clip(lab[..., 0], 0.0, 1.0))], axis=-1)


def srgb_from_okhsl(hsl: "np.ndarray", steps: int = 1) -> "np.ndarray":
    import numpy as np

    a, b = _unit_hue(hsl[..., 0])
    sat = hsl[..., 1]
    lightness = np.clip(_toe_inv(hsl[..., 2]), 1e-9, 1 - 1e-9)
    c_0, c_mid, c_max = _chroma_stops(lightness, a, b, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = 1.25 * sat
        k1 = 0.8 * c_0
        low = t * k1 / (1 - (1 - k1 / c_mid) * t)
        t = (sat - 0.8) / 0.2
        k1h = 0.2 * c_mid ** 2 * 1.25 ** 2 / c_0
        high = c_mid + t * k1h / (1 - (1 - k1h / (c_max - c_mid)) * t)
        chroma = np.nan_to_num(np.where(sat < 0.8, low, high))
    linear = linear_from_oklab(np.stack([lightness, chroma * a, chroma * b], axis=-1))
    out = srgb_from_linear(linear)
    out = np.where((hsl[..., 2] >= 1.0)[..., None], 1.0, out)
    return np.where((hsl[..., 2] <= 0.0)[..., None], 0.0, out)


def okhsv_from_srgb(srgb: "np.ndarray", steps: int = 1) -> "np.ndarray":
    """Okhsv (hue in degrees, saturation and value in [0, 1])."""
    import numpy as np

    lab = oklab_from_linear(linear_from_srgb(srgb))
    chroma, a, b = _hue_units(lab)
    lightness = lab[..., 0]
    cl, cc = _cusp(a, b, steps)
    s_max, t_max = cc / cl, cc / (1 - cl)
    k = 1 - 0.5 / s_max
    with np.errstate(divide="ignore", invalid="ignore"):
        t = t_max / (chroma + lightness * t_max)
        l_v, c_v = t * lightness, t * chroma
        l_vt = _toe_inv(l_v)
        c_vt = c_v * l_vt / l_v
        r, g, bl = _lab_rows(l_vt, a * c_vt, b * c_vt)
        scale = np.cbrt(1.0 / np.maximum(np.maximum(np.maximum(r, g), bl), 0.0))
        lightness, chroma = lightness / scale, chroma / scale
        toe_l = _toe(lightness)
        value = np.nan_to_num(toe_l / l_v)
        sat = np.nan_to_num((0.5 + t_max) * c_v / (t_max * 0.5 + t_max * k * c_v))
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    return np.stack([hue, np.clip(sat, 0.0, 1.0), np.clip(value, 0.0, 1.0)], axis=-1)


def srgb_from_okhsv(hsv: "np.ndarray", steps: int = 1) -> "np.ndarray":
    import numpy as np

    a, b = _unit_hue(hsv[..., 0])
    sat, value = hsv[..., 1], hsv[..., 2]
    cl, cc = _cusp(a, b, steps)
    s_max, t_max = cc / cl, cc / (1 - cl)
    k = 1 - 0.5 / s_max
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 0.5 + t_max - t_max * k * sat
        l_v = 1 - sat * 0.5 / denom
        c_v = sat * t_max * 0.5 / denom
        lightness, chroma = value * l_v, value * c_v
        l_vt = _toe_inv(l_v)
        c_vt = c_v * l_vt / l_v
        l_new = _toe_inv(lightness)
        chroma = np.nan_to_num(chroma * l_new / lightness)
        lightness = l_new
        r, g, bl = _lab_rows(l_vt, a * c_vt, b * c_vt)
        scale = np.cbrt(1.0 / np.maximum(np.maximum(np.maximum(r, g), bl), 0.0))
        lightness, chroma = lightness * scale, chroma * scale
    linear = linear_from_oklab(np.stack([lightness, chroma * a, chroma * b], axis=-1))
    return np.where((value <= 0.0)[..., None], 0.0, srgb_from_linear(np.nan_to_num(linear)))


def _cielab_transforms() -> tuple[Any, Any]:
    """sRGB <-> CIELab (D65) transforms with Pillow's littleCMS, as InvokeAI's CIELab options use."""
    from PIL import ImageCms

    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB", colorTemp=6500)
    flags = 0x2400  # no white-point fix-up, no cache: the same conversion InvokeAI builds
    to_lab = ImageCms.buildTransformFromOpenProfiles(srgb, lab, "RGB", "LAB", renderingIntent=2, flags=flags)
    to_rgb = ImageCms.buildTransformFromOpenProfiles(lab, srgb, "LAB", "RGB", renderingIntent=2, flags=flags)
    return to_lab, to_rgb


# --- nodes ----------------------------------------------------------------------------------------------


@invocation("img_hue_adjust_oklch", title="Adjust Image Hue (Oklch)", tags=["image", "hue", "oklch"],
            category="image", version="1.0.0")
class OklchImageHueAdjustmentInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Rotates hue in Oklch, where equal angles look like equal hue changes and lightness stays put."""

    image: ImageField = InputField(description="The image to adjust")
    hue: int = InputField(default=0, description="The degrees by which to rotate the hue, 0-360")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        base_mode, alpha = _split_alpha(image)
        lch = oklch_from_oklab(oklab_from_linear(linear_from_srgb(_to_float(image.convert("RGB")))))
        lch[..., 2] = (lch[..., 2] + self.hue) % 360.0
        rgb = srgb_from_linear(linear_from_oklab(oklab_from_oklch(lch)))
        out = _restore_mode(Image.fromarray(_to_uint8(rgb), "RGB"), image.mode, base_mode, alpha)
        return ImageOutput.build(context.images.save(out))


HUE_COLOR_SPACES = Literal["HSV / HSL / RGB", "Okhsl", "Okhsv", "*Oklch / Oklab", "*LCh / CIELab",
                           "*UPLab (w/CIELab_to_UPLab.icc)"]


@invocation("invokeai_img_hue_adjust_plus", title="Adjust Image Hue Plus",
            tags=["image", "hue", "oklab", "cielab", "uplab", "lch", "hsv", "hsl", "lab"], category="image",
            version="1.2.0")
class InvokeAdjustImageHuePlusInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Rotates hue in a chosen colour space; the perceptual ones (*) shift hues evenly but may clip colours."""

    image: ImageField = InputField(description="The image to adjust")
    space: HUE_COLOR_SPACES = InputField(default="HSV / HSL / RGB",
                                         description="Color space in which to rotate hue by polar coords (*: non-invertible)")
    degrees: float = InputField(default=0.0, description="Degrees by which to rotate image hue")
    preserve_lightness: bool = InputField(default=False, description="Whether to preserve CIELAB lightness values")
    ok_adaptive_gamut: float = InputField(ge=0, default=0.05,
                                          description="Higher preserves chroma at the expense of lightness (Oklab)")
    ok_high_precision: bool = InputField(default=True,
                                         description="Use more steps in computing gamut (Oklab/Okhsv/Okhsl)")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageCms

        if self.space.startswith("*UPLab"):
            raise fail(self, "space", "the UPLab option needs InvokeAI's CIELab_to_UPLab.icc profile, which is not "
                        "shipped here; choose another space (\"*LCh / CIELab\" is the nearest)")
        image = load_image(self, context, "image")
        base_mode, alpha = _split_alpha(image)
        rgb_image = image.convert("RGB")
        steps = 3 if self.ok_high_precision else 1
        to_lab, to_rgb = _cielab_transforms()
        original_lab = ImageCms.applyTransform(rgb_image, to_lab)
        if self.space == "HSV / HSL / RGB":
            hsv = np.asarray(rgb_image.convert("HSV"), dtype=np.float64)
            hsv[..., 0] = ((hsv[..., 0] / 255.0 * 360.0 + self.degrees) % 360.0) / 360.0 * 255.0
            out = Image.fromarray(np.clip(np.rint(hsv), 0, 255).astype(np.uint8), "HSV").convert("RGB")
        elif self.space in ("Okhsl", "Okhsv"):
            forward, back = ((okhsl_from_srgb, srgb_from_okhsl) if self.space == "Okhsl"
                             else (okhsv_from_srgb, srgb_from_okhsv))
            polar = forward(_to_float(rgb_image), steps)
            polar[..., 0] = (polar[..., 0] + self.degrees) % 360.0
            out = Image.fromarray(_to_uint8(back(polar, steps)), "RGB")
        elif self.space == "*Oklch / Oklab":
            lch = oklch_from_oklab(oklab_from_linear(linear_from_srgb(_to_float(rgb_image))))
            lch[..., 2] = (lch[..., 2] + self.degrees) % 360.0
            linear = linear_from_oklab(oklab_from_oklch(lch))
            if self.ok_adaptive_gamut > 0:
                linear = gamut_clip(linear, self.ok_adaptive_gamut, steps)
            out = Image.fromarray(_to_uint8(srgb_from_linear(linear)), "RGB")
        else:  # "*LCh / CIELab": rotate (a*, b*) about the neutral axis, keeping L*
            lab = np.asarray(original_lab, dtype=np.float64)
            a, b = (lab[..., 1] - 128.0), (lab[..., 2] - 128.0)
            angle = math.radians(self.degrees)
            rot_a, rot_b = a * math.cos(angle) - b * math.sin(angle), a * math.sin(angle) + b * math.cos(angle)
            lab = np.stack([lab[..., 0], rot_a + 128.0, rot_b + 128.0], axis=-1)
            out = ImageCms.applyTransform(Image.fromarray(np.clip(np.rint(lab), 0, 255).astype(np.uint8), "LAB"),
                                          to_rgb)
        if self.preserve_lightness and not self.space.startswith("*LCh"):
            out_lab = ImageCms.applyTransform(out, to_lab)
            merged = Image.merge("LAB", (original_lab.getchannel("L"), out_lab.getchannel("A"),
                                         out_lab.getchannel("B")))
            out = ImageCms.applyTransform(merged, to_rgb)
        out = _restore_mode(out, image.mode, base_mode, alpha)
        return ImageOutput.build(context.images.save(out))


@invocation("invokeai_img_enhance", title="Enhance Image", tags=["enhance", "image"], category="image",
            version="1.2.1")
class InvokeImageEnhanceInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Inverts, then applies PIL's colour, contrast, brightness and sharpness enhancers (1.0 leaves as is)."""

    image: ImageField = InputField(description="The image for which to apply processing")
    invert: bool = InputField(default=False, description="Whether to invert the image colors")
    color: float = InputField(ge=0, default=1.0, description="Color enhancement factor")
    contrast: float = InputField(ge=0, default=1.0, description="Contrast enhancement factor")
    brightness: float = InputField(ge=0, default=1.0, description="Brightness enhancement factor")
    sharpness: float = InputField(ge=0, default=1.0, description="Sharpness enhancement factor")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import ImageEnhance, ImageOps

        image = load_image(self, context, "image")
        if self.invert:
            image = ImageOps.invert(image if image.mode in ("L", "RGB") else image.convert("RGB"))
        for factor, enhancer in ((self.color, ImageEnhance.Color), (self.contrast, ImageEnhance.Contrast),
                                 (self.brightness, ImageEnhance.Brightness), (self.sharpness, ImageEnhance.Sharpness)):
            if factor != 1.0:
                image = enhancer(image).enhance(factor)
        return ImageOutput.build(context.images.save(image))


@invocation("invokeai_ealightness", title="Equivalent Achromatic Lightness",
            tags=["image", "channel", "mask", "cielab", "lab"], category="image", version="1.2.0")
class InvokeEquivalentAchromaticLightnessInvocation(BaseInvocation, WithMetadata, WithBoard):
    """A greyscale lightness image from CIELab L*.

    InvokeAI adds a chroma-dependent (Helmholtz-Kohlrausch) term, but sums it over the whole image into one
    constant that its own min/max rescale then removes, so what it returns is L* rescaled to 0-255. This
    returns the same.
    """

    image: ImageField = InputField(description="Image from which to get channel")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        image = load_image(self, context, "image")
        if image.mode not in ("RGB", "LAB"):
            image = image.convert("RGB")
        lightness = image.convert("LAB").getchannel("L")
        return ImageOutput.build(context.images.save(lightness))


@invocation("invokeai_img_val_thresholds", title="Image Value Thresholds",
            tags=["image", "mask", "value", "threshold"], category="image", version="1.2.0")
class InvokeImageValueThresholdsInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Values at or above the upper threshold become full, below the lower one zero (swapped when inverted);
    values in between stay, or are stretched over 0-1 when renormalised. Useful to cut masks from images."""

    image: ImageField = InputField(description="The image from which to create a mask")
    invert_output: bool = InputField(default=False, description="Make light areas dark and vice versa")
    renormalize_values: bool = InputField(default=False, description="Rescale remaining values from minimum to maximum")
    lightness_only: bool = InputField(default=False, description="If true, only applies to image lightness (CIELa*b*)")
    threshold_upper: float = InputField(default=0.5, description="Threshold above which will be set to full value")
    threshold_lower: float = InputField(default=0.5, description="Threshold below which will be set to minimum value")

    def _threshold(self, values: "np.ndarray") -> "np.ndarray":
        import numpy as np

        upper, lower = self.threshold_upper, self.threshold_lower
        out = values.copy()
        high, low = values >= upper, values < lower
        if upper != lower and self.renormalize_values:
            middle = (values >= lower) & (values < upper)
            vmin, vmax = min(upper, lower), max(upper, lower)
            stretched = (values[middle] - vmin) / (vmax - vmin)
            out[middle] = 1.0 - stretched if self.invert_output else stretched
        full, zero = (low, high) if self.invert_output else (high, low)
        out[full] = 1.0
        out[zero] = 0.0
        return np.clip(out, 0.0, 1.0)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        if self.lightness_only:
            base_mode, alpha = _split_alpha(image)
            lab = image.convert("RGB").convert("LAB")
            lightness = Image.fromarray(_to_uint8(self._threshold(_to_float(lab.getchannel("L")))), "L")
            out = Image.merge("LAB", (lightness, lab.getchannel("A"), lab.getchannel("B"))).convert("RGB")
            out = _restore_mode(out, image.mode, base_mode, alpha)
        else:
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            out = Image.fromarray(_to_uint8(self._threshold(_to_float(image))), image.mode)
        return ImageOutput.build(context.images.save(out))


DILATE_ERODE_MODES = Literal["Dilate", "Erode"]


def ellipse_footprint(radius_w: int, radius_h: int) -> "np.ndarray":
    """The (2*radius_h+1) x (2*radius_w+1) ellipse a dilation grows by, rasterised row by row the way
    OpenCV's MORPH_ELLIPSE element (which InvokeAI uses) is, so results match pixel for pixel."""
    import numpy as np

    footprint = np.zeros((2 * radius_h + 1, 2 * radius_w + 1), dtype=bool)
    for row in range(2 * radius_h + 1):
        dy = row - radius_h
        half = int(np.rint(radius_w * math.sqrt((radius_h ** 2 - dy ** 2) / radius_h ** 2))) if radius_h else 0
        footprint[row, radius_w - half:radius_w + half + 1] = True
    return footprint


@invocation("invokeai_img_dilate_erode", title="Image Dilate or Erode",
            tags=["image", "mask", "dilate", "erode", "expand", "contract", "mask"], category="image", version="1.3.0")
class InvokeImageDilateOrErodeInvocation(BaseInvocation, WithMetadata):
    """Grows (dilate) or shrinks (erode) light areas by an elliptical radius; handy to widen or tighten masks."""

    image: ImageField = InputField(description="The image from which to create a mask")
    lightness_only: bool = InputField(default=False, description="If true, only applies to image lightness (CIELa*b*)")
    radius_w: int = InputField(ge=0, default=4,
                               description="Width (in pixels) by which to dilate(expand) or erode (contract) the image")
    radius_h: int = InputField(ge=0, default=4,
                               description="Height (in pixels) by which to dilate(expand) or erode (contract) the image")
    mode: DILATE_ERODE_MODES = InputField(default="Dilate", description="How to operate on the image")

    def _morph(self, image: "Image") -> "Image":
        import numpy as np
        from PIL import Image
        from scipy import ndimage

        op = ndimage.grey_dilation if self.mode == "Dilate" else ndimage.grey_erosion
        footprint = ellipse_footprint(self.radius_w, self.radius_h)
        array = np.asarray(image)
        if array.ndim == 2:
            out = op(array, footprint=footprint, mode="nearest")
        else:
            out = np.stack([op(array[..., c], footprint=footprint, mode="nearest") for c in range(array.shape[-1])],
                           axis=-1)
        return Image.fromarray(out.astype(array.dtype), image.mode)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        from PIL import Image

        image = load_image(self, context, "image")
        if self.lightness_only:
            base_mode, alpha = _split_alpha(image)
            lab = image.convert("RGB").convert("LAB")
            out = Image.merge("LAB", (self._morph(lab.getchannel("L")), lab.getchannel("A"), lab.getchannel("B")))
            out = _restore_mode(out.convert("RGB"), image.mode, base_mode, alpha)
        else:
            if image.mode in ("1", "P", "PA"):
                image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
            out = self._morph(image)
        return ImageOutput.build(context.images.save(out))


@invocation("unsharp_mask_oklab", title="Unsharp Mask (Oklab)", tags=["image", "unsharp_mask", "oklab"],
            category="image", version="1.0.0")
class OklabUnsharpMaskInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Sharpens Oklab lightness only, so edges gain contrast without colour fringes."""

    image: ImageField = InputField(description="The image to use")
    radius: float = InputField(gt=0, description="Unsharp mask radius", default=2)
    strength: float = InputField(ge=0, description="Unsharp mask strength", default=50)

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image, ImageFilter

        image = load_image(self, context, "image")
        base_mode, alpha = _split_alpha(image)
        rgb = image.convert("RGB")
        lab = oklab_from_linear(linear_from_srgb(_to_float(rgb)))
        blurred = oklab_from_linear(linear_from_srgb(_to_float(rgb.filter(ImageFilter.GaussianBlur(self.radius)))))
        lab[..., 0] += (lab[..., 0] - blurred[..., 0]) * (self.strength / 100.0)
        out_rgb = srgb_from_linear(linear_from_oklab(np.clip(lab, -1.0, 1.0)))
        out = _restore_mode(Image.fromarray(_to_uint8(out_rgb), "RGB"), image.mode, base_mode, alpha)
        return ImageOutput.build(context.images.save(out))


def _match_histogram(source: "np.ndarray", reference: "np.ndarray") -> "np.ndarray":
    """Maps 8-bit values so the source's cumulative histogram follows the reference's."""
    import numpy as np

    def cdf(values: "np.ndarray") -> "np.ndarray":
        counts = np.bincount(values.ravel(), minlength=256).cumsum().astype(np.float64)
        return counts / counts[-1] if counts[-1] > 0 else counts

    table = np.interp(cdf(source), cdf(reference), np.arange(256))
    return table[source].astype(np.uint8)


@invocation("color_correct", title="Color Correct", tags=["image", "color"], category="image", version="2.0.0")
class ColorCorrectInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Matches the base image's colour histograms to a reference (all channels, or luma or chroma only);
    a mask keeps the original where it is white."""

    base_image: ImageField = InputField(description="The image to color-correct")
    color_reference: ImageField = InputField(description="Reference image for color-correction")
    mask: Optional[ImageField] = InputField(default=None, description="Optional mask to limit color correction area")
    colorspace: Literal["RGB", "YCbCr", "YCbCr-Chroma", "YCbCr-Luma"] = InputField(
        default="RGB", description="Colorspace in which to apply histogram matching", title="Color Space")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        base = context.images.get_pil(self.base_image.image_name, "RGBA")
        space = "RGB" if self.colorspace == "RGB" else "YCbCr"
        channels = {"RGB": (0, 1, 2), "YCbCr": (0, 1, 2), "YCbCr-Chroma": (1, 2), "YCbCr-Luma": (0,)}[self.colorspace]
        base_rgb = base.convert("RGB")
        source = np.asarray(base_rgb.convert(space), dtype=np.uint8)
        reference = np.asarray(load_image(self, context, "color_reference").convert("RGB").convert(space),
                               dtype=np.uint8)
        corrected = source.copy()
        for channel in channels:
            corrected[..., channel] = _match_histogram(source[..., channel], reference[..., channel])
        result = Image.fromarray(corrected, space).convert("RGB")
        if self.mask is not None:
            mask = context.images.get_pil(self.mask.image_name, "L")
            if mask.size != result.size:
                raise fail(self, "mask", f"mask is {mask.width}x{mask.height} but base_image is "
                            f"{result.width}x{result.height}; they must be the same size")
            result.paste(base_rgb, mask=mask)
        result = result.convert("RGBA")
        result.putalpha(base.getchannel("A"))
        return ImageOutput.build(context.images.save(result))


def _bgr(image: "Image") -> "np.ndarray":
    import numpy as np

    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8)[..., ::-1])


def _check_watermark_size(node: BaseInvocation, image: "Image") -> None:
    if image.width * image.height < 256 * 256:
        raise fail(node, "image", f"the invisible watermark needs at least 256x256 = 65536 pixels; the image is "
                    f"{image.width}x{image.height}")


@invocation("img_watermark", title="Add Invisible Watermark", tags=["image", "watermark"], category="image",
            version="1.2.2")
class ImageWatermarkInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Hides the text in the image's frequency domain (DWT-DCT), readable back with decode_watermark."""

    image: ImageField = InputField(description="The image to check")
    text: str = InputField(default="InvokeAI", description="Watermark text")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        from PIL import Image

        from invokeai_provider.models.image_util.watermark import embed_bytes

        image = load_image(self, context, "image")
        _check_watermark_size(self, image)
        if not self.text:
            raise fail(self, "text", "the watermark text must not be empty")
        try:
            bgr = embed_bytes(_bgr(image), self.text.encode("utf-8"))
        except ValueError as exc:  # more bits than the image has blocks: the mark could never be read back
            raise fail(self, "text", f"the watermark text is too long for this image: {exc}") from None
        out = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), "RGB").convert("RGBA")
        return ImageOutput.build(context.images.save(out))


@invocation("decode_watermark", title="Decode Invisible Watermark", tags=["image", "watermark"], category="image",
            version="1.0.0")
class DecodeInvisibleWatermarkInvocation(BaseInvocation):
    """Reads back text hidden by img_watermark; an empty string when none can be read."""

    image: ImageField = InputField(description="The image to decode the watermark from")
    length: int = InputField(default=8, description="The expected watermark length in bytes")

    def invoke(self, context: "InvocationContext") -> StringOutput:
        from invokeai_provider.models.image_util.watermark import extract_bytes

        if self.length < 1:
            raise fail(self, "length", f"expected a watermark length of at least 1 byte, got {self.length}")
        image = load_image(self, context, "image")
        if image.width * image.height < 256 * 256:
            context.logger.warning("%s: image %s is too small to carry an invisible watermark", self.id,
                                   self.image.image_name)
            return StringOutput(value="")
        try:
            raw = extract_bytes(_bgr(image), self.length)
        except Exception as exc:  # noqa: BLE001 - an unreadable watermark is an empty answer, as in InvokeAI
            context.logger.debug("%s: no invisible watermark decoded: %s", self.id, exc)
            return StringOutput(value="")
        return StringOutput(value=bytes(raw).decode("utf-8", errors="ignore").rstrip("\x00"))


# Where InvokeAI keeps its safety checker, relative to the models directory; here: the model root.
SAFETY_CHECKER_PATH = "core/convert/stable-diffusion-safety-checker"


def _build_safety_checker(path: "Path", device: str) -> Any:
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    from invokeai_provider.models.model_manager.core_models import CoreModel

    return CoreModel(StableDiffusionSafetyChecker.from_pretrained(path).to(device).eval(),
                     CLIPImageProcessor.from_pretrained(path))


@invocation("img_nsfw", title="Blur NSFW Image", tags=["image", "nsfw"], category="image", version="1.2.3")
class ImageNSFWBlurInvocation(BaseInvocation, WithMetadata, WithBoard):
    """Blurs the image heavily when the Stable Diffusion safety checker flags it; passes it on otherwise."""

    image: ImageField = InputField(description="The image to check")

    def invoke(self, context: "InvocationContext") -> ImageOutput:
        import numpy as np
        import torch
        from PIL import ImageFilter

        image = load_image(self, context, "image")
        rgb = image.convert("RGB")
        pixels = (np.asarray(rgb, dtype=np.float32) / 255.0)[None].transpose(0, 3, 1, 2)
        from invokeai_provider.models.model_manager.core_models import use_core_model

        with use_core_model(self, context, "image", SAFETY_CHECKER_PATH, _build_safety_checker,
                            what="a diffusers StableDiffusionSafetyChecker",
                            required=("config.json", "preprocessor_config.json")) as core, torch.no_grad():
            checker = core.model
            features = core.processor([rgb], return_tensors="pt").pixel_values.to(device=core.device,
                                                                                 dtype=checker.dtype)
            _, flagged = checker(images=pixels, clip_input=features)
        if flagged[0]:
            context.logger.warning("%s: image %s may be NSFW; blurring it", self.id, self.image.image_name)
            image = image.filter(ImageFilter.GaussianBlur(radius=32))
        return ImageOutput.build(context.images.save(image))
