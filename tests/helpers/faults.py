"""Makers of bad inputs for the fault suite: broken and unusual images, a dataset holding every kind of them,
hostile archives. (Misbehaving servers: servers.py; processes killed mid-way: processes.py.)"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.images import make_image

HUGE = (12000, 9000)


def _save(path: Path, im: Image.Image, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)


def halves(size: tuple[int, int] = (60, 40), left=(230, 20, 20), right=(20, 20, 230)) -> Image.Image:
    """Left half red, right half blue: makes a rotation visible in the pixels."""
    im = Image.new("RGB", size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def truncated_jpeg(path: Path, source: Path) -> None:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_jpeg(path: Path, source: Path) -> None:
    """Garbage in the middle of the entropy-coded data (headers intact)."""
    data = bytearray(source.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(range(7, 71))
    path.write_bytes(bytes(data))


def _png(path: Path, width: int, height: int, depth: int, colour_type: int, rows: bytes | None) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
    body = b"" if rows is None else chunk(b"IDAT", zlib.compress(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + body + chunk(b"IEND", b""))


def bad_crc_png(path: Path) -> None:
    """An 8-bit RGB PNG whose IDAT CRC is wrong: Pillow ignores IDAT CRCs and loads it, libpng (TensorFlow)
    rejects it with `Invalid PNG data`."""
    rows = b"".join(b"\0" + bytes(range(i, i + 3 * 24)) for i in range(16))
    _png(path, 24, 16, 8, 2, rows)
    data = bytearray(path.read_bytes())
    end = data.index(b"IEND") - 4  # the IDAT CRC is the 4 bytes before IEND's length field
    data[end - 4 : end] = bytes(b ^ 0xFF for b in data[end - 4 : end])
    path.write_bytes(bytes(data))


def png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit PNG, grey or RGB from the array's shape; Pillow can't write 16-bit colour itself."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)
    _png(path, arr.shape[1], arr.shape[0], 16, 0 if arr.ndim == 2 else 2, rows)


def bomb_png(path: Path, side: int = 30000) -> None:
    """A tiny file declaring a 30000x30000 image (2.7 GB decoded): a decompression bomb."""
    _png(path, side, side, 8, 2, None)


def large_png(path: Path, width: int, height: int, rgb: tuple[int, int, int] = (200, 100, 50)) -> Path:
    """A complete one-colour 8-bit RGB PNG, deflated 50 rows at a time: 18000x18000 (972 MB of pixels) is about
    1 MB on disk, made in about 3 s without ever holding the pixels."""
    deflate, row = zlib.compressobj(9), b"\0" + bytes(rgb) * width
    idat = b"".join(deflate.compress(row * min(50, height - r)) for r in range(0, height, 50)) + deflate.flush()
    _png(path, width, height, 8, 2, None)
    data = path.read_bytes()
    end = data.index(b"IEND") - 4  # the IDAT chunk goes before IEND's length field
    chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    path.write_bytes(data[:end] + chunk + data[end:])
    return path


def exif_rotated(path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    _save(path, halves(), quality=95, exif=exif)


def huge_jpeg(path: Path, size: tuple[int, int] = HUGE) -> None:
    _save(path, halves(size), quality=70)


def rgba_png(path: Path) -> None:
    im = halves().convert("RGBA")
    im.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black: must come out white
    _save(path, im)


def palette(path: Path, transparent: bool = False, **kw) -> None:
    im = halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    if transparent:
        kw["transparency"] = im.getpixel((0, 0))
    _save(path, im, **kw)


def animated_gif(path: Path) -> None:
    frames = [halves(), halves(left=(20, 230, 20))]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)


def cmyk_jpeg(path: Path) -> None:
    _save(path, halves().convert("CMYK"), quality=95)


def make_fault_dataset(raw: Path, per_class: int = 12) -> dict[str, str]:
    """raw/ as an archive would unpack it: a wrapper folder with class folders holding good images and every
    kind of fault, plus debris around it. Returns {path relative to raw: expected outcome}, where the outcome
    is "ok" (used as is), "converted" (an RGB PNG copy is used) or the start of the quarantine reason."""
    root = raw / "pets"
    for c, name in enumerate(("cats", "dogs")):
        for i in range(per_class):
            make_image(root / name / f"{name}.{i}.jpg", c, i)
    cats, good = root / "cats", root / "cats" / "cats.0.jpg"
    truncated_jpeg(cats / "truncated.jpg", good)
    corrupt_jpeg(cats / "corrupt_middle.jpg", good)
    bad_crc_png(cats / "bad_crc.png")
    (cats / "empty.jpg").touch()
    (cats / "text.jpg").write_text("this is not a picture\n")
    (cats / "notes.txt").write_text("labels checked by hand\n")
    (cats / "jpeg_named.png").write_bytes(good.read_bytes())
    rgba_png(cats / "alpha.png")
    _save(cats / "grey.jpg", halves().convert("L"))
    _save(cats / "grey.png", halves().convert("L"))
    _save(cats / "bilevel.png", halves().convert("1"))
    cmyk_jpeg(cats / "cmyk.jpg")
    png16(cats / "grey16.png", np.full((40, 60), 40000, np.uint16))
    png16(cats / "rgb16.png", np.dstack([np.full((40, 60), v, np.uint16) for v in (65535, 32768, 2760)]))
    palette(cats / "palette.gif")
    palette(cats / "palette_alpha.png", transparent=True)
    animated_gif(cats / "animated.gif")
    _save(cats / "lossless.webp", halves(), lossless=True)
    _save(cats / "palette.bmp", halves().convert("P", palette=Image.Palette.ADAPTIVE, colors=4))
    _save(cats / "photo.tif", halves())
    _save(cats / "float.tif", Image.fromarray(np.full((40, 60), 0.5, np.float32)))
    exif_rotated(cats / "exif6.jpg", 6)
    exif_rotated(cats / "exif8.jpg", 8)
    huge_jpeg(root / "dogs" / "huge.jpg")
    bomb_png(root / "dogs" / "bomb.png")
    make_image(cats / "nested" / "deeper" / "n.jpg", 0, 99)
    make_image(cats / ".thumbs" / "t.jpg", 0, 98)
    (cats / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (cats / "._cats.1.jpg").write_bytes(b"\0\5\26\7AppleDouble")
    (root / "birds").mkdir()
    (root / "birds" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # empty apart from macOS litter
    make_image(root / ".Trash" / "x.jpg", 1, 96)
    (root / "LICENSE.txt").write_text("CC-BY\n")
    (raw / "README.md").write_text("beside the wrapper folder\n")
    make_image(raw / "__MACOSX" / "pets" / "cats" / "m.jpg", 0, 97)
    expected = {f"pets/{n}/{n}.{i}.jpg": "ok" for n in ("cats", "dogs") for i in range(per_class)}
    expected.update(
        {
            f"pets/cats/{k}": v
            for k, v in {
                "truncated.jpg": "cannot decode",
                "bad_crc.png": "TensorFlow cannot decode: Invalid PNG data",
                "empty.jpg": "empty file",
                "text.jpg": "not an image",
                "notes.txt": "not an image file suffix",
                "jpeg_named.png": "ok",
                "alpha.png": "converted",
                "grey.jpg": "ok",
                "grey.png": "ok",
                "bilevel.png": "converted",
                "cmyk.jpg": "converted",
                "grey16.png": "converted",
                "rgb16.png": "ok",
                "palette.gif": "converted",
                "palette_alpha.png": "converted",
                "animated.gif": "converted",
                "lossless.webp": "converted",
                "palette.bmp": "converted",
                "photo.tif": "converted",
                "float.tif": "converted",
                "exif6.jpg": "converted",
                "exif8.jpg": "converted",
                "nested/deeper/n.jpg": "ok",
                ".thumbs/t.jpg": "hidden",
                ".DS_Store": "hidden",
                "._cats.1.jpg": "hidden",
                "corrupt_middle.jpg": "ok|cannot decode",  # libjpeg may repair it or give up: both are fine
            }.items()
        }
    )
    expected.update(
        {
            "pets/dogs/huge.jpg": "converted",
            "pets/dogs/bomb.png": "too large to decode safely",
            "pets/birds/.DS_Store": "hidden",
            "pets/.Trash/x.jpg": "inside a hidden folder",
            "pets/LICENSE.txt": "outside",
            "README.md": "outside",
            "__MACOSX/pets/cats/m.jpg": "outside",
        }
    )
    return expected


def tar_with(path: Path, name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    """A .tar.gz holding one good file and one entry `name` (a file, or a link to `link`)."""
    with tarfile.open(path, "w:gz") as tf:
        for entry, typ in (("ok/a.txt", tarfile.REGTYPE), (name, kind)):
            info = tarfile.TarInfo(entry)
            info.type, info.linkname = typ, link
            data = b"" if typ != tarfile.REGTYPE else b"payload"
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
