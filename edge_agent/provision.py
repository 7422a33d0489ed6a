"""``edge-agent provision``: a device gets its identity from a claim (DESIGN §10, issue 10).

What it does, one printed line per step, so it reads the same over SSH and on a console::

    preflight   the claim parsed, the folders writable, the profile found and valid
    key         device.key loaded, or an EC P-256 key made here (it never leaves the device)
    claim       POST {hub_api}/v1/provision {"claim", "csr"}: the hub signs, CN {fleet}/{device}
    check       the certificate holds our public key, is directly issued by the CA in the
                answer, is for {fleet}/{device} as the answer says, and is not expired
    write       device.key (0600), ca.crt, device.crt, api-token (0600), {device}.yaml,
                each atomically, owned by the service user when run as root
    service     systemctl enable --now edge-agent@{device}.service

Everything that can be checked before the claim is spent is checked first (folders, profile,
an existing key), and nothing is written before the hub's answer has passed its checks: a refused
claim (403), a bad answer or a dead link leave the folders as they were. Re-running is safe: the
key is kept, and when ``device.crt`` holds it, chains to ``ca.crt``, is still valid and the device
file exists, no claim is needed at all.

Exit codes: 0 provisioned (or already); 1 refused: the hub refused the claim or the CSR, or its
answer failed the checks; 2 usage: a bad command line, folder, profile or key (nothing spent);
3 the hub could not be reached (or answered 5xx): try again, the claim is still good;
4 provisioned, but a local step after the answer failed (a file could not be written, the unit
could not be enabled): the line says what to run.

Errors (one tree, each carrying its exit code)::

    ProvisionError (exit_code)
    ├── UsageError       2
    ├── Refused          1
    ├── Unreachable      3
    └── LocalFailure     4

The module imports ``cryptography`` only when it runs, so wiring ``add_parser`` into the
command line costs ``edge-agent run`` nothing at start.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

__all__ = [
    "CLAIM_PREFIX",
    "Claim",
    "Identity",
    "LocalFailure",
    "Options",
    "ProvisionError",
    "Refused",
    "Unreachable",
    "UsageError",
    "add_parser",
    "check_answer",
    "check_certificate",
    "device_config",
    "parse_claim",
    "provision",
    "run",
]

CLAIM_PREFIX = "lmclaim:"
Role = Literal["van", "station"]
ROLES: tuple[Role, ...] = ("van", "station")
PROFILES: dict[Role, str] = {"van": "van-gateway.yaml", "station": "station.yaml"}
"""The firmware_configs/ profile each role's device file is written from."""

KEY_FILE, CERT_FILE, CA_FILE, TOKEN_FILE = "device.key", "device.crt", "ca.crt", "api-token"
DEFAULT_CONFIG_DIR, DEFAULT_STATE_DIR = Path("/etc/edge-agent"), Path("/var/lib/edge-agent")
HUB_TIMEOUT_S = 20.0
MAX_ANSWER_BYTES = 1024 * 1024
_IDENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # DESIGN §2's fleet and device names
# the token is 32 random bytes in url-safe base64 (43 characters); allow some room for changes
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}={0,2}$")


class ProvisionError(Exception):
    """A step failed; ``exit_code`` is what the command exits with."""

    exit_code = 1


class UsageError(ProvisionError):
    """A bad command line, folder, profile or key: nothing was sent, the claim is unspent."""

    exit_code = 2


class Refused(ProvisionError):
    """The hub refused (403 claim, 400 CSR, 429 rate limit) or its answer failed the checks."""

    exit_code = 1


class Unreachable(ProvisionError):
    """No answer from the hub (connection, DNS, timeout, TLS, 5xx): the claim is still good."""

    exit_code = 3


class LocalFailure(ProvisionError):
    """Provisioned, but writing a file or enabling the unit failed afterwards."""

    exit_code = 4


# ---------------------------------------------------------------------------------------------
# pure parts: the claim, the answer, the device file


@dataclass(frozen=True, slots=True)
class Claim:
    """Where to exchange the claim (the hub API's base URL) and the token."""

    hub_api: str
    token: str


