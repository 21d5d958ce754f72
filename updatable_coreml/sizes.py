"""One way to print a file size, so ``inspect``, the export report and the demo agree."""

from __future__ import annotations


def format_size(size: int) -> str:
    """Binary units named as such: ``512 B``, ``151.2 KiB``, ``4.0 MiB`` (never ``0.00 MB``)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
