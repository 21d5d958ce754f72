"""The toolkit every frontend shares: naming, refusals, selection by name, pooling geometry,
and the coremltools fallback for pipeline backbones."""

from __future__ import annotations

from ...compose import free_name as unique_name
from .pooling import ceil_mode_padding

__all__ = ["ceil_mode_padding", "unique_name"]