def parse_claim(claim: str | None, hub: str | None) -> Claim | None:
    """The claim from ``--claim`` (a token or ``lmclaim:{hub_api}#{token}``) and ``--hub``.

    ``--hub`` wins over the URL inside the claim text (a technician behind another route to the
    hub). Returns None without a claim; raises UsageError on a malformed one.
    """
    if hub is not None:
        hub = _check_hub_url(hub, "--hub")
    if claim is None:
        return None
    text = claim.strip()
    if text.startswith(CLAIM_PREFIX):
        url, sep, token = text[len(CLAIM_PREFIX) :].rpartition("#")
        if not sep:
            raise UsageError("--claim: lmclaim: text without '#TOKEN' (copy the whole line)")
        url = _check_hub_url(url, "--claim")
        hub = hub or url
    else:
        token = text
    if not _TOKEN.match(token):
        raise UsageError("--claim: not a claim token (url-safe base64, as claim create prints it)")
    if hub is None:
        raise UsageError("--hub URL is needed with a bare token (or pass the lmclaim: text)")
    return Claim(hub.rstrip("/"), token)


def _check_hub_url(url: str, where: str) -> str:
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where}: {url!r} is not an http:// or https:// URL of the hub API")
    try:
        _ = parts.port
    except ValueError:
        raise UsageError(f"{where}: {url!r}: bad port") from None
    return url.strip()


@dataclass(frozen=True, slots=True)
class Identity:
    """What a checked answer (or an existing certificate) says this device is."""

    fleet: str
    device: str
    role: Role
    certificate: bytes
    ca: bytes
    broker: str
    hub_api: str | None
    not_after: dt.datetime

    @property
    def name(self) -> str:
        """``{fleet}/{device}``: the certificate's CN and the MQTT username."""
        return f"{self.fleet}/{self.device}"


