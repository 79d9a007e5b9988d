"""Check that an image decodes (with Pillow, then with TensorFlow's decoder for files kept as they are), and
normalise the ones TensorFlow would read wrongly.

TensorFlow's decoders read baseline RGB/grey JPEG and 8-bit PNG faithfully. Everything else (CMYK,
alpha, palette, 16-bit, EXIF-rotated, GIF/WebP/BMP/TIFF, huge) is converted once here to an RGB PNG so
that extraction, fine-tuning and prediction all see the same pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_SIDE = 4096  # larger images are downscaled on conversion; far above any backbone input size
Image.MAX_IMAGE_PIXELS = 400_000_000  # allow e.g. 12000x9000 photos; we downscale them right away
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


def check_image(path: Path, converted_path: Path) -> Checked:
    """Fully decode `path`; write an RGB PNG to `converted_path` when TensorFlow can't read it as is."""
    try:
        if path.stat().st_size == 0:
            return Checked("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                fmt = im.format
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
                big = max(im.size) > MAX_SIDE
                if big and fmt == "JPEG":
                    im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode at reduced scale: fast, same check
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return Checked(f"too large to decode safely: {err}")
    except (PermissionError, FileNotFoundError, IsADirectoryError) as err:
        return Checked(f"cannot read: {err}")
    except Exception as err:  # Pillow raises many types on corrupt data; one bad file must not stop the run
        return Checked(f"cannot decode: {type(err).__name__}: {err}")
    converted_path.parent.mkdir(parents=True, exist_ok=True)
    out.save(converted_path, format="PNG")
    return Checked(converted=True, width=out.width, height=out.height)
