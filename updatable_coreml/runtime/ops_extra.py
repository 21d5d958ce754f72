"""Forward ops of the reference runtime beyond the core set (work in progress)."""

from __future__ import annotations
