"""The fleet's PKI at the hub: the CA, the hub's and the broker's certificates, device
certificates issued from CSRs, and the CRL the broker reads (DESIGN §2: a device's identity is
its TLS client certificate, CN ``{fleet}/{device}``; the hub's is CN ``_hub/{hub_id}``).

Pure functions over ``cryptography`` objects and bytes, and a few file helpers. The folder
(``pki.dir``, ``/var/lib/hub-bridge/pki`` by default) holds::

    ca.key ca.crt          the fleet CA (the key 0600)
    crl.pem                the revoked certificates (the broker's ``crlfile``)
    hub.key hub.crt        the hub's own client identity, CN ``_hub/{hub_id}``
    broker.key broker.crt  the broker's server certificate (SAN: its host names and addresses)

Keys are EC P-256, written PKCS#8 unencrypted, 0600, atomically (temporary file, fsync, rename,
fsync of the folder): a power cut leaves the old file or the new one, never half a key. A device
certificate's subject is always set here from the claim, whatever the CSR asked for.

Exceptions::

    PkiError          a file or an input that cannot be used (names the file or the field)
    └── CsrError      a certificate request that is not PEM, not EC/RSA, or not signed by its key
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.wire.envelope import IDENT_RE

__all__ = [
    "BROKER_CERT",
    "BROKER_KEY",
    "CA_CERT",
    "CA_KEY",
    "CRL",
    "DEFAULT_BROKER_HOSTS",
    "DEFAULT_DIR",
    "HUB_CERT",
    "HUB_KEY",
    "Authority",
    "AuthorityCache",
    "CsrError",
    "InitReport",
    "PkiError",
    "PrivateKey",
    "PublicKey",
    "cert_pem",
    "check_authority",
    "check_csr",
    "device_common_name",
    "fingerprint",
    "hub_common_name",
    "init_ca",
    "issue_certificate",
    "issue_hub_certificate",
    "issue_server_certificate",
    "issued_by",
    "key_pem",
    "load_authority",
    "load_certificate",
    "load_private_key",
    "make_ca",
    "make_crl",
    "new_key",
    "parse_csr",
    "write_crl",
    "write_private",
    "write_public",
]

DEFAULT_DIR: Final = Path("/var/lib/hub-bridge/pki")
CA_KEY, CA_CERT, CRL = "ca.key", "ca.crt", "crl.pem"
HUB_KEY, HUB_CERT = "hub.key", "hub.crt"
BROKER_KEY, BROKER_CERT = "broker.key", "broker.crt"
DEFAULT_BROKER_HOSTS: Final = ("localhost", "127.0.0.1")

CA_DAYS = 3650
HUB_DAYS = 825
CA_NAME = "lastmile-edge fleet CA"
RSA_MIN_BITS = 2048
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_IDENT = re.compile(IDENT_RE.strip("^$"))
_HUB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# a clock a little behind on the device must not make a fresh certificate "not yet valid"
_BACKDATE = dt.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class PkiError(Exception):
    """A PKI file or input that cannot be used; the message names it."""


class CsrError(PkiError):
    """A certificate signing request the hub refuses (the API answers 400)."""


@dataclass(frozen=True, slots=True)
class Authority:
    """The fleet CA: its certificate and its key."""

    cert: x509.Certificate
    key: PrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (its file is 0600: ``write_private``)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint as colon-separated hex, as ``openssl x509 -fingerprint`` shows."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def device_common_name(fleet: str, device: str) -> str:
    """``{fleet}/{device}``, both checked against the contract's identifier pattern."""
    for what, value in (("fleet", fleet), ("device", device)):
        if not isinstance(value, str) or not _IDENT.fullmatch(value):
            raise PkiError(f"{what} {value!r} must match {IDENT_RE}")
    return f"{fleet}/{device}"


def hub_common_name(hub_id: str) -> str:
    """``_hub/{hub_id}``, the hub's identity on the broker."""
    if not _HUB_ID.fullmatch(hub_id):
        raise PkiError(f"hub id {hub_id!r} must match [A-Za-z0-9_-]{{1,64}}")
    return f"_hub/{hub_id}"


