"""The import structure issue 14 asks for, checked from the code itself.

- ``edge_agent.wire`` imports nothing of the project but itself;
- ``edge_agent.platform`` imports only ``edge_agent.wire`` and itself;
- ``edge_agent.drivers`` (when present) imports only the two layers below it and itself;
- ``hub_bridge`` imports nothing of the agent outside ``wire`` and ``platform``, and a hub process
  loads no camera, barcode, NMEA, serial or geometry library;
- ``edge_agent/__init__.py`` imports nothing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def project_imports(folder: Path) -> dict[str, set[str]]:
    """Every project module each file of ``folder`` imports (absolute names)."""
    out: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        out[str(path.relative_to(ROOT))] = {
            n for n in names if n.split(".")[0] in ("edge_agent", "hub_bridge", "simulators")
        }
    return out


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# The one deliberate crossing, each with its reason; the hub process never imports it (checked
# below): `hub-bridge eta replay` runs the agent's GNSS pipeline and trip engine in front of the
# hub's ETA, as on a van (DESIGN §9), and so needs the `agent` extra.
CROSSINGS = {
    "hub_bridge/delivery/replay.py": ("edge_agent.gnss", "edge_agent.trips"),
}


@pytest.mark.parametrize(
    ("layer", "may_import"),
    [
        ("edge_agent/wire", ("edge_agent.wire",)),
        ("edge_agent/platform", ("edge_agent.wire", "edge_agent.platform")),
        ("edge_agent/drivers", ("edge_agent.wire", "edge_agent.platform", "edge_agent.drivers")),
        ("hub_bridge", ("edge_agent.wire", "edge_agent.platform", "hub_bridge")),
    ],
)
def test_each_layer_imports_only_what_is_below_it(layer: str, may_import: tuple[str, ...]) -> None:
    folder = ROOT / layer
    if layer == "edge_agent/drivers" and not folder.exists():
        pytest.skip("edge_agent/drivers does not exist in this checkout")
    wrong = {
        f"{path} imports {name}"
        for path, names in project_imports(folder).items()
        for name in names
        if not allowed(name, may_import + CROSSINGS.get(path, ()))
    }
    assert not wrong, sorted(wrong)


def test_the_agent_package_face_imports_nothing() -> None:
    tree = ast.parse((ROOT / "edge_agent/__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_a_hub_process_loads_no_agent_domain_or_device_library() -> None:
    code = (
        "import sys, hub_bridge.cli, hub_bridge.bridge, hub_bridge.api, hub_bridge.timeline\n"
        "heavy = ('cv2', 'zxingcpp', 'pyzbar', 'evdev', 'pynmea2', 'serial', 'shapely', 'numpy',"
        " 'gpiod')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy or (m.startswith("
        "'edge_agent.') and m.split('.')[1] not in ('wire', 'platform')))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
