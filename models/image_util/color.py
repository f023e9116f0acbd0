"""Colour maths for the image nodes, on numpy arrays: sRGB <-> linear sRGB, HSL and HSV, Oklab and Oklch with
Ottosson's adaptive gamut clip, Okhsl and Okhsv, CIE L*a*b* / LCh (D65), and littleCMS's sRGB <-> CIELab
transforms.

Arrays hold one colour per position along the last axis ([..., 3]) as floats; sRGB, HSL and HSV channels are
in 0..1 except hues, which are in degrees. Oklab and its derived spaces are Björn Ottosson's published
definitions. numpy and Pillow are imported inside the functions, so the node modules that import this one
stay light to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import numpy as np

# --- matrices -------------------------------------------------------------------------------------------

_RGB_TO_LMS = ((0.4122214708, 0.5363325363, 0.0514459929), (0.2119034982, 0.6806995451, 0.1073969566),
               (0.0883024619, 0.2817188376, 0.6299787005))
_LMS_TO_LAB = ((0.2104542553, 0.7936177850, -0.0040720468), (1.9779984951, -2.4285922050, 0.4505937099),
               (0.0259040371, 0.7827717662, -0.8086757660))
_LAB_TO_LMS = ((1.0, 0.3963377774, 0.2158037573), (1.0, -0.1055613458, -0.0638541728),
               (1.0, -0.0894841775, -1.2914855480))
_LMS_TO_RGB = ((4.0767416621, -3.3077115913, 0.2309699292), (-1.2684380046, 2.6097574011, -0.3413193965),
               (-0.0041960863, -0.7034186147, 1.7076147010))

_SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750),
                (0.0193339, 0.1191920, 0.9503041))
_D65 = (0.95047, 1.0, 1.08883)


def _mat(matrix: Any, values: "np.ndarray") -> "np.ndarray":
    """``matrix`` applied to every colour of ``values``.

    The work is done on channel planes (the channel axis moved first, as ``_stack`` stores it): the sums of
    products then run in the order the image nodes' results have always been computed in, which matters
    where a blend lands exactly between two 8-bit values.
    """
    import numpy as np

    planes = np.einsum("ij,j...->i...", np.asarray(matrix, dtype=np.float64), np.moveaxis(values, -1, 0))
    return np.moveaxis(planes, 0, -1)


def _stack(*channels: Any) -> "np.ndarray":
    """Channel arrays as one [..., n] colour array, stored as planes (channel-major) for ``_mat``."""
    import numpy as np

    return np.moveaxis(np.stack(channels), 0, -1)


# --- sRGB transfer curve ---------------------------------------------------------------------------------


def linear_from_srgb(srgb: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return np.where(srgb <= 0.04045, srgb / 12.92, ((np.maximum(srgb, 0.04045) + 0.055) / 1.055) ** 2.4)


def srgb_from_linear(linear: "np.ndarray") -> "np.ndarray":
    import numpy as np

    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


# --- HSL / HSV (hue in degrees) ---------------------------------------------------------------------------


def _hue_degrees(rgb: "np.ndarray", high: "np.ndarray", chroma: "np.ndarray") -> "np.ndarray":
    import numpy as np

    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(chroma == 0, 1.0, chroma)
    hue = np.where(high == r, ((g - b) / safe) % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return np.where(chroma == 0, 0.0, hue * 60.0)


def hsl_from_srgb(rgb: "np.ndarray") -> "np.ndarray":
    import numpy as np

    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = high - low
    lightness = (high + low) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(chroma == 0, 0.0, chroma / (1 - np.abs(2 * lightness - 1)))
    return _stack(_hue_degrees(rgb, high, chroma), np.nan_to_num(saturation), lightness)


def hsv_from_srgb(rgb: "np.ndarray") -> "np.ndarray":
    import numpy as np

    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(high == 0, 0.0, chroma / high)
    return _stack(_hue_degrees(rgb, high, chroma), np.nan_to_num(saturation), high)


def _srgb_from_hue_chroma(hue: "np.ndarray", chroma: "np.ndarray", offset: "np.ndarray") -> "np.ndarray":
    import numpy as np

    sector = (np.remainder(hue, 360.0) / 60.0)
    second = chroma * (1 - np.abs(sector % 2 - 1))
    zero = np.zeros_like(chroma)
    index = np.floor(sector).astype(int) % 6
    r = np.choose(index, [chroma, second, zero, zero, second, chroma])
    g = np.choose(index, [second, chroma, chroma, second, zero, zero])
    b = np.choose(index, [zero, zero, second, chroma, chroma, second])
    return _stack(r, g, b) + offset[..., None]


def srgb_from_hsl(hsl: "np.ndarray") -> "np.ndarray":
    import numpy as np

    saturation, lightness = np.clip(hsl[..., 1], 0, 1), np.clip(hsl[..., 2], 0, 1)
    chroma = (1 - np.abs(2 * lightness - 1)) * saturation
    return _srgb_from_hue_chroma(hsl[..., 0], chroma, lightness - chroma / 2)


def srgb_from_hsv(hsv: "np.ndarray") -> "np.ndarray":
    import numpy as np

    saturation, value = np.clip(hsv[..., 1], 0, 1), np.clip(hsv[..., 2], 0, 1)
    chroma = value * saturation
    return _srgb_from_hue_chroma(hsv[..., 0], chroma, value - chroma)


# --- Oklab, Oklch, gamut clipping, Okhsl, Okhsv ---------------------------------------------------------


def oklab_from_linear(linear: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return _mat(_LMS_TO_LAB, np.cbrt(_mat(_RGB_TO_LMS, linear)))


def linear_from_oklab(lab: "np.ndarray", *, exact_inverse: bool = False) -> "np.ndarray":
    """Linear sRGB of Oklab values: through Ottosson's published inverse matrices, or with ``exact_inverse``
    through the computed inverses of the forward ones (what the layer blend uses; the two differ by up to
    about 3e-7, enough to move an 8-bit value now and then)."""
    if exact_inverse:
        import numpy as np

        return _mat(np.linalg.inv(_RGB_TO_LMS), _mat(np.linalg.inv(_LMS_TO_LAB), lab) ** 3)
    return _mat(_LMS_TO_RGB, _mat(_LAB_TO_LMS, lab) ** 3)


def _hue_angle(lab: "np.ndarray") -> "np.ndarray":
    """The hue of Oklab values in degrees, 0..360."""
    import numpy as np

    return np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0


def oklch_from_oklab(lab: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return _stack(lab[..., 0], np.hypot(lab[..., 1], lab[..., 2]), _hue_angle(lab))


def oklab_from_oklch(lch: "np.ndarray") -> "np.ndarray":
    import numpy as np

    hue = np.radians(lch[..., 2])
    return _stack(lch[..., 0], lch[..., 1] * np.cos(hue), lch[..., 1] * np.sin(hue))


def _lab_rows(L: Any, a: Any, b: Any) -> tuple[Any, Any, Any]:  # noqa: N803 - colour-science names
    """Linear r, g, b of Oklab (L, a, b) arrays."""
    import numpy as np

    lab = _stack(*np.broadcast_arrays(L, a, b))
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
    clipped = linear_from_oklab(_stack(l_clip, c_clip * a, c_clip * b))
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
    hue = _hue_angle(lab)
    return _stack(hue, np.clip(sat, 0.0, 1.0), _toe(np.clip(lab[..., 0], 0.0, 1.0)))


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
    linear = linear_from_oklab(_stack(lightness, chroma * a, chroma * b))
    out = srgb_from_linear(linear)
    out = np.where((hsl[..., 2] >= 1.0)[..., None], 1.0, out)
    return np.where((hsl[..., 2] <= 0.0)[..., None], 0.0, out)


def _okhsv_cusp(a: "np.ndarray", b: "np.ndarray", steps: int) -> tuple["np.ndarray", "np.ndarray"]:
    """Okhsv's T_max and k for each hue, from the hue's gamut cusp."""
    cl, cc = _cusp(a, b, steps)
    s_max, t_max = cc / cl, cc / (1 - cl)
    return t_max, 1 - 0.5 / s_max


def _okhsv_scale(l_v: "np.ndarray", c_v: "np.ndarray", a: "np.ndarray", b: "np.ndarray") -> "np.ndarray":
    """How far Okhsv's value triangle at (L_v, C_v) is scaled to reach the gamut (Ottosson's scale_L)."""
    import numpy as np

    l_vt = _toe_inv(l_v)
    c_vt = c_v * l_vt / l_v
    r, g, bl = _lab_rows(l_vt, a * c_vt, b * c_vt)
    return np.cbrt(1.0 / np.maximum(np.maximum(np.maximum(r, g), bl), 0.0))


def okhsv_from_srgb(srgb: "np.ndarray", steps: int = 1) -> "np.ndarray":
    """Okhsv (hue in degrees, saturation and value in [0, 1])."""
    import numpy as np

    lab = oklab_from_linear(linear_from_srgb(srgb))
    chroma, a, b = _hue_units(lab)
    lightness = lab[..., 0]
    t_max, k = _okhsv_cusp(a, b, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = t_max / (chroma + lightness * t_max)
        l_v, c_v = t * lightness, t * chroma
        scale = _okhsv_scale(l_v, c_v, a, b)
        lightness, chroma = lightness / scale, chroma / scale
        toe_l = _toe(lightness)
        value = np.nan_to_num(toe_l / l_v)
        sat = np.nan_to_num((0.5 + t_max) * c_v / (t_max * 0.5 + t_max * k * c_v))
    hue = _hue_angle(lab)
    return _stack(hue, np.clip(sat, 0.0, 1.0), np.clip(value, 0.0, 1.0))


def srgb_from_okhsv(hsv: "np.ndarray", steps: int = 1) -> "np.ndarray":
    import numpy as np

    a, b = _unit_hue(hsv[..., 0])
    sat, value = hsv[..., 1], hsv[..., 2]
    t_max, k = _okhsv_cusp(a, b, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = 0.5 + t_max - t_max * k * sat
        l_v = 1 - sat * 0.5 / denom
        c_v = sat * t_max * 0.5 / denom
        lightness, chroma = value * l_v, value * c_v
        l_new = _toe_inv(lightness)
        chroma = np.nan_to_num(chroma * l_new / lightness)
        lightness = l_new
        scale = _okhsv_scale(l_v, c_v, a, b)
        lightness, chroma = lightness * scale, chroma * scale
    linear = linear_from_oklab(_stack(lightness, chroma * a, chroma * b))
    return np.where((value <= 0.0)[..., None], 0.0, srgb_from_linear(np.nan_to_num(linear)))


# --- CIE L*a*b* / LCh (D65) ------------------------------------------------------------------------------


def cielch_from_linear(linear: "np.ndarray") -> "np.ndarray":
    """CIE LCh (D65) with L and chroma scaled as InvokeAI's 8-bit Lab planes: L in 0..1, a/b in about -1..1,
    hue in radians."""
    import numpy as np

    xyz = _mat(_SRGB_TO_XYZ, linear) / np.asarray(_D65)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = (116 * f[..., 1] - 16) / 100
    a, b = 500 * (f[..., 0] - f[..., 1]) / 127.5, 200 * (f[..., 1] - f[..., 2]) / 127.5
    return _stack(lightness, np.hypot(a, b), np.arctan2(b, a))


def linear_from_cielch(lch: "np.ndarray") -> "np.ndarray":
    import numpy as np

    a, b = lch[..., 1] * np.cos(lch[..., 2]) * 127.5, lch[..., 1] * np.sin(lch[..., 2]) * 127.5
    fy = (np.clip(lch[..., 0], 0, 1) * 100 + 16) / 116
    f = _stack(fy + a / 500, fy, fy - b / 200)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.asarray(_D65)
    return _mat(np.linalg.inv(_SRGB_TO_XYZ), xyz)


def cielab_transforms() -> tuple[Any, Any]:
    """sRGB <-> CIELab (D65) transforms with Pillow's littleCMS, as InvokeAI's CIELab options use."""
    from PIL import ImageCms

    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB", colorTemp=6500)
    flags = 0x2400  # no white-point fix-up, no cache: the same conversion InvokeAI builds
    to_lab = ImageCms.buildTransformFromOpenProfiles(srgb, lab, "RGB", "LAB", renderingIntent=2, flags=flags)
    to_rgb = ImageCms.buildTransformFromOpenProfiles(lab, srgb, "LAB", "RGB", renderingIntent=2, flags=flags)
    return to_lab, to_rgb

