"""Barcode scanning: decode engine, GS1, cameras, text scanners and scan dedup."""
