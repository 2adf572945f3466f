"""piorch: record a Raspberry Pi camera straight to a laptop over one Ethernet cable.

`from orchestrator import Camera` is the Python API (orchestrator/api.py); it is imported on first use,
so the command line never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Camera", "Frame", "__version__"]

if TYPE_CHECKING:
    from orchestrator.api import Camera, Frame


def __getattr__(name: str) -> Any:
    if name in ("Camera", "Frame"):
        from orchestrator import api

        return getattr(api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
