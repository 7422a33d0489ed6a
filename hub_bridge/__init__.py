"""Hub bridge: validates, de-duplicates and orders every device's events into one timeline."""

__version__ = "0.4.4"
