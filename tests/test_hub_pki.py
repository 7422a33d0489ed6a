"""The hub's side of provisioning (issue 10 item 1): the fleet CA, claims, the provisioning
endpoint, revocation.

Real files (the PKI folder, SQLite timelines), real certificates checked with ``cryptography``
and ``openssl verify``, the API in-process on a real port and through a real hub process with
the real ``hub-bridge`` command lines; a CSR made the way a device makes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sqlite3
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zxingcpp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.platform.health import HealthRegistry
from edge_agent.platform.yamlconf import ConfigError
from hub_bridge import pki
from hub_bridge.api import CLAIM_REFUSED, OPENAPI, PROVISION_MAX_BYTES, build_app
from hub_bridge.claims import (
    Claim,
    ClaimError,
    FailedClaims,
    claim_text,
    new_token,
    parse_claim_text,
    qr_text,
    token_hash,
    valid_token,
)
from hub_bridge.config import PkiSettings, load_hub_config
from hub_bridge.timeline import SCHEMA_VERSION, IssuedCertificate, Timeline
from simulators.broker import Mosquitto
from tests.harness import ROOT, Proc, write_hub_config
from tests.inproc import Served

# -- helpers ------------------------------------------------------------------------------------


def make_csr(cn: str = "acme/van-042", key: Any = None) -> tuple[Any, bytes]:
    """A device's key and CSR, as ``edge-agent provision`` makes them."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cn_of(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def openssl_verify(
    ca: Path, cert: Path, crl: Path | None = None
) -> subprocess.CompletedProcess[str]:
    args = ["openssl", "verify", "-CAfile", str(ca)]
    if crl is not None:
        args += ["-crl_check", "-CRLfile", str(crl)]
    return subprocess.run([*args, str(cert)], capture_output=True, text=True, check=False)


def hub_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "hub_bridge", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def call(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of a GET (no body) or a POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


# -- the CA -------------------------------------------------------------------------------------


def test_ca_init_makes_the_ca_the_hub_and_broker_certificates_and_a_crl(tmp_path: Path) -> None:
    folder = tmp_path / "var" / "pki"
    report = pki.init_ca(folder, broker_hosts=["broker.depot.example", "10.1.2.3"], hub_id="h1")
    files = {"ca.crt", "ca.key", "hub.crt", "hub.key", "broker.crt", "broker.key", "crl.pem"}
    assert set(report.made) == files and report.kept == ()
    assert {p.name for p in folder.iterdir()} == files  # no temporary file left
    for name in files:
        assert mode(folder / name) == (0o600 if name.endswith(".key") else 0o644), name
    ca = pki.load_certificate(folder / "ca.crt")
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True and basic.path_length == 0
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    hub = pki.load_certificate(folder / "hub.crt")
    assert cn_of(hub) == "_hub/h1"
    eku = hub.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    broker = pki.load_certificate(folder / "broker.crt")
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.depot.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    eku = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for name in ("hub.crt", "broker.crt"):
        result = openssl_verify(folder / "ca.crt", folder / name, folder / "crl.pem")
        assert result.returncode == 0, result.stdout + result.stderr
    crl = x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())
    assert len(crl) == 0 and crl.is_signature_valid(report.authority.key.public_key())
    # the CRL is not allowed to lapse before the CA: the broker would refuse everyone
    assert crl.next_update_utc is not None and crl.next_update_utc >= ca.not_valid_after_utc