def check_certificate(
    cert_pem: bytes, ca_pem: bytes, key: EllipticCurvePrivateKey, now: dt.datetime
) -> tuple[str, str, dt.datetime]:
    """Check a certificate against our key and a CA bundle; return (fleet, device, not_after).

    Raises ValueError naming the first problem: not PEM, another key, not issued by a CA of the
    bundle (issuer and signature), CN not ``{fleet}/{device}``, not for client authentication,
    expired.
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ValueError("certificate: not a PEM certificate") from None
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise ValueError("ca: not PEM certificates") from None
    spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ValueError("certificate: it is for another key, not this device's")
    issuers = [ca for ca in cas if ca.subject == cert.issuer]
    if not issuers:
        raise ValueError(f"certificate: issued by {cert.issuer.rfc4514_string()!r}, not the CA")
    for ca in issuers:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if not _is_ca(ca):
            raise ValueError("ca: the issuer is not a CA certificate (basicConstraints)")
        break
    else:
        raise ValueError("certificate: its signature does not verify with the CA's key")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = names[0].value if len(names) == 1 else None
    fleet, _, device = cn.partition("/") if isinstance(cn, str) else ("", "", "")
    if not (_IDENT.match(fleet) and _IDENT.match(device)):
        raise ValueError(f"certificate: CN {cn!r} is not FLEET/DEVICE")
    with contextlib.suppress(x509.ExtensionNotFound):
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise ValueError("certificate: not for client authentication (extendedKeyUsage)")
    if cert.not_valid_after_utc <= now:
        raise ValueError(f"certificate: expired on {_day(cert.not_valid_after_utc)}")
    return fleet, device, cert.not_valid_after_utc


def _is_ca(ca: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        return ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def check_answer(answer: object, key: EllipticCurvePrivateKey, now: dt.datetime) -> Identity:
    """Check the hub's ``201`` answer (prov-spec) against our key; raises Refused.

    The certificate must hold our public key, be issued by the CA of the answer and name the
    fleet and device the answer names; the names must be DESIGN §2 names (they become file
    names here), the role one we know, the broker a URL the agent accepts.
    """
    from edge_agent.platform.settings import BrokerConfig

    if not isinstance(answer, dict):
        raise Refused("the hub's answer is not a JSON object")
    fields = {}
    for name in ("fleet", "device", "role", "certificate", "ca", "broker"):
        value = answer.get(name)
        if not isinstance(value, str) or not value:
            raise Refused(f"the hub's answer: {name}: missing or not a string")
        fields[name] = value
    for name in ("fleet", "device"):
        if not _IDENT.match(fields[name]):
            raise Refused(f"the hub's answer: {name}: {fields[name][:80]!r} is not a DESIGN name")
    role = fields["role"]
    if role not in ROLES:
        raise Refused(f"the hub's answer: role: {role[:40]!r} is not van or station")
    try:
        BrokerConfig(url=fields["broker"])
    except ValueError as exc:
        raise Refused(f"the hub's answer: broker: {_first_line(exc)}") from None
    hub_api = answer.get("hub_api")
    cert_pem, ca_pem = fields["certificate"].encode(), fields["ca"].encode()
    try:
        fleet, device, not_after = check_certificate(cert_pem, ca_pem, key, now)
    except ValueError as exc:
        raise Refused(f"the hub's answer: {exc}") from None
    if (fleet, device) != (fields["fleet"], fields["device"]):
        raise Refused(
            f"the hub's answer: the certificate is for {fleet}/{device}, "
            f"the answer says {fields['fleet']}/{fields['device']}"
        )
    return Identity(
        fleet=fleet,
        device=device,
        role=role,
        certificate=cert_pem,
        ca=ca_pem,
        broker=fields["broker"],
        hub_api=hub_api if isinstance(hub_api, str) else None,
        not_after=not_after,
    )


def _first_line(exc: Exception) -> str:
    text = str(exc)
    # pydantic's message: "1 validation error for X\nurl\n  Value error, ... [type=...]"
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Value error, "):
            return line.removeprefix("Value error, ").split(" [type=")[0]
    return text.splitlines()[0] if text else type(exc).__name__


def _remap(value: Any, config_dir: Path, state_dir: Path) -> Any:
    """The profile's paths under the default folders moved under the chosen ones."""
    if isinstance(value, dict):
        return {k: _remap(v, config_dir, state_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_remap(v, config_dir, state_dir) for v in value]
    if isinstance(value, str):
        for default, chosen in ((DEFAULT_CONFIG_DIR, config_dir), (DEFAULT_STATE_DIR, state_dir)):
            prefix = f"{default}/"
            if value.startswith(prefix):
                return str(chosen / value[len(prefix) :])
    return value


def device_config(
    base: dict[str, Any],
    identity: Identity,
    config_dir: Path,
    state_dir: Path,
    *,
    from_profile: bool,
) -> dict[str, Any]:
    """The device file: ``base`` (a profile, or the device's existing file) with the provisioned
    fields set: device id/fleet/role, broker.url and broker.tls, outbox.path, api.token_file.

    From a profile, its paths under /etc/edge-agent and /var/lib/edge-agent move to the chosen
    folders and the outbox goes to ``{state_dir}/outbox.db``. An existing file keeps its outbox
    (moving it would orphan the events it holds) and everything a technician changed.
    """
    data: dict[str, Any] = _remap(base, config_dir, state_dir) if from_profile else dict(base)
    data["device"] = {"id": identity.device, "fleet": identity.fleet, "role": identity.role}
    broker = dict(data.get("broker") or {})
    # the identity is the certificate (use_identity_as_username): no passwords on the broker
    for secret in ("username", "password"):
        broker.pop(secret, None)
    broker["url"] = identity.broker
    broker["tls"] = {
        "ca": str(config_dir / CA_FILE),
        "cert": str(config_dir / CERT_FILE),
        "key": str(config_dir / KEY_FILE),
    }
    data["broker"] = broker
    outbox = dict(data.get("outbox") or {})
    if from_profile or "path" not in outbox:
        outbox["path"] = str(state_dir / "outbox.db")
    data["outbox"] = outbox
    api = dict(data.get("api") or {})
    api.pop("token", None)  # the token lives in its file (0600), not in a 0640 config
    api["token_file"] = str(config_dir / TOKEN_FILE)
    data["api"] = api
    # the role decides the sections: a station profile's docks never land in a van's file
    if identity.role == "van":
        data.pop("station", None)
    else:
        data.pop("trips", None)
    return data


def render_config(data: dict[str, Any], source: str, now: dt.datetime) -> str:
    """The device file's text: a header saying where it came from, then the YAML."""
    import yaml

    head = (
        f"# Written by edge-agent provision on {now:%Y-%m-%d %H:%M}Z from {source}.\n"
        "# device, broker.url, broker.tls, api.token_file are set by provisioning (re-running it\n"
        "# sets them again and keeps the rest); edit the devices to fit this vehicle.\n"
    )
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def validate_config(text: str, path: Path) -> None:
    """Validate a device file's text with the agent's own loader; raises its ConfigError."""
    from edge_agent.config import AgentConfig
    from edge_agent.platform.yamlconf import load_model

    load_model(AgentConfig, path, text)


# ---------------------------------------------------------------------------------------------
# I/O: keys, the hub, files, systemd


@dataclass(frozen=True, slots=True)
class Options:
    """The command line of ``edge-agent provision``."""

    claim: Claim | None
    role: Role | None
    config_dir: Path
    state_dir: Path
    user: str
    enable: bool
    renew: bool = False
    profile_dir: Path | None = None
    hub_ca: Path | None = None


@dataclass(frozen=True, slots=True)
class Owner:
    """Who owns the private files (the service user), when run as root."""

    uid: int
    gid: int
    name: str


class Steps:
    """The printed steps: ``name: text`` lines, flushed one by one (a technician over SSH sees
    each step as it happens)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, step: str, text: str) -> None:
        print(f"{step}: {text}", file=self.out, flush=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _day(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d")


def load_key(path: Path) -> EllipticCurvePrivateKey | None:
    """The device's key from ``path``, or None when there is no file; raises UsageError for a
    file that is not an unencrypted EC P-256 key (it is never overwritten: move it aside)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the key: {exc.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise UsageError(
            f"{path}: not an unencrypted PEM private key; it is never overwritten: "
            "move it aside to make a new one"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UsageError(f"{path}: not an EC P-256 key; move it aside to make a new one")
    return key


def make_key() -> EllipticCurvePrivateKey:
    """A new EC P-256 key, in memory (written only once the hub's answer is checked)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (the agent reads it unattended: no passphrase)."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def make_csr(key: EllipticCurvePrivateKey, common_name: str) -> bytes:
    """A CSR signed with ``key`` (PEM). The hub sets the subject from the claim whatever this
    one says; the host name in it only helps whoever reads the hub's log."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "edge-agent")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(Encoding.PEM)


def request_certificate(claim: Claim, csr: bytes, hub_ca: Path | None) -> object:
    """POST the claim and the CSR to ``{hub_api}/v1/provision``; the decoded 201 answer.

    Raises Refused for a 4xx (the hub's error text in it), Unreachable for no answer, a 5xx or a
    TLS failure (the claim is still unspent then, or was spent on a certificate we never saw:
    either way a retry or a new claim is what helps).
    """
    import ssl
    import urllib.error
    import urllib.request

    url = f"{claim.hub_api}/v1/provision"
    body = json.dumps({"claim": claim.token, "csr": csr.decode()}).encode()
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    context = ssl.create_default_context(cafile=str(hub_ca) if hub_ca else None)
    try:
        with urllib.request.urlopen(req, timeout=HUB_TIMEOUT_S, context=context) as resp:
            raw = resp.read(MAX_ANSWER_BYTES + 1)
            status = resp.status
    except urllib.error.HTTPError as exc:
        detail = _error_text(exc.read(4096))
        if exc.code == 429:
            retry = exc.headers.get("Retry-After")
            wait = f"; try again in {retry} s" if retry else ""
            raise Refused(f"the hub refused: too many failed claims from here{wait}") from None
        if exc.code == 404:
            raise Refused(
                f"{url}: 404: this hub has no provisioning endpoint (hub-bridge too old, or a "
                "wrong URL)"
            ) from None
        if exc.code >= 500:
            raise Unreachable(f"{url}: the hub failed ({exc.code}): {detail}") from None
        raise Refused(f"the hub refused ({exc.code}): {detail}") from None
    except ssl.SSLCertVerificationError as exc:
        raise Unreachable(
            f"{url}: the hub's TLS certificate is not trusted ({exc.verify_message}); "
            "pass --hub-ca FILE with its CA"
        ) from None
    except urllib.error.URLError as exc:
        raise Unreachable(f"{url}: cannot reach the hub: {_reason(exc.reason)}") from None
    except (OSError, ConnectionError) as exc:
        # timeouts and resets in the middle of the answer come out of read() as plain OSErrors
        raise Unreachable(f"{url}: cannot reach the hub: {_reason(exc)}") from None
    if status != 201:
        raise Refused(f"{url}: unexpected answer {status} (201 expected)")
    if len(raw) > MAX_ANSWER_BYTES:
        raise Refused(f"{url}: the answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise Refused(f"{url}: the answer is not JSON") from None


def _error_text(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])[:300]
    return raw.decode("utf-8", "replace").strip()[:300] or "(no message)"


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError
        return f"no answer within {HUB_TIMEOUT_S:.0f} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def resolve_owner(user: str, steps: Steps) -> Owner | None:
    """The service user when running as root and it exists; otherwise None, said once."""
    import pwd

    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        steps("owner", f"not root: files owned by {me} (--user {user} applies when run as root)")
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        steps(
            "owner",
            f"user {user} does not exist: files owned by root; create it "
            f"(useradd --system --home {DEFAULT_STATE_DIR} {user}) and run this again",
        )
        return None
    return Owner(entry.pw_uid, entry.pw_gid, user)


def write_file(path: Path, data: bytes, mode: int, owner: Owner | None) -> None:
    """Replace ``path`` atomically: a temporary file with ``mode`` (and owner) from its first
    byte, fsync, rename, fsync the folder: a power cut leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from O_CREAT's mode
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _check_dir(path: Path, what: str) -> Path:
    """Whether ``path`` can be made and written, without making it (a refused claim leaves no
    folder behind); returns the nearest folder that exists (the one to lock)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: not writable here (run as root, or choose another)")
    return probe


def _make_dir(path: Path, mode: int, owner: Owner | None) -> None:
    if not path.is_dir():
        path.mkdir(mode=mode, parents=True)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One provisioning per folder at a time (a lock on the folder itself: no file left)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{folder}: another edge-agent provision is running") from None
        yield
    finally:
        os.close(fd)


def find_profile_dir(given: Path | None) -> Path:
    """firmware_configs/: ``--profiles`` or the one next to the installed package (the project
    checkout the unit runs from, /opt/lastmile)."""
    if given is not None:
        candidates = [given]
    else:
        candidates = [Path(__file__).resolve().parent.parent / "firmware_configs"]
    for folder in candidates:
        if all((folder / name).is_file() for name in PROFILES.values()):
            return folder
    raise UsageError(
        f"no device profiles ({', '.join(PROFILES.values())}) in "
        f"{', '.join(map(str, candidates))}: pass --profiles DIR"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read it: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a mapping of sections")
    return data


def _base_for(role: Role, existing: Path, profiles: Path) -> tuple[dict[str, Any], str, bool]:
    """(base data, where from, from a profile?): the device's own file when it is there."""
    if existing.is_file():
        return _read_yaml(existing), str(existing), False
    profile = profiles / PROFILES[role]
    return _read_yaml(profile), str(profile), True


def _preflight_configs(opts: Options, profiles: Path, now: dt.datetime) -> None:
    """Every profile the answer may select, filled with a stand-in identity and validated, so
    a profile the agent would refuse is found before the claim is spent."""
    for role in (opts.role,) if opts.role else ROLES:
        standin = Identity(
            "preflight", "preflight", role, b"", b"", "mqtts://localhost:8883", None, now
        )
        profile = profiles / PROFILES[role]
        data = device_config(
            _read_yaml(profile), standin, opts.config_dir, opts.state_dir, from_profile=True
        )
        _validate(data, str(profile), now)


def _validate(data: dict[str, Any], source: str, now: dt.datetime) -> str:
    from edge_agent.platform.yamlconf import ConfigError

    text = render_config(data, source, now)
    try:
        validate_config(text, Path(source))
    except ConfigError as exc:
        raise UsageError(f"the device file from {source} would not load: {exc}") from None
    return text


def existing_identity(
    config_dir: Path, key: EllipticCurvePrivateKey, now: dt.datetime
) -> tuple[str, str, dt.datetime] | str:
    """The identity ``device.crt`` and ``ca.crt`` already give this key, or why not (a line)."""
    cert_path, ca_path = config_dir / CERT_FILE, config_dir / CA_FILE
    try:
        cert_pem, ca_pem = cert_path.read_bytes(), ca_path.read_bytes()
    except FileNotFoundError as exc:
        return f"no {Path(exc.filename).name} yet"
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    try:
        return check_certificate(cert_pem, ca_pem, key, now)
    except ValueError as exc:
        return str(exc)


def enable_unit(device: str, steps: Steps) -> bool:
    """``systemctl enable --now edge-agent@{device}.service``; False (and what to run) when it
    cannot be done here."""
    unit = f"edge-agent@{device}.service"
    command = f"systemctl enable --now {unit}"
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        steps("service", f"no systemctl here: start the agent with `{command}` on the device")
        return True
    try:
        done = subprocess.run(
            [systemctl, "enable", "--now", unit],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        steps("service", f"FAILED: {command}: {exc}; run it by hand")
        return False
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        steps("service", f"FAILED: {command}: {why[-1] if why else done.returncode}; run it again")
        return False
    steps("service", f"{unit} enabled and started")
    return True


def provision(opts: Options, out: TextIO, err: TextIO) -> int:
    """Run the steps (module docstring); print one line per step; return the exit code."""
    steps = Steps(out)
    try:
        return _provision(opts, steps)
    except ProvisionError as exc:
        print(f"error: {exc}", file=err, flush=True)
        return exc.exit_code


def _provision(opts: Options, steps: Steps) -> int:
    now = _now()
    owner = resolve_owner(opts.user, steps)
    lock = _check_dir(opts.config_dir, "--config-dir")
    _check_dir(opts.state_dir, "--state-dir")
    with _locked(lock):
        key_path = opts.config_dir / KEY_FILE
        key = load_key(key_path)
        if key is None:
            key, new_key = make_key(), True
            steps("key", "made a new EC P-256 key (never sent; written once the hub answers)")
        else:
            new_key = False
            steps("key", f"{key_path}: kept (EC P-256)")
        have = existing_identity(opts.config_dir, key, now)
        if isinstance(have, tuple) and not opts.renew:
            done = _already(opts, have, owner, steps)
            if done is not None:
                return done
        elif isinstance(have, str):
            steps("certificate", f"{have}: a claim is needed")
        if opts.claim is None:
            raise UsageError("--claim is needed (made on the hub by hub-bridge claim create)")
        profiles = find_profile_dir(opts.profile_dir)
        _preflight_configs(opts, profiles, now)
        steps("preflight", f"folders writable, profiles in {profiles} valid")
        steps("claim", f"asking {opts.claim.hub_api} for a certificate")
        if opts.claim.hub_api.startswith("http://"):
            steps("claim", "warning: plain http: use https:// on a network you do not trust")
        csr = make_csr(key, os.uname().nodename)
        answer = request_certificate(opts.claim, csr, opts.hub_ca)
        identity = check_answer(answer, key, now)
        if opts.role is not None and opts.role != identity.role:
            raise Refused(
                f"the claim is for a {identity.role} and --role says {opts.role}: nothing "
                "written; ask for a claim with the right --role (this one is spent)"
            )
        steps(
            "certificate",
            f"{identity.name} ({identity.role}), valid until {_day(identity.not_after)}, "
            "holds this device's key, issued by the fleet CA",
        )
        if identity.not_after - now < dt.timedelta(days=30):
            steps("certificate", "warning: it expires within 30 days")
        config_path = opts.config_dir / f"{identity.device}.yaml"
        base, source, from_profile = _base_for(identity.role, config_path, profiles)
        data = device_config(
            base, identity, opts.config_dir, opts.state_dir, from_profile=from_profile
        )
        text = _validate(data, source, now)
        try:
            # the service user may replace its device file (cmd/config, kept on trial)
            _make_dir(opts.config_dir, 0o750, owner)
            _make_dir(opts.state_dir, 0o700, owner)
            _write_identity(opts, identity, key if new_key else None, owner, steps)
            _write_token(opts, owner, steps)
            write_file(config_path, text.encode(), 0o640, owner)
            _own(opts, identity.device, owner, steps)
        except OSError as exc:
            raise LocalFailure(
                f"{exc.filename or opts.config_dir}: cannot write: {exc.strerror}; the claim "
                "is spent: fix this, then run again with a new claim (the key is kept)"
            ) from None
        how = "updated (provisioned fields; the rest kept)" if not from_profile else "written"
        steps("config", f"{config_path} {how} from {source}, checked by the agent's loader")
        return _finish(opts, identity.device, config_path, steps)


def _already(
    opts: Options, have: tuple[str, str, dt.datetime], owner: Owner | None, steps: Steps
) -> int | None:
    """The device is provisioned when its certificate is good and its file loads: no claim."""
    from edge_agent.platform.yamlconf import ConfigError

    fleet, device, not_after = have
    config_path = opts.config_dir / f"{device}.yaml"
    steps(
        "certificate",
        f"{fleet}/{device}, valid until {_day(not_after)}, holds this key: no claim needed"
        + (" (the one given was not used)" if opts.claim else ""),
    )
    try:
        validate_config(config_path.read_text(encoding="utf-8"), config_path)
    except FileNotFoundError:
        steps("config", f"{config_path} is missing: a claim is needed to learn the broker")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{config_path}: cannot read it: {exc}") from None
    except ConfigError as exc:
        raise UsageError(f"{exc}; fix it, or move it aside and run again with a claim") from None
    steps("config", f"{config_path} kept (it loads)")
    try:
        _write_token(opts, owner, steps)
        _own(opts, device, owner, steps)
    except OSError as exc:
        raise LocalFailure(f"{exc.filename}: cannot write: {exc.strerror}") from None
    return _finish(opts, device, config_path, steps)


def _write_identity(
    opts: Options,
    identity: Identity,
    new_key: EllipticCurvePrivateKey | None,
    owner: Owner | None,
    steps: Steps,
) -> None:
    # the key first: a certificate on disk without its key would be useless
    if new_key is not None:
        write_file(opts.config_dir / KEY_FILE, key_pem(new_key), 0o600, owner)
    write_file(opts.config_dir / CA_FILE, identity.ca, 0o644, owner)
    write_file(opts.config_dir / CERT_FILE, identity.certificate, 0o644, owner)
    who = f", owner {owner.name}" if owner else ""
    steps("key", f"{opts.config_dir / KEY_FILE} (0600{who})")
    steps("certificate", f"{opts.config_dir / CERT_FILE}, CA in {opts.config_dir / CA_FILE}")


def _own(opts: Options, device: str, owner: Owner | None, steps: Steps) -> None:
    """The provisioned files owned by the service user with their modes, also those of an
    earlier run (made as root before the user existed, or loosened by hand)."""
    modes = {KEY_FILE: 0o600, TOKEN_FILE: 0o600, CERT_FILE: 0o644, CA_FILE: 0o644}
    modes[f"{device}.yaml"] = 0o640
    changed = []
    for name, mode in modes.items():
        path = opts.config_dir / name
        st = path.stat()
        if owner is not None and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
            os.chown(path, owner.uid, owner.gid)
            changed.append(name)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
            changed.append(name)
    if changed:
        who = f"owner {owner.name}, " if owner else ""
        steps("owner", f"set ({who}modes) on {', '.join(sorted(set(changed)))}")


def _write_token(opts: Options, owner: Owner | None, steps: Steps) -> None:
    path = opts.config_dir / TOKEN_FILE
    if path.is_file() and path.stat().st_size > 0:
        steps("token", f"{path}: kept (rotate it by writing a new one; the agent re-reads it)")
        return
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=") + b"\n"
    write_file(path, token, 0o600, owner)
    who = f", owner {owner.name}" if owner else ""
    steps("token", f"{path} made (0600{who}): the local API's bearer token")


def _finish(opts: Options, device: str, config_path: Path, steps: Steps) -> int:
    unit = f"edge-agent@{device}.service"
    if not opts.enable:
        steps("service", f"not enabled (--no-enable): systemctl enable --now {unit}")
        ok = True
    else:
        if opts.config_dir != DEFAULT_CONFIG_DIR:
            steps(
                "service",
                f"warning: {unit} reads {DEFAULT_CONFIG_DIR}/{device}.yaml, not {config_path}",
            )
        ok = enable_unit(device, steps)
    steps("next", f"edge-agent doctor --config {config_path}")
    if not ok:
        raise LocalFailure(f"provisioned, but edge-agent@{device}.service is not running")
    return 0


# ---------------------------------------------------------------------------------------------
# command line


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``provision`` to ``edge-agent``'s subcommands (``run`` is its func)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "provision",
        help="give this device its identity from a claim (key made here, certificate from hub)",
        description=(
            "Make (or keep) this device's key, exchange a claim for its certificate at the hub, "
            "write the device file and enable the service. Safe to run again."
        ),
    )
    p.add_argument(
        "--claim",
        help="the claim: lmclaim:URL#TOKEN as hub-bridge claim create prints it, or - to read it "
        "from standard input (a scanned QR code)",
    )
    p.add_argument(
        "--hub", help="the hub API URL (needed with a bare token; wins over the claim's)"
    )
    p.add_argument("--role", choices=ROLES, help="expect this role (the claim decides)")
    p.add_argument(
        "--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="default: %(default)s"
    )
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: %(default)s")
    p.add_argument("--user", default="edge-agent", help="the service user (default: %(default)s)")
    p.add_argument("--no-enable", action="store_true", help="do not enable the systemd unit")
    p.add_argument(
        "--renew", action="store_true", help="use the claim even if a valid certificate exists"
    )
    p.add_argument("--profiles", type=Path, help="folder of the device profiles (firmware_configs)")
    p.add_argument("--hub-ca", type=Path, help="CA file to trust for an https:// hub API")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``edge-agent provision``: build the options from ``args`` and provision."""
    try:
        claim = args.claim
        if claim == "-":
            # a QR code scanned by a handheld (a keyboard) or pasted: not in argv, where ps and
            # the shell's history would keep it
            if sys.stdin.isatty():
                print("claim (scan or paste it, then Enter): ", end="", file=sys.stderr, flush=True)
            claim = sys.stdin.readline().strip()
            if not claim:
                raise UsageError("--claim -: nothing on standard input")
        opts = Options(
            claim=parse_claim(claim, args.hub),
            role=args.role,
            config_dir=Path(os.path.abspath(args.config_dir)),
            state_dir=Path(os.path.abspath(args.state_dir)),
            user=args.user,
            enable=not args.no_enable,
            renew=args.renew,
            profile_dir=args.profiles,
            hub_ca=args.hub_ca,
        )
        if opts.renew and opts.claim is None:
            raise UsageError("--renew needs a --claim")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return provision(opts, sys.stdout, sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_agent.provision ...`` (until ``edge-agent provision`` is wired)."""
    parser = argparse.ArgumentParser(prog="edge-agent")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["provision", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