def _public_key(key: object, what: str) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            raise CsrError(f"{what}: EC curve {key.curve.name} is not P-256, P-384 or P-521")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            raise CsrError(f"{what}: an RSA key of {key.key_size} bits (at least {RSA_MIN_BITS})")
        return key
    raise CsrError(f"{what}: the key is {type(key).__name__}, not EC or RSA")


# -- certificate requests -----------------------------------------------------------------------


def parse_csr(pem: bytes | str) -> x509.CertificateSigningRequest:
    """A PEM certificate request checked for what the hub signs (``check_csr``). Raises
    CsrError saying why not."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE REQUEST-----" not in data:
        raise CsrError("csr: not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"csr: not a readable certificate request ({exc})") from None
    check_csr(csr)
    return csr


def check_csr(csr: x509.CertificateSigningRequest) -> PublicKey:
    """The request's public key if the hub signs for it: an EC (P-256/384/521) or RSA (2048
    bits or more) key, and the request signed with that key. Raises CsrError saying why not."""
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"csr: its public key cannot be read ({exc})") from None
    public_key = _public_key(key, "csr")
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm, InvalidSignature) as exc:
        raise CsrError(f"csr: its signature cannot be checked ({exc})") from None
    if not valid:
        raise CsrError("csr: the signature does not match its public key")
    return public_key


# -- issuing ------------------------------------------------------------------------------------


def _builder(
    ca_cert: x509.Certificate,
    public_key: PublicKey,
    subject: x509.Name,
    days: float,
    now: dt.datetime | None,
    serial: int | None,
) -> x509.CertificateBuilder:
    if days <= 0:
        raise PkiError(f"validity must be positive, not {days} days")
    start = (now or _now()) - _BACKDATE
    end = start + _BACKDATE + dt.timedelta(days=days)
    # never beyond the CA: a chain with a child outliving its issuer fails on some stacks
    end = min(end, ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )


def _key_usage(public_key: PublicKey) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        # TLS 1.2 RSA key exchange encrypts to the key; EC keys only sign
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        content_commitment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _client_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: PublicKey,
    common_name: str,
    days: float,
    now: dt.datetime | None,
    serial: int | None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        _builder(ca_cert, public_key, subject, days, now, serial)
        .add_extension(_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def issue_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    csr_or_public_key: x509.CertificateSigningRequest | PublicKey | bytes | str,
    fleet: str,
    device: str,
    days: float = 825,
    *,
    now: dt.datetime | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """A device's client certificate: CN ``{fleet}/{device}`` (the subject is set here, whatever
    a CSR asked for), TLS client use only, valid ``days`` (never beyond the CA).

    ``csr_or_public_key`` is a CSR (an object, or PEM bytes/text, checked by ``parse_csr``) or
    the device's public key. Raises CsrError for a bad CSR, PkiError for a bad identity.
    """
    common_name = device_common_name(fleet, device)
    if isinstance(csr_or_public_key, bytes | str):
        csr_or_public_key = parse_csr(csr_or_public_key)
    if isinstance(csr_or_public_key, x509.CertificateSigningRequest):
        public_key = check_csr(csr_or_public_key)
    else:
        public_key = _public_key(csr_or_public_key, "public key")
    return _client_cert(ca_cert, ca_key, public_key, common_name, days, now, serial)


def issue_hub_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: PublicKey,
    hub_id: str,
    days: float = HUB_DAYS,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The hub's client certificate, CN ``_hub/{hub_id}``."""
    return _client_cert(ca_cert, ca_key, public_key, hub_common_name(hub_id), days, now, None)


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.*-]{0,252})", host):
                raise PkiError(
                    f"broker host {host!r} is neither a host name nor an address"
                ) from None
            names.append(x509.DNSName(host.lower()))
    return names