def test_ca_init_again_keeps_everything_and_force_makes_it_anew(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    pki.init_ca(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = pki.init_ca(folder, broker_hosts=["other.example"])
    assert again.made == () and set(again.kept) == set(before)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # a missing file is made again, for the CA in place
    (folder / "broker.crt").unlink()
    (folder / "broker.key").unlink()
    third = pki.init_ca(folder, broker_hosts=["other.example"])
    assert set(third.made) == {"broker.crt", "broker.key"}
    broker = pki.load_certificate(folder / "broker.crt")
    assert pki.issued_by(broker, pki.load_certificate(folder / "ca.crt"))
    assert (folder / "ca.key").read_bytes() == before["ca.key"]
    forced = pki.init_ca(folder, force=True)
    assert len(forced.made) == 7
    assert (folder / "ca.key").read_bytes() != before["ca.key"]
    assert mode(folder / "ca.key") == 0o600
    assert pki.issued_by(pki.load_certificate(folder / "hub.crt"), forced.authority.cert)


def test_ca_init_refuses_what_does_not_belong_together(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    pki.init_ca(folder)
    other = tmp_path / "other"
    pki.init_ca(other)
    (folder / "hub.crt").write_bytes((other / "hub.crt").read_bytes())
    with pytest.raises(pki.PkiError, match=r"hub\.crt: not issued by the CA"):
        pki.init_ca(folder)
    (folder / "hub.crt").unlink()
    (folder / "ca.key").unlink()
    with pytest.raises(pki.PkiError, match=r"ca\.key is missing but not its pair"):
        pki.init_ca(folder)
    with pytest.raises(pki.PkiError, match="go together"):
        pki.init_ca(tmp_path / "x", import_cert=other / "ca.crt")
    with pytest.raises(pki.PkiError, match="neither a host name"):
        pki.init_ca(tmp_path / "y", broker_hosts=["bad host!"])
    with pytest.raises(pki.PkiError, match="hub id"):
        pki.init_ca(tmp_path / "z", hub_id="a/b")


def test_an_existing_ca_is_imported_and_checked(tmp_path: Path) -> None:
    theirs = pki.make_ca("ACME Fleet Root")
    cert, key = tmp_path / "theirs.crt", tmp_path / "theirs.key"
    cert.write_bytes(pki.cert_pem(theirs.cert))
    key.write_bytes(pki.key_pem(theirs.key))
    folder = tmp_path / "pki"
    report = pki.init_ca(folder, import_cert=cert, import_key=key)
    assert (folder / "ca.crt").read_bytes() == cert.read_bytes()
    assert mode(folder / "ca.key") == 0o600
    assert pki.issued_by(pki.load_certificate(folder / "hub.crt"), theirs.cert)
    assert "ca.crt" in report.made
    # the same import again is a no-op; another CA over it is refused
    assert "ca.crt" in pki.init_ca(folder, import_cert=cert, import_key=key).kept
    stranger = pki.make_ca()
    (tmp_path / "s.crt").write_bytes(pki.cert_pem(stranger.cert))
    (tmp_path / "s.key").write_bytes(pki.key_pem(stranger.key))
    with pytest.raises(pki.PkiError, match="holds another CA"):
        pki.init_ca(folder, import_cert=tmp_path / "s.crt", import_key=tmp_path / "s.key")
    # a key that is not the certificate's, a certificate that is no CA, an encrypted key
    with pytest.raises(pki.PkiError, match="not the key of the CA"):
        pki.init_ca(tmp_path / "a", import_cert=cert, import_key=tmp_path / "s.key")
    with pytest.raises(pki.PkiError, match="not a CA certificate"):
        pki.init_ca(tmp_path / "b", import_cert=folder / "hub.crt", import_key=folder / "hub.key")
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        theirs.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(pki.PkiError, match="encrypted"):
        pki.init_ca(tmp_path / "c", import_cert=cert, import_key=locked)
    (tmp_path / "junk.crt").write_text("hello")
    with pytest.raises(pki.PkiError, match=r"junk\.crt: not a PEM certificate"):
        pki.init_ca(tmp_path / "d", import_cert=tmp_path / "junk.crt", import_key=key)


def test_the_ca_init_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    made = hub_cli("ca", "init", "--dir", str(folder), "--broker-host", "mqtt.example")
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("made ") == 7 and "CA SHA-256 fingerprint" in made.stdout
    fingerprint = pki.fingerprint(pki.load_certificate(folder / "ca.crt"))
    assert fingerprint in made.stdout
    kept = hub_cli("ca", "init", "--dir", str(folder))
    assert kept.returncode == 0 and kept.stdout.count("kept ") == 7
    assert fingerprint in kept.stdout
    # the folder and hub id from the hub's configuration
    cfg = write_hub_config(tmp_path, "mqtt://127.0.0.1:1", hub_id="north", pki={"dir": str(folder)})
    (folder / "hub.crt").unlink()
    again = hub_cli("ca", "init", "--config", str(cfg))
    assert again.returncode == 0, again.stderr
    assert cn_of(pki.load_certificate(folder / "hub.crt")) == "_hub/north"
    refused = hub_cli("ca", "init", "--dir", str(tmp_path / "n"), "--import-cert", "/nonexistent")
    assert refused.returncode == 1 and "go together" in refused.stderr


# -- issuing ------------------------------------------------------------------------------------


def test_a_device_certificate_has_the_claims_identity_whatever_the_csr_says() -> None:
    ca = pki.make_ca()
    key, csr = make_csr("_hub/hub")  # a device asking to be the hub
    cert = pki.issue_certificate(ca.cert, ca.key, csr, "acme", "van-042", days=30)
    assert cert.subject.rfc4514_string() == "CN=acme/van-042"
    assert cert.public_key() == key.public_key()
    assert pki.issued_by(cert, ca.cert)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400
    assert 30 <= days <= 30.01  # backdated a few minutes for a device clock a little behind
    # a CSR that asks for extensions gets none of them (a CA flag, a SAN)
    sneaky = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hub")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert = pki.issue_certificate(ca.cert, ca.key, sneaky, "acme", "van-042")
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    # a public key alone will do (tests and the broker's tests make devices this way)
    other = ec.generate_private_key(ec.SECP256R1())
    cert = pki.issue_certificate(ca.cert, ca.key, other.public_key(), "acme", "dock-3")
    assert cn_of(cert) == "acme/dock-3"
    # never beyond the CA's own end
    cert = pki.issue_certificate(ca.cert, ca.key, other.public_key(), "acme", "dock-3", 99999)
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc
    for fleet, device in (("Acme", "van"), ("acme", "van/1"), ("acme", ""), ("_hub", "hub")):
        with pytest.raises(pki.PkiError, match="must match"):
            pki.issue_certificate(ca.cert, ca.key, csr, fleet, device)


def test_bad_csrs_are_refused_saying_why() -> None:
    _, good = make_csr()
    with pytest.raises(pki.CsrError, match="not a PEM certificate request"):
        pki.parse_csr(b"hello")
    with pytest.raises(pki.CsrError, match="not a readable"):
        pki.parse_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
    _, edwards = make_csr(key=ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(pki.CsrError, match="not EC or RSA"):
        pki.parse_csr(edwards)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(pki.CsrError, match="1024 bits"):
        pki.parse_csr(make_csr(key=small)[1])
    _, k1 = make_csr(key=ec.generate_private_key(ec.SECP192R1()))
    with pytest.raises(pki.CsrError, match="curve"):
        pki.parse_csr(k1)
    # the CSR's key swapped for another: its signature no longer matches
    csr = x509.load_pem_x509_csr(good)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    mine = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    at = bytes(der).index(mine)
    der[at : at + len(mine)] = theirs
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(pki.CsrError, match="signature does not match"):
        pki.parse_csr(forged)
    rsa_ok = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert isinstance(pki.parse_csr(make_csr(key=rsa_ok)[1]).public_key(), rsa.RSAPublicKey)


# -- claims -------------------------------------------------------------------------------------


def test_claim_tokens_texts_and_their_hash() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50 and all(valid_token(t) and len(t) == 43 for t in tokens)
    token = tokens.pop()
    assert token_hash(token) != token_hash(token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert len(token_hash(token)) == 64
    text = claim_text("https://hub.example:8443/", token)
    assert text == f"lmclaim:https://hub.example:8443#{token}"
    assert parse_claim_text(text) == ("https://hub.example:8443", token)
    assert parse_claim_text(f"  {token}\n") == (None, token)
    for bad in (
        "lmclaim:#" + token,
        "lmclaim:ftp://x#" + token,
        "short",
        f"lmclaim:http://x#{token}!",
    ):
        with pytest.raises(ClaimError):
            parse_claim_text(bad)
    for url in ("hub.example", "http://", "http://h#frag"):
        with pytest.raises(ClaimError, match="hub API URL"):
            claim_text(url, token)


def test_failed_claims_are_limited_per_address() -> None:
    limiter = FailedClaims(burst=3, per_s=0.5, max_clients=2)
    now = 1000.0
    for _ in range(3):
        assert limiter.retry_after("10.0.0.9", now) == 0
        limiter.failed("10.0.0.9", now)
    assert limiter.retry_after("10.0.0.9", now) == pytest.approx(2.0)
    assert limiter.retry_after_header("10.0.0.9", now) == "2"
    assert limiter.retry_after("10.0.0.7", now) == 0  # another address is not affected
    assert limiter.retry_after("10.0.0.9", now + 2.0) == 0  # one more try after 1 / per_s
    limiter.failed("10.0.0.9", now + 2.0)
    assert limiter.retry_after("10.0.0.9", now + 2.0) > 0
    # bounded: the least recently failing address is forgotten first
    limiter.failed("a", now)
    limiter.failed("b", now)
    assert len(limiter) == 2 and limiter.retry_after("10.0.0.9", now + 2.0) == 0
    with pytest.raises(ValueError, match="burst"):
        FailedClaims(burst=0)


def decode_terminal_qr(text: str, dark_terminal: bool) -> str:
    """Read a QR code printed with half blocks back, as a camera would."""
    top = {" ": False, "▀": True, "▄": False, "█": True}
    bottom = {" ": False, "▀": False, "▄": True, "█": True}
    lines = text.rstrip("\n").split("\n")
    width = max(len(line) for line in lines)
    rows: list[list[bool]] = []
    for line in lines:
        cells = line.ljust(width)
        rows.append([top[c] for c in cells])
        rows.append([bottom[c] for c in cells])
    drawn = np.array(rows, dtype=bool)
    # a drawn cell is light on a dark terminal, dark on a light one
    light = drawn if dark_terminal else ~drawn
    image = np.where(light, 255, 0).astype(np.uint8)
    # around the code is the terminal's own background
    image = np.pad(image, 8, constant_values=0 if dark_terminal else 255)
    image = np.kron(image, np.ones((6, 6), dtype=np.uint8))
    found = zxingcpp.read_barcodes(image)
    assert len(found) == 1, "no QR code read"
    return str(found[0].text)


def test_the_qr_code_reads_back_as_the_claim_text() -> None:
    text = claim_text("http://10.20.30.40:8090", new_token())
    for dark in (True, False):
        printed = qr_text(text, dark_terminal=dark)
        assert "\x1b" not in printed  # no ANSI: it survives a pipe and a log
        assert decode_terminal_qr(printed, dark) == text


# -- the store ----------------------------------------------------------------------------------


def issued(serial: int = 0xABCDEF, not_after: float = 2e9) -> Callable[[Claim], IssuedCertificate]:
    seen: list[Claim] = []

    def issue(claim: Claim) -> IssuedCertificate:
        seen.append(claim)
        return IssuedCertificate(serial + len(seen), not_after, f"PEM of {claim.device}")

    return issue


async def test_a_claim_is_redeemed_once_and_only_while_valid(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db")
    try:
        await tl.add_claim(token_hash("tok-a"), "acme", "van-1", "van", expires=200.0, now=100.0)
        await tl.add_claim(token_hash("tok-b"), "acme", "dock-2", "station", 150.0, now=100.0)
        assert await tl.redeem_claim(token_hash("nope"), issued(), now=120.0) is None
        assert await tl.redeem_claim(token_hash("tok-b"), issued(), now=150.0) is None  # expired

        def broken(claim: Claim) -> IssuedCertificate:
            raise pki.PkiError("the CA is gone")

        with pytest.raises(pki.PkiError):
            await tl.redeem_claim(token_hash("tok-a"), broken, now=120.0)
        assert await tl.count("certificates") == 0  # nothing recorded, the claim still unused
        got = await tl.redeem_claim(token_hash("tok-a"), issued(), now=121.0, used_by="10.0.0.5")
        assert got is not None
        claim, cert = got
        assert (claim.fleet, claim.device, claim.role) == ("acme", "van-1", "van")
        assert await tl.redeem_claim(token_hash("tok-a"), issued(), now=122.0) is None  # used
        [row] = await tl.certificates("acme", "van-1")
        assert row["serial"] == format(cert.serial, "x") and row["revoked_at"] is None
        assert row["certificate"] == "PEM of van-1" and row["issued_at"] == 121.0
        [c] = await tl.claims("acme", "van-1")
        assert c["used_at"] == 121.0 and c["used_by"] == "10.0.0.5" and c["serial"] == row["serial"]
    finally:
        await tl.close()
    # the store keeps hashes, never tokens
    con = sqlite3.connect(tmp_path / "t.db")
    dump = "\n".join(con.iterdump())
    con.close()
    assert "tok-a" not in dump and token_hash("tok-a") in dump


async def test_one_claim_presented_twice_at_once_gives_one_certificate(tmp_path: Path) -> None:
    tl = await Timeline.open(tmp_path / "t.db")
    try:
        await tl.add_claim(token_hash("t"), "acme", "van-1", "van", expires=1e12)
        results = await asyncio.gather(
            *(tl.redeem_claim(token_hash("t"), issued(serial=i * 1000)) for i in range(8))
        )
        assert sum(r is not None for r in results) == 1
        assert await tl.count("certificates") == 1
    finally:
        await tl.close()


async def test_revoking_a_device_marks_its_certificates_and_voids_its_claims(
    tmp_path: Path,
) -> None:
    tl = await Timeline.open(tmp_path / "t.db")
    try:
        for n, device in enumerate(("van-1", "van-1", "van-2")):
            await tl.add_claim(token_hash(f"t{n}"), "acme", device, "van", 1e12, now=10.0)
            assert await tl.redeem_claim(token_hash(f"t{n}"), issued(serial=n << 8), now=20.0)
        await tl.add_claim(token_hash("spare"), "acme", "van-1", "van", 1e12, now=30.0)
        serials = await tl.revoke_device("acme", "van-1", now=40.0)
        assert len(serials) == 2
        assert await tl.revoke_device("acme", "van-1", now=50.0) == []  # already revoked
        assert {c["revoked_at"] for c in await tl.certificates("acme", "van-1")} == {40.0}
        assert [c["revoked_at"] for c in await tl.certificates("acme", "van-2")] == [None]
        # a claim given out before the revocation cannot bring the device back
        assert await tl.redeem_claim(token_hash("spare"), issued(), now=60.0) is None
        revoked = await tl.revoked_certificates(now=100.0)
        assert sorted(format(s, "x") for s, _ in revoked) == sorted(serials)
        assert await tl.revoked_certificates(now=3e9) == []  # expired ones leave the CRL
    finally:
        await tl.close()


async def test_a_schema_4_timeline_is_migrated_to_5(tmp_path: Path) -> None:
    # a version 4 file: today's file without what version 5 added
    path = tmp_path / "old.db"
    tl = await Timeline.open(path)
    await tl.close()
    con = sqlite3.connect(path)
    con.execute("DROP TABLE claims")  # its indexes go with it
    con.execute("DROP TABLE certificates")
    con.execute("PRAGMA user_version=4")
    con.commit()
    con.close()
    tl = await Timeline.open(path)
    try:
        assert SCHEMA_VERSION == 5
        await tl.add_claim(token_hash("x"), "acme", "van-1", "van", 1e12)
        assert await tl.count("claims") == 1
    finally:
        await tl.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 5
    con.close()


# -- the endpoint, in-process -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def provisioning(tmp_path: Path) -> Iterator[tuple[str, Path, Clock, Served]]:
    folder = tmp_path / "pki"
    pki.init_ca(folder)
    settings = PkiSettings(folder, "mqtts://broker.example:8883", "http://hub.example:8090", 90)
    clock = Clock()

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        tl = await Timeline.open(tmp_path / "timeline.db")
        app = build_app(
            tl,
            HealthRegistry(),
            provisioning=settings,
            failed_claims=FailedClaims(burst=3, per_s=0.01),
            clock=clock,
        )
        return app, tl.close

    with Served(make) as served:
        yield served.url, folder, clock, served


def add_claim(served: Served, db: Path, fleet: str, device: str, ttl: float = 3600.0) -> str:
    token = new_token()

    async def add() -> None:
        tl = await Timeline.open(db)
        try:
            await tl.add_claim(token_hash(token), fleet, device, "station", expires_in(ttl))
        finally:
            await tl.close()

    served.run(add())
    return token


def expires_in(ttl: float) -> float:
    return dt.datetime.now(dt.UTC).timestamp() + ttl


def test_the_endpoint_exchanges_a_claim_and_a_csr_for_a_certificate_once(
    provisioning: tuple[str, Path, Clock, Served], tmp_path: Path
) -> None:
    url, folder, _, served = provisioning
    token = add_claim(served, tmp_path / "timeline.db", "acme", "dock-3")
    key, csr = make_csr("evil/forged")
    status, answer, _ = call(f"{url}/v1/provision", {"claim": token, "csr": csr.decode()})
    assert status == 201, answer
    assert (answer["fleet"], answer["device"], answer["role"]) == ("acme", "dock-3", "station")
    assert answer["broker"] == "mqtts://broker.example:8883"
    assert answer["hub_api"] == "http://hub.example:8090"
    assert answer["ca"].encode() == (folder / "ca.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert cn_of(cert) == "acme/dock-3" and cert.public_key() == key.public_key()
    (tmp_path / "dev.crt").write_text(answer["certificate"])
    verified = openssl_verify(folder / "ca.crt", tmp_path / "dev.crt", folder / "crl.pem")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    assert 89.9 < days <= 90.01
    status, again, _ = call(f"{url}/v1/provision", {"claim": token, "csr": csr.decode()})
    assert (status, again) == (403, {"error": CLAIM_REFUSED})
    status, listed, _ = call(f"{url}/v1/devices/acme/dock-3/certificates")
    assert status == 200 and [c["serial"] for c in listed] == [answer["serial"]]
    assert listed[0]["serial"] == format(cert.serial_number, "x")


def test_unknown_expired_and_used_claims_get_the_same_answer(
    provisioning: tuple[str, Path, Clock, Served], tmp_path: Path
) -> None:
    url, _, clock, served = provisioning
    db = tmp_path / "timeline.db"
    _, csr = make_csr()
    used = add_claim(served, db, "acme", "van-1")
    assert call(f"{url}/v1/provision", {"claim": used, "csr": csr.decode()})[0] == 201
    expired = add_claim(served, db, "acme", "van-2", ttl=-1.0)
    answers = []
    for token in (used, expired, new_token(), "not-even-a-token"):
        clock.now += 1000  # the limiter out of the way: this is about the answer
        status, body, _ = call(f"{url}/v1/provision", {"claim": token, "csr": csr.decode()})
        answers.append((status, body))
    assert answers == [(403, {"error": CLAIM_REFUSED})] * 4


def test_a_bad_request_is_400_and_does_not_use_up_the_claim(
    provisioning: tuple[str, Path, Clock, Served], tmp_path: Path
) -> None:
    url, _, _, served = provisioning
    token = add_claim(served, tmp_path / "timeline.db", "acme", "van-9")
    _, edwards = make_csr(key=ed25519.Ed25519PrivateKey.generate())
    cases = [
        ({"claim": token, "csr": "not a csr"}, "not a PEM certificate request"),
        ({"claim": token, "csr": edwards.decode()}, "not EC or RSA"),
        ({"claim": token}, "csr: a string"),
        ({"csr": "x"}, "claim: a string"),
        ([token], "a JSON object"),
    ]
    for body, why in cases:
        status, answer, _ = call(f"{url}/v1/provision", body)
        assert status == 400 and why in answer["error"], (body, answer)
    status, answer, _ = call(f"{url}/v1/provision", raw=b'{"claim": NaN}')
    assert status == 400 and "NaN" in answer["error"]
    status, answer, _ = call(f"{url}/v1/provision", raw=b"[" * 5000 + b"]" * 5000)
    assert status == 400
    status, answer, _ = call(f"{url}/v1/provision", raw=b" " * (PROVISION_MAX_BYTES + 1))
    assert status == 413
    _, csr = make_csr()
    status, answer, _ = call(f"{url}/v1/provision", {"claim": token, "csr": csr.decode()})
    assert status == 201 and answer["device"] == "van-9"


def test_failed_claims_are_rate_limited_per_address(
    provisioning: tuple[str, Path, Clock, Served], tmp_path: Path
) -> None:
    url, _, clock, served = provisioning
    token = add_claim(served, tmp_path / "timeline.db", "acme", "van-3")
    _, csr = make_csr()
    for _ in range(3):
        status, _, _ = call(f"{url}/v1/provision", {"claim": new_token(), "csr": csr.decode()})
        assert status == 403
    # now even a good claim is not looked at from this address
    status, answer, headers = call(f"{url}/v1/provision", {"claim": token, "csr": csr.decode()})
    assert status == 429 and "too many failed claims" in answer["error"]
    assert int(headers["Retry-After"]) == 100  # burst 3, one per 100 s
    clock.now += 100
    status, answer, _ = call(f"{url}/v1/provision", {"claim": token, "csr": csr.decode()})
    assert status == 201 and answer["device"] == "van-3"  # a success costs nothing


def test_without_a_ca_the_hub_says_so(tmp_path: Path) -> None:
    settings = PkiSettings(tmp_path / "none", "mqtts://b:8883", "http://h:1", 825)

    async def make() -> tuple[web.Application, Callable[[], Awaitable[None]]]:
        tl = await Timeline.open(tmp_path / "timeline.db")
        return build_app(tl, HealthRegistry(), provisioning=settings), tl.close

    with Served(make) as served:
        token = add_claim(served, tmp_path / "timeline.db", "acme", "van-1")
        _, csr = make_csr()
        body = {"claim": token, "csr": csr.decode()}
        status, answer, _ = call(f"{served.url}/v1/provision", body)
        assert status == 503 and "hub-bridge ca init" in answer["error"]
        pki.init_ca(tmp_path / "none")  # made while the hub runs: picked up at once
        status, answer, _ = call(f"{served.url}/v1/provision", body)
        assert status == 201, answer


def test_the_openapi_document_describes_provisioning() -> None:
    post = OPENAPI["paths"]["/v1/provision"]["post"]
    assert set(post["responses"]) == {"201", "400", "403", "408", "413", "429", "503"}
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "claim",
        "csr",
    ]
    schema = OPENAPI["components"]["schemas"]["Provisioned"]
    assert set(schema["required"]) == {
        "fleet", "device", "role", "certificate", "ca", "broker", "hub_api"
    }  # fmt: skip
    assert "get" in OPENAPI["paths"]["/v1/devices/{fleet}/{device}/certificates"]


# -- configuration ------------------------------------------------------------------------------


def test_the_pki_section_and_its_defaults(tmp_path: Path) -> None:
    cfg = write_hub_config(tmp_path, "mqtt://10.0.0.2:1883")
    settings = load_hub_config(cfg).pki_settings()
    assert settings.dir == Path("/var/lib/hub-bridge/pki")
    assert settings.broker_url == "mqtts://10.0.0.2:8883"
    port = load_hub_config(cfg).api.listen.rsplit(":", 1)[1]
    assert settings.hub_api_url == f"http://127.0.0.1:{port}"
    assert settings.cert_validity_days == 825
    cfg = write_hub_config(
        tmp_path,
        "mqtts://broker.example:9883",
        pki={"dir": str(tmp_path), "cert_validity": "30d", "hub_api_url": "https://hub.example/"},
    )
    settings = load_hub_config(cfg).pki_settings()
    assert settings.broker_url == "mqtts://broker.example:9883"
    assert settings.hub_api_url == "https://hub.example"
    assert settings.cert_validity_days == 30
    for pki_section, why in (
        ({"broker_url": "mqtt://b:1883"}, "over TLS"),
        ({"broker_url": "mqtts://u:p@b:8883"}, "no password"),
        ({"hub_api_url": "hub.example"}, "http"),
        ({"cert_validity": "10s"}, "greater than or equal"),
        ({"colour": "red"}, "colour"),
    ):
        write_hub_config(tmp_path, "mqtt://127.0.0.1:1883", pki=pki_section)
        with pytest.raises(ConfigError, match=why):
            load_hub_config(tmp_path / "hub.yaml")


# -- a real hub and the real command lines -------------------------------------------------------


def test_provisioning_through_a_running_hub_and_revoking(tmp_path: Path, broker: Mosquitto) -> None:
    folder = tmp_path / "pki"
    cfg = write_hub_config(tmp_path, broker.url, pki={"dir": str(folder)})
    assert hub_cli("ca", "init", "--config", str(cfg)).returncode == 0
    made = hub_cli("claim", "create", "--config", str(cfg), "--fleet", "acme", "--device",
                   "van-042", "--ttl", "10m", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    claim = json.loads(made.stdout)
    assert claim["role"] == "van" and claim["expires"].endswith("Z")
    hub_url, token = parse_claim_text(claim["claim"])
    assert token == claim["token"]
    hub = Proc("hub_bridge", cfg, tmp_path / "hub.log")
    hub.start()
    try:
        assert hub_url == f"http://127.0.0.1:{hub.api_port}"
        _, csr = make_csr("acme/someone-else")
        status, answer, _ = call(f"{hub_url}/v1/provision", {"claim": token, "csr": csr.decode()})
        assert status == 201, answer
        cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
        assert cn_of(cert) == "acme/van-042"
        assert answer["broker"] == "mqtts://127.0.0.1:8883"  # broker.url's host, on TLS
        status, again, _ = call(f"{hub_url}/v1/provision", {"claim": token, "csr": csr.decode()})
        assert status == 403 and again == {"error": CLAIM_REFUSED}
        (tmp_path / "van.crt").write_text(answer["certificate"])
        ok = openssl_verify(folder / "ca.crt", tmp_path / "van.crt", folder / "crl.pem")
        assert ok.returncode == 0, ok.stdout + ok.stderr

        revoked = hub_cli("device", "revoke", "--config", str(cfg), "--fleet", "acme",
                          "--device", "van-042")  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr
        assert answer["serial"] in revoked.stdout
        crl = x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        assert crl.is_signature_valid(pki.load_certificate(folder / "ca.crt").public_key())
        refused = openssl_verify(folder / "ca.crt", tmp_path / "van.crt", folder / "crl.pem")
        assert refused.returncode != 0 and "revoked" in refused.stdout + refused.stderr
        # the hub (still running) shows the revocation
        status, listed, _ = call(f"{hub_url}/v1/devices/acme/van-042/certificates")
        assert status == 200 and listed[0]["revoked_at"] is not None
        # again: nothing new, the CRL rewritten all the same; an unknown device is an error
        again_r = hub_cli("device", "revoke", "--config", str(cfg), "--fleet", "acme",
                          "--device", "van-042")  # fmt: skip
        assert again_r.returncode == 0 and "revoked already" in again_r.stdout
        unknown = hub_cli("device", "revoke", "--config", str(cfg), "--fleet", "acme",
                          "--device", "van-43")  # fmt: skip
        assert unknown.returncode == 1 and "no certificate was ever issued" in unknown.stderr
    finally:
        hub.stop()


def test_claim_create_prints_the_text_and_a_readable_qr_code(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    cfg = write_hub_config(
        tmp_path,
        "mqtt://127.0.0.1:1883",
        pki={"dir": str(folder), "hub_api_url": "http://hub.depot.example:8090"},
    )
    nothing = hub_cli("claim", "create", "--config", str(cfg), "--fleet", "acme", "--device", "d")
    assert nothing.returncode == 1 and "hub-bridge ca init" in nothing.stderr
    pki.init_ca(folder)
    made = hub_cli("claim", "create", "--config", str(cfg), "--fleet", "acme", "--device",
                   "dock-1", "--role", "station", "--qr", "light")  # fmt: skip
    assert made.returncode == 0, made.stderr
    lines = made.stdout.split("\n")
    assert lines[0].startswith("claim for acme/dock-1 (role station), once, until ")
    text = lines[2]
    url, token = parse_claim_text(text)
    assert url == "http://hub.depot.example:8090" and lines[1] == f"token: {token}"
    assert decode_terminal_qr("\n".join(lines[4:]), dark_terminal=False) == text
    assert f"edge-agent provision --claim '{text}'" in made.stderr

    async def stored() -> list[dict[str, Any]]:
        tl = await Timeline.open(tmp_path / "timeline.db")
        try:
            return await tl.claims("acme", "dock-1")
        finally:
            await tl.close()

    [row] = asyncio.run(stored())
    assert row["role"] == "station" and row["used_at"] is None
    assert 3590 < row["expires"] - row["created"] <= 3600
    for bad, code, why in (
        (["--fleet", "Acme", "--device", "d"], 2, "--fleet"),
        (["--fleet", "a", "--device", "d", "--ttl", "40d"], 2, "at most 30d"),
        (["--fleet", "a", "--device", "d", "--ttl", "soon"], 2, "--ttl"),
    ):
        result = hub_cli("claim", "create", "--config", str(cfg), *bad)
        assert result.returncode == code and why in result.stderr, result.stderr
