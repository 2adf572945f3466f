"""piorch: record a Raspberry Pi camera straight to a laptop over one Ethernet cable."""

__version__ = "0.1.0"
