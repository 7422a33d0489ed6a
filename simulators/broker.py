"""A private mosquitto on a free loopback port, for the demo, tests and benchmarks.

It runs without persistence on purpose: the fault tests kill and restart it, and nothing may be
lost even then (DESIGN §3.2).

Plain (``Mosquitto()``: anonymous, no TLS), mutual TLS (``Mosquitto(tls=...)``), or the fleet's
broker as ``firmware_configs/mosquitto.conf`` sets it up (DESIGN §2)::

    Mosquitto(tls=TlsFiles(ca, broker_crt, broker_key), acl=Path("mosquitto.acl"), crl=crl_pem,
              use_identity_as_username=True, use_username_as_clientid=True)

``reload()`` sends SIGHUP: mosquitto 2.0.11 then reads the ACL, the certificates and the CRL
again (new connections only; an open connection stays up).
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mosquitto", "TlsFiles", "free_port", "self_signed"]

_RELOADING = "Reloading config."
_RUNNING = " running\n"  # "mosquitto version 2.0.11 running"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A CA file and a certificate with its key (PEM)."""

    ca: Path
    cert: Path
    key: Path


def self_signed(folder: Path, name: str = "localhost") -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 that is its own CA (made with openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return TlsFiles(cert, cert, key)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """One mosquitto process: ``start()``, ``kill()``, ``restart()`` on the same port."""

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        tls: TlsFiles | None = None,
        host: str = "127.0.0.1",
        *,
        acl: Path | None = None,
        crl: Path | None = None,
        require_certificate: bool = True,
        use_identity_as_username: bool = False,
        use_username_as_clientid: bool = False,
    ) -> None:
        if (crl is not None or use_identity_as_username) and tls is None:
            raise ValueError("a CRL and certificate identities need TLS (tls=TlsFiles(...))")
        if use_identity_as_username and not require_certificate:
            raise ValueError("use_identity_as_username needs require_certificate")
        self.host = host
        self.port = port or free_port()
        self.tls = tls
        self.acl = acl
        """mosquitto's ``acl_file`` (``firmware_configs/mosquitto.acl``); anonymous clients are
        then refused too."""
        self.crl = crl
        self.require_certificate = require_certificate
        self.use_identity_as_username = use_identity_as_username
        self.use_username_as_clientid = use_username_as_clientid
        found = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(found).exists():
            raise FileNotFoundError(
                "mosquitto is not installed: run scripts/setup (apt-get install mosquitto)"
            )
        self.binary = found
        self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT`` (``mqtts://`` with TLS)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def log(self) -> str:
        """What mosquitto logged so far (errors only: refused TLS handshakes among them)."""
        path = self._dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def config_text(self) -> str:
        """The configuration ``start()`` writes and runs."""
        secured = self.acl is not None or self.use_identity_as_username
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if secured else 'true'}",
            "persistence false",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type error",
            "log_type information",  # "Reloading config.": reload() waits for it
            # run as whoever started us: mosquitto started by root would otherwise become the
            # "mosquitto" user and fail to read the test's private key and folders
            f"user {getpass.getuser()}",
        ]
        if self.tls is not None:
            # by default clients must present a certificate signed by the CA: mutual TLS, as
            # in the field
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
                f"require_certificate {str(self.require_certificate).lower()}",
            ]
        if self.crl is not None:
            lines.append(f"crlfile {self.crl}")
        if self.use_identity_as_username:
            lines.append("use_identity_as_username true")
        if self.use_username_as_clientid:
            lines.append("use_username_as_clientid true")
        if self.acl is not None:
            lines.append(f"acl_file {self.acl}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections and says it is running.

        Mosquitto listens before it sets up its signal handlers and logs "running" after: a
        SIGHUP (``reload``) in between would end it (SIGHUP's default action)."""
        conf = self._dir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = self._dir / "mosquitto.log"
        running = self.log.count(_RUNNING)
        with log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=sink
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    if self.log.count(_RUNNING) > running:
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP (``systemctl reload``): mosquitto reads its ACL, certificates and CRL again.

        Returns once mosquitto has begun the reload: it runs in one thread, so every
        connection it accepts from then on sees the new files."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("mosquitto is not running")
        before = self.log.count(_RELOADING)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log.count(_RELOADING) == before:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited on reload: {self.log[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mosquitto did not reload within {timeout}s")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the broker (nothing it held survives: it has no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Terminate the broker and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