def issue_server_certificate(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    public_key: PublicKey,
    hosts: Sequence[str],
    days: float = HUB_DAYS,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """The broker's server certificate: CN the first host, SAN every host name and address."""
    if not hosts:
        raise PkiError("the broker's certificate needs at least one host name or address")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return (
        _builder(ca_cert, public_key, subject, days, now, None)
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


# -- the CA -------------------------------------------------------------------------------------


def make_ca(
    name: str = CA_NAME, days: float = CA_DAYS, *, now: dt.datetime | None = None
) -> Authority:
    """A new self-signed fleet CA with an EC P-256 key (it signs certificates and CRLs only)."""
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = (now or _now()) - _BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _BACKDATE + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def check_authority(cert: x509.Certificate, key: PrivateKey, where: str) -> Authority:
    """The pair as a usable CA, or PkiError: a CA certificate (basic constraints CA, may sign
    certificates and CRLs), with a subject key identifier, and ``key`` its key."""
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise PkiError(f"{where}: not a CA certificate (basic constraints CA:TRUE missing)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.key_cert_sign and usage.crl_sign):
        raise PkiError(f"{where}: the CA's key usage does not allow signing certificates and CRLs")
    try:
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        raise PkiError(f"{where}: the CA certificate has no subject key identifier") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{where}: the CA key is {type(key).__name__}, not EC or RSA")
    if cert.public_key() != key.public_key():
        raise PkiError(f"{where}: the key is not the key of the CA certificate")
    if cert.not_valid_after_utc <= _now():
        raise PkiError(f"{where}: the CA certificate expired on {cert.not_valid_after_utc:%F}")
    return Authority(cert, key)


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM certificate from ``path`` (PkiError naming the file)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise PkiError(f"{path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc})") from None


def load_private_key(path: Path) -> PrivateKey:
    """An unencrypted PEM private key (EC or RSA) from ``path`` (PkiError naming the file)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise PkiError(f"{path}: {exc.strerror or exc}") from None
    except TypeError:
        raise PkiError(f"{path}: the key is encrypted (give it without a passphrase)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PkiError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{path}: the key is {type(key).__name__}, not EC or RSA")
    return key


def load_authority(folder: Path) -> Authority:
    """The fleet CA of a PKI folder (PkiError when it is missing or unusable)."""
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise PkiError(f"{folder}: no CA ({CA_CERT}, {CA_KEY}): run hub-bridge ca init")
    return check_authority(load_certificate(cert_path), load_private_key(key_path), str(folder))


class AuthorityCache:
    """The CA of a folder, read again only when ``ca.crt`` or ``ca.key`` changed (a ``ca init
    --force`` while the hub runs is picked up at the next request)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._authority: Authority | None = None

    def get(self) -> Authority:
        """The CA (PkiError when it is missing or unusable)."""
        try:
            stamp = tuple(
                (st.st_ino, st.st_mtime_ns, st.st_size)
                for st in (os.stat(self.folder / n) for n in (CA_CERT, CA_KEY))
            )
        except OSError:
            stamp = None
        if stamp is None or stamp != self._stamp or self._authority is None:
            self._authority = load_authority(self.folder)
            self._stamp = stamp
        return self._authority


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries a valid signature of ``ca_cert``."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- the CRL ------------------------------------------------------------------------------------


def make_crl(
    authority: Authority,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    now: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """The CRL listing ``revoked`` (serial, when), signed by the CA.

    Its next update is the CA's own end: the broker reads the file at start only, and OpenSSL
    refuses every client once a CRL is past its next update, so a short one would lock out the
    fleet the day it lapsed. Each revocation rewrites the file anyway."""
    now = now or _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(now - _BACKDATE)
        .next_update(max(authority.cert.not_valid_after_utc, now + dt.timedelta(days=1)))
    )
    for serial, when in sorted(revoked):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
            .build()
        )
    return builder.sign(authority.key, hashes.SHA256())


def write_crl(
    folder: Path,
    authority: Authority,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    now: dt.datetime | None = None,
) -> Path:
    """Rewrite ``crl.pem`` in ``folder`` atomically (0644: the broker reads it)."""
    crl = make_crl(authority, revoked, now=now)
    path = folder / CRL
    write_public(path, crl.public_bytes(serialization.Encoding.PEM))
    return path


# -- files --------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a crash: O_EXCL below refuses to reuse another's file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits a public file needs
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (a key) atomically, mode 0600 from its creation."""
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (a certificate, the CRL) atomically, mode 0644."""
    _write(path, data, 0o644)


# -- ca init ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitReport:
    """What ``init_ca`` did: each file ``made`` or ``kept``, and the CA."""

    folder: Path
    made: tuple[str, ...]
    kept: tuple[str, ...]
    authority: Authority


def _make_folder(folder: Path) -> None:
    if folder.exists():
        if not folder.is_dir():
            raise PkiError(f"{folder}: not a folder")
        return
    missing = []
    parent = folder
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for f in reversed(missing):
        with contextlib.suppress(FileExistsError):
            f.mkdir()
        # the keys inside are 0600; certificates and the CRL must stay readable by the broker
        os.chmod(f, 0o755)


def init_ca(
    folder: Path,
    *,
    import_cert: Path | None = None,
    import_key: Path | None = None,
    broker_hosts: Sequence[str] = DEFAULT_BROKER_HOSTS,
    hub_id: str = "hub",
    force: bool = False,
    now: dt.datetime | None = None,
) -> InitReport:
    """Make (or import) the fleet CA in ``folder`` and issue the hub's and the broker's
    certificates and an empty CRL, keeping every file that exists already.

    Safe to run again: existing files are kept unless ``force`` (then all are made anew, and
    certificates issued by the old CA stop working). A kept file must belong to the CA: a
    certificate of another CA, or an imported CA that differs from the one in place, is a
    PkiError naming it. Missing files are made (delete ``broker.*`` and run it again to
    reissue the broker's certificate for other names).
    """
    if (import_cert is None) != (import_key is None):
        raise PkiError("--import-cert and --import-key go together")
    hub_common_name(hub_id)
    _san(broker_hosts)
    if not broker_hosts:
        raise PkiError("at least one broker host is needed")
    _make_folder(folder)
    made: list[str] = []
    kept: list[str] = []
    imported: Authority | None = None
    if import_cert is not None and import_key is not None:
        imported = check_authority(
            load_certificate(import_cert), load_private_key(import_key), str(import_cert)
        )
    ca_paths = (folder / CA_CERT, folder / CA_KEY)
    present = [p.exists() for p in ca_paths]
    if any(present) and not force:
        if not all(present):
            gone = CA_CERT if not present[0] else CA_KEY
            raise PkiError(f"{folder}: {gone} is missing but not its pair: --force to start anew")
        authority = load_authority(folder)
        if imported is not None and imported.cert != authority.cert:
            raise PkiError(
                f"{folder}: holds another CA ({fingerprint(authority.cert)}): --force to replace"
            )
        kept += [CA_CERT, CA_KEY]
    else:
        authority = imported or make_ca(now=now)
        write_private(folder / CA_KEY, key_pem(authority.key))
        write_public(folder / CA_CERT, cert_pem(authority.cert))
        made += [CA_CERT, CA_KEY]
    fresh_ca = CA_CERT in made

    def identity(cert_name: str, key_name: str) -> None:
        cert_path, key_path = folder / cert_name, folder / key_name
        if cert_path.exists() and key_path.exists() and not fresh_ca:
            cert = load_certificate(cert_path)
            key = load_private_key(key_path)
            if not issued_by(cert, authority.cert):
                raise PkiError(f"{cert_path}: not issued by the CA in {folder}: --force")
            if cert.public_key() != key.public_key():
                raise PkiError(f"{key_path}: not the key of {cert_name}: --force")
            kept.extend((cert_name, key_name))
            return
        key = new_key()
        if cert_name == HUB_CERT:
            cert = issue_hub_certificate(
                authority.cert, authority.key, key.public_key(), hub_id, now=now
            )
        else:
            cert = issue_server_certificate(
                authority.cert, authority.key, key.public_key(), list(broker_hosts), now=now
            )
        write_private(key_path, key_pem(key))
        write_public(cert_path, cert_pem(cert))
        made.extend((cert_name, key_name))

    identity(HUB_CERT, HUB_KEY)
    identity(BROKER_CERT, BROKER_KEY)
    crl_path = folder / CRL
    if crl_path.exists() and not fresh_ca:
        try:
            crl = x509.load_pem_x509_crl(crl_path.read_bytes())
        except ValueError as exc:
            raise PkiError(f"{crl_path}: not a PEM CRL ({exc})") from None
        if not crl.is_signature_valid(authority.key.public_key()):
            raise PkiError(f"{crl_path}: not signed by the CA in {folder}: --force")
        kept.append(CRL)
    else:
        write_crl(folder, authority, [], now=now)
        made.append(CRL)
    return InitReport(folder, tuple(made), tuple(kept), authority)
