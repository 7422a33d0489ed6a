"""A van behind its own network link, for tests: a network namespace, a veth pair to the root
namespace, and nftables rules that make the van's traffic to one port go silent or lossy.

A tunnel does not reset connections: packets just stop. So the rules drop on the van's wire
(nftables ``netdev`` ingress and egress hooks of its veth end), below its IP stack: no RST, no
ICMP, and no local send error either (a drop in the ``inet`` output hook would hand the sender
``EPERM``). Everything else on the link, such as the agent's local API, keeps working.

It needs Linux, root, ``ip`` (iproute2) and ``nft`` (nftables), which ``scripts/setup`` installs.
``VanNet.create`` raises ``NetnsUnavailable`` saying exactly what is missing; that is the one
reason a test may skip.

Names carry the creating process's pid, so parallel runs do not collide, and what a killed run
left behind is removed by the next one.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

__all__ = ["NetnsUnavailable", "VanNet"]

NS_PREFIX = "lm-van-"
TABLE = "lm_link"
# /30 links are taken from here; 10.128.0.0/9 holds 2**21 of them
POOL = ipaddress.ip_network("10.128.0.0/9")
_serial = count()


class NetnsUnavailable(Exception):
    """This machine cannot build a van's network (the message says why)."""


def _tool(name: str) -> str | None:
    # root's PATH has /usr/sbin; a test runner's may not
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a command; raise with its stderr when it fails."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _used_networks(ip: str) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address or a route in (not the default)."""
    nets: list[ipaddress.IPv4Network] = []
    for line in _run([ip, "-4", "-o", "addr", "show"]).splitlines():
        m = re.search(r"\binet (\S+)", line)
        if m:
            nets.append(ipaddress.IPv4Interface(m.group(1)).network)
    for line in _run([ip, "-4", "route", "show", "table", "all"]).splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("local", "broadcast", "unreachable", "blackhole", "prohibit", "throw"):
            first = line.split()[1]
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(first, strict=False)
            if net.prefixlen > 0:
                nets.append(net)
    return nets


def _remove_stale(ip: str) -> None:
    """Delete the namespaces (and their links) of earlier runs whose process is gone."""
    for line in _run([ip, "netns", "list"]).splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-(\d+)", name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(RuntimeError):
                _run([ip, "link", "del", f"lmh{m.group(1)}x{m.group(2)}"])
            with contextlib.suppress(RuntimeError):
                _run([ip, "netns", "del", name])


