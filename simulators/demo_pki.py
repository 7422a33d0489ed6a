"""The demo's identities, made the way a fleet makes them: ``hub-bridge ca init`` on the hub, a
``hub-bridge claim create`` per device, ``edge-agent provision`` on each "device" (a folder here),
and a mosquitto that enforces DESIGN §2 with the shipped ACL (TLS, client certificates, the
certificate's CN as the user name and client id, the CRL).

Every step runs the real command line, as a technician would; the demo then adapts each
provisioned device file to its simulators (GNSS on a socket, the docks' devices, free ports) and
keeps what provisioning wrote: the broker URL and the device's certificate, key and CA.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from simulators.broker import Mosquitto, TlsFiles

__all__ = ["DemoPki"]

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_ACL = ROOT / "firmware_configs" / "mosquitto.acl"


class DemoPki:
    """The fleet CA and the provisioned devices of one demo run (module docstring)."""

    def __init__(self, work: Path, env: dict[str, str], broker_port: int, api_port: int) -> None:
        self.work = work
        self.env = env
        self.dir = work / "pki"
        self.broker_port = broker_port
        self.api_port = api_port

    def hub_sections(self) -> dict[str, Any]:
        """The hub configuration's broker (over TLS, as the hub's own identity) and pki."""
        return {
            "broker": {
                "url": f"mqtts://127.0.0.1:{self.broker_port}",
                "tls": {
                    "ca": str(self.dir / "ca.crt"),
                    "cert": str(self.dir / "hub.crt"),
                    "key": str(self.dir / "hub.key"),
                },
            },
            "pki": {
                "dir": str(self.dir),
                "broker_url": f"mqtts://127.0.0.1:{self.broker_port}",
                "hub_api_url": f"http://127.0.0.1:{self.api_port}",
            },
        }

    def _run(self, *argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *argv],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def init_ca(self, hub_config: Path) -> None:
        """``hub-bridge ca init``: the fleet CA, the hub's and the broker's certificates."""
        self._run("hub_bridge", "ca", "init", "--config", str(hub_config))

    def broker(self) -> Mosquitto:
        """A mosquitto on the broker port with the CA's broker certificate and the shipped ACL."""
        return Mosquitto(
            port=self.broker_port,
            tls=TlsFiles(self.dir / "ca.crt", self.dir / "broker.crt", self.dir / "broker.key"),
            acl=SHIPPED_ACL,
            crl=self.dir / "crl.pem",
            use_identity_as_username=True,
            use_username_as_clientid=True,
        )

    def provision(self, hub_config: Path, device: str, role: str) -> dict[str, Any]:
        """A claim on the hub, then ``edge-agent provision`` in the device's own folder; returns
        the device file it wrote (as loaded)."""
        claim = json.loads(
            self._run(
                "hub_bridge", "claim", "create", "--config", str(hub_config),
                "--fleet", "acme", "--device", device, "--role", role, "--json",
            )
        )  # fmt: skip
        folder = self.work / "devices" / device
        self._run(
            "edge_agent", "provision", "--claim", claim["claim"],
            "--config-dir", str(folder), "--state-dir", str(folder / "state"), "--no-enable",
        )  # fmt: skip
        loaded: dict[str, Any] = yaml.safe_load((folder / f"{device}.yaml").read_text())
        return loaded
