"""Check that an image decodes (with Pillow, then with TensorFlow's decoder for files kept as they are), and
normalise the ones TensorFlow would read wrongly.

TensorFlow's decoders read baseline RGB/grey JPEG and 8-bit PNG faithfully. Everything else (CMYK,
alpha, palette, 16-bit, EXIF-rotated, GIF/WebP/BMP/TIFF, huge) is converted once here to an RGB PNG so
that extraction, fine-tuning and prediction all see the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 4096  # larger images are downscaled on conversion; far above any backbone input size
# Pixels decoded per image, at most, checked from the header before decoding (a JPEG counts at the reduced scale
# it is decoded at). A decode takes up to 4 bytes a pixel plus the downscaled copies: about 0.45 GB at the bound
# (benchmarks/bounds.py), while a 48 MP phone photo passes. The served model's own bound defaults to this.
MAX_MEGAPIXELS = 64
# Pillow's check reads the declared size, before a JPEG's reduced-scale decode is set up: `decode_bound` does it.
Image.MAX_IMAGE_PIXELS = None
_TF_NATIVE = {"JPEG", "PNG"}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Checked:
    """Outcome for one file: `reason` is set when it must be quarantined."""

    reason: str | None = None
    converted: bool = False
    width: int = 0
    height: int = 0


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit or float grey: scale to 8 bits, don't clip
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max(initial=0)
        if im.mode.startswith("I;16") or top > 255:
            peak = 65535.0
        else:
            peak = 1.0 if im.mode == "F" and top <= 1 else 255.0  # float images mostly hold 0..1
        im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def _tf_checked(path: Path, width: int, height: int) -> Checked:
    """A file kept as it is must also pass training's own decoder: libpng/libjpeg reject some files Pillow
    tolerates (e.g. a PNG whose IDAT CRC is wrong), which would otherwise stop extract mid-run."""
    from pipeline.model.inputs import decode_error  # TensorFlow: imported in the worker, never before the fork

    reason = decode_error(path)
    return Checked(f"TensorFlow cannot decode: {reason}") if reason else Checked(width=width, height=height)


def _decode_size(im: Image.Image) -> tuple[int, int]:
    """The size `im` will be decoded at: a large JPEG is set up to decode at the smallest of 1/2, 1/4, 1/8 scale
    still at least as large as its downscaled size (no pixels are decoded here)."""
    if max(im.size) > MAX_SIDE and im.format == "JPEG":
        fit = MAX_SIDE / max(im.size)
        im.draft("RGB", (max(1, int(im.width * fit)), max(1, int(im.height * fit))))
    return im.size


def decode_bound(im: Image.Image, max_megapixels: int = MAX_MEGAPIXELS) -> str | None:
    """Why `im` (opened, not loaded) is too large to decode: its decoded size is above `max_megapixels`."""
    width, height = _decode_size(im)
    if width * height <= max_megapixels * 1_000_000:
        return None
    return (
        f"too large to decode safely: {width}x{height} px is {width * height / 1e6:.0f} MP decoded, "
        f"above the bound of {max_megapixels} MP per image"
    )


def over_bound(path: Path, max_megapixels: int = MAX_MEGAPIXELS) -> str | None:
    """`decode_bound` of the file at `path` from its header alone; None also when it is no readable image
    (check_image says why)."""
    try:
        with Image.open(path) as im:
            return decode_bound(im, max_megapixels)
    except Exception:  # not an image or a broken header: not this check's to report
        return None


def check_image(path: Path, converted_path: Path, max_megapixels: int = MAX_MEGAPIXELS) -> Checked:
    """Fully decode `path`, unless its header declares more than `max_megapixels` decoded; write an RGB PNG to
    `converted_path` when TensorFlow can't read it as is."""
    try:
        if path.stat().st_size == 0:
            return Checked("empty file")
        with Image.open(path) as im:
            big = max(im.size) > MAX_SIDE  # the declared size: a JPEG decoded at reduced scale is still converted
            if reason := decode_bound(im, max_megapixels):
                return Checked(reason)
            fmt = im.format
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            im.load()  # raises on truncated or corrupt data
            needs = (
                fmt not in _TF_NATIVE
                or im.mode not in ("RGB", "L")
                or orientation != 1
                or big
                or getattr(im, "n_frames", 1) > 1
            )
            if not needs:
                return _tf_checked(path, im.width, im.height)
            if big:  # shrink in place before any copy, so memory stays near one decoded image
                im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            out = _to_rgb(ImageOps.exif_transpose(im))
    except UnidentifiedImageError:
        return Checked("not an image (unrecognised format)")
    except (PermissionError, FileNotFoundError, IsADirectoryError) as err:
        return Checked(f"cannot read: {err}")
    except Exception as err:  # Pillow raises many types on corrupt data; one bad file must not stop the run
        return Checked(f"cannot decode: {type(err).__name__}: {err}")
    converted_path.parent.mkdir(parents=True, exist_ok=True)
    out.save(converted_path, format="PNG")
    return Checked(converted=True, width=out.width, height=out.height)
