"""Which files of a folder make a dataset: what download copies from a local folder and prepare reads from raw/."""

from __future__ import annotations

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def is_visible(name: str) -> bool:
    """False for hidden names: .DS_Store, ._resource forks, .ssh, and macOS zips' __MACOSX folder."""
    return not (name.startswith(".") or name == "__MACOSX")