@dataclass(slots=True)
class VanNet:
    """A network namespace joined to the root namespace by a /30 veth link.

    The van's end is ``van_addr`` on ``van_if`` inside ``name``; the root end is ``host_addr``
    on ``host_if``. An nftables table ``lm_link`` on the van's end starts empty (the link
    works); ``dead_zone``, ``lossy`` and ``clear`` change it in one transaction each."""

    name: str
    host_if: str
    van_if: str
    host_addr: str
    van_addr: str
    ip: str
    nft_bin: str

    @classmethod
    def create(cls) -> VanNet:
        """Build a new van network; ``NetnsUnavailable`` if this machine cannot."""
        if not sys.platform.startswith("linux"):
            raise NetnsUnavailable(f"network namespaces are Linux only (this is {sys.platform})")
        if os.geteuid() != 0:
            raise NetnsUnavailable(
                f"creating network namespaces needs root (running as {getpass.getuser()})"
            )
        ip, nft = _tool("ip"), _tool("nft")
        if ip is None:
            raise NetnsUnavailable("`ip` (iproute2) is not installed: run scripts/setup")
        if nft is None:
            raise NetnsUnavailable("`nft` (nftables) is not installed: run scripts/setup")
        _remove_stale(ip)
        pid, n = os.getpid(), next(_serial)
        name = f"{NS_PREFIX}{pid}-{n}"
        try:
            _run([ip, "netns", "add", name])
        except RuntimeError as exc:
            raise NetnsUnavailable(
                f"this machine cannot create a network namespace: {exc}"
            ) from None
        # interface names are limited to 15 characters: "lmh" + pid (<= 7 digits) + "x" + n
        net = cls(name, f"lmh{pid}x{n}", f"lmv{pid}x{n}", "", "", ip, nft)
        try:
            net._link(pid, n)
            net._probe_nft()
        except BaseException:
            net.close()
            raise
        return net

    def _link(self, pid: int, n: int) -> None:
        ip = self.ip
        try:
            _run([ip, "link", "add", self.host_if, "type", "veth", "peer", "name", self.van_if])
        except RuntimeError as exc:
            raise NetnsUnavailable(f"this machine cannot create a veth pair: {exc}") from None
        used = _used_networks(ip)
        links = 2 ** (32 - POOL.prefixlen - 2)
        for step in range(links):
            index = (pid * 16 + n + step * 7919) % links  # a pid's own corner, then further
            subnet = ipaddress.IPv4Network((int(POOL.network_address) + 4 * index, 30))
            if not any(subnet.overlaps(u) for u in used):
                break
        else:
            raise RuntimeError(f"no free /30 left in {POOL}")
        host, van = list(subnet.hosts())
        self.host_addr, self.van_addr = str(host), str(van)
        _run([ip, "link", "set", self.van_if, "netns", self.name])
        _run([ip, "addr", "add", f"{host}/30", "dev", self.host_if])
        _run([ip, "link", "set", self.host_if, "up"])
        _run([ip, "-n", self.name, "addr", "add", f"{van}/30", "dev", self.van_if])
        _run([ip, "-n", self.name, "link", "set", self.van_if, "up"])
        _run([ip, "-n", self.name, "link", "set", "lo", "up"])

    def _probe_nft(self) -> None:
        # the table the rules live in; failing here is the kernel's (no nf_tables, or no
        # egress hook before Linux 5.16), not a rule of ours
        script = f"""
        table netdev {TABLE} {{
          chain ingress {{ type filter hook ingress device "{self.van_if}" priority 0; }}
          chain egress {{ type filter hook egress device "{self.van_if}" priority 0; }}
        }}
        """
        try:
            self.nft(script)
        except RuntimeError as exc:
            raise NetnsUnavailable(
                f"nftables cannot filter the van's link (netdev ingress/egress hooks): {exc}"
            ) from None

    def argv(self, *cmd: str) -> list[str]:
        """``cmd`` run inside the van's namespace."""
        return [self.ip, "netns", "exec", self.name, *cmd]

    def nft(self, script: str) -> str:
        """Run an nft script (one transaction) inside the van's namespace; its output."""
        return _run(self.argv(self.nft_bin, "-f", "-"), stdin=script)

    def _set_rules(self, ingress: str, egress: str) -> None:
        script = f"flush chain netdev {TABLE} ingress\nflush chain netdev {TABLE} egress\n"
        if ingress:
            script += f"add rule netdev {TABLE} ingress {ingress}\n"
        if egress:
            script += f"add rule netdev {TABLE} egress {egress}\n"
        self.nft(script)

    def dead_zone(self, port: int) -> None:
        """Silently drop every packet to and from TCP ``port`` (the link goes quiet)."""
        self._set_rules(f"tcp sport {port} counter drop", f"tcp dport {port} counter drop")

    def lossy(self, port: int, percent: int) -> None:
        """Drop ``percent`` % of the packets to and from TCP ``port``, at random."""
        if not 0 < percent < 100:
            raise ValueError(f"lossy: percent must be between 1 and 99, not {percent}")
        rule = f"numgen random mod 100 < {percent} counter drop"
        self._set_rules(f"tcp sport {port} {rule}", f"tcp dport {port} {rule}")

    def clear(self) -> None:
        """No rule: the link works again."""
        self._set_rules("", "")

    def dropped(self) -> dict[str, int]:
        """Packets dropped so far by the current rules, per direction ("ingress", "egress")."""
        out = {"ingress": 0, "egress": 0}
        listing = json.loads(_run(self.argv(self.nft_bin, "-j", "list", "table", "netdev", TABLE)))
        for item in listing.get("nftables", []):
            rule = item.get("rule")
            if not rule:
                continue
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    out[rule["chain"]] += int(expr["counter"]["packets"])
        return out

    def close(self) -> None:
        """Remove the link and the namespace (idempotent; processes inside must be gone)."""
        # deleting one end of a veth removes both at once; a namespace's own removal of its
        # interfaces is asynchronous
        with contextlib.suppress(RuntimeError):
            _run([self.ip, "link", "del", self.host_if])
        with contextlib.suppress(RuntimeError):
            _run([self.ip, "netns", "del", self.name])
