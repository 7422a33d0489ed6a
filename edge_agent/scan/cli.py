"""``edge-agent scan decode IMAGE...``: the decode engine over image files (DESIGN §4).

One JSON object per image on ``out``: ``{"image": PATH, "codes": [{"format", "text"}]}``. An
image that cannot be read gets ``"error"`` in its object and a message on stderr; the other
images are still decoded and the exit status is 1 at the end (0 when every image was read).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from edge_agent.scan.engine import DecodeEngine, ImageError, load_image

__all__ = ["decode_main"]

# A file on the command line is not a camera frame: give it time for every pass.
CLI_BUDGET_S = 2.0


def decode_main(paths: Sequence[str], out: TextIO) -> int:
    """Decode each image file and print one JSON object per image; 1 if any image failed."""
    engine = DecodeEngine(budget_s=CLI_BUDGET_S)
    status = 0
    for path in paths:
        record: dict[str, Any] = {"image": path, "codes": []}
        try:
            result = engine.decode(load_image(path))
        except ImageError as exc:
            record["error"] = str(exc)
            print(f"edge-agent scan decode: {exc}", file=sys.stderr)
            status = 1
        else:
            record["codes"] = [{"format": c.format, "text": c.text} for c in result.codes]
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    return status
