"""GNSS receiver profiles: what to write to a known receiver part, at which rates to look for it.

One YAML file per profile lives next to this module (package data, so an installed agent finds
them as a source checkout does; ``firmware_configs/gnss/`` links to the same files). A device
file composes one with ``gnss: {profile: ublox-m8, source: /dev/ttyACM0}`` (``GnssConfig``).

A profile file::

    name: quectel-l76           # the file's stem, what ``gnss.profile`` names
    vendor: Quectel
    parts: [L76, L76-L]
    protocol: PMTK              # the receiver's configuration language
    baud: 9600                  # the rate the part ships at ...
    baud_source: "<document>, <section>"
    bauds: [9600, 115200, ...]  # ... first in the autodetect's trial order
    rate_hz: 1.0                # fixes per second once the init sentences are written
    rate_source: "<document>, <section>"
    init:                       # written in order after the port is open
      - sentence: "$PMTK220,1000*1F"
        does: one fix per second
        source: "<document>, <section>"
    extra: [...]                # the same shape: checksummed, documented, never written

Every sentence carries its ``*hh`` and must be correct: a wrong checksum is a load error (the
receiver would ignore the command without a word). ``extra`` holds commands an operator may add
to ``gnss.init`` by hand (a baud change: written at start it would leave the agent listening at
the old rate until the silence watchdog reopens the port and re-detects it).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.gnss.nmea import checksum
from edge_agent.platform.yamlconf import ConfigError, load_model

__all__ = ["Command", "ReceiverProfile", "load_profile", "profile_names", "profiles"]

_SENTENCE = re.compile(r"^\$([A-Z0-9]+),([ -~]*)\*([0-9A-F]{2})$")
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class Command(BaseModel):
    """One proprietary sentence, what it does and the document that defines it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sentence: str
    does: str = Field(min_length=3)
    source: str = Field(min_length=10)

    @field_validator("sentence")
    @classmethod
    def _checked(cls, sentence: str) -> str:
        m = _SENTENCE.match(sentence)
        if m is None or "*" in m.group(2) or "$" in m.group(2):
            raise ValueError(f"{sentence!r}: not '$BODY*HH' in printable ASCII")
        body = sentence[1 : sentence.rindex("*")].encode("ascii")
        want = f"{checksum(body):02X}"
        if m.group(3) != want:
            raise ValueError(f"{sentence!r}: checksum is {m.group(3)}, the sentence needs {want}")
        return sentence


class ReceiverProfile(BaseModel):
    """A receiver part's init sentences, baud rates and fix rate (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    vendor: str = Field(min_length=1)
    parts: list[str] = Field(min_length=1)
    protocol: Literal["UBX/PUBX", "PMTK", "SiRF NMEA"]
    baud: int
    baud_source: str = Field(min_length=10)
    bauds: list[int] = Field(min_length=1)
    rate_hz: float = Field(gt=0, le=50)
    rate_source: str = Field(min_length=10)
    init: list[Command] = Field(min_length=1)
    extra: list[Command] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"{name!r}: lower-case words joined by '-'")
        return name

    @field_validator("bauds")
    @classmethod
    def _bauds(cls, bauds: list[int]) -> list[int]:
        for b in bauds:
            if not 300 <= b <= 4_000_000:
                raise ValueError(f"{b} is not a serial baud rate")
        if len(set(bauds)) != len(bauds):
            raise ValueError("a rate is tried twice")
        return bauds

    @model_validator(mode="after")
    def _default_first(self) -> ReceiverProfile:
        # The part's own rate is tried first: an unconfigured receiver answers at once.
        if self.bauds[0] != self.baud:
            raise ValueError(f"bauds must start with the default baud {self.baud}")
        return self

    @property
    def init_sentences(self) -> list[str]:
        """The init sentences, in the order they are written (what ``gnss.init`` becomes)."""
        return [c.sentence for c in self.init]


def _folder() -> Traversable:
    return resources.files(__name__)


@cache
def profiles() -> dict[str, ReceiverProfile]:
    """Every shipped profile by name (loaded once; a broken file is a ConfigError)."""
    found: dict[str, ReceiverProfile] = {}
    for entry in sorted(_folder().iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        stem = entry.name.removesuffix(".yaml")
        where = f"edge_agent/gnss/profiles/{entry.name}"
        profile = load_model(ReceiverProfile, where, entry.read_text(encoding="utf-8"))
        if profile.name != stem:
            raise ConfigError(where, None, "name", f"{profile.name!r} is not the file's {stem!r}")
        found[stem] = profile
    return found


def profile_names() -> list[str]:
    """The names ``gnss.profile`` accepts, sorted."""
    return sorted(profiles())


def load_profile(name: str) -> ReceiverProfile:
    """The profile called ``name``; ValueError naming the known ones when there is none."""
    known = profiles()
    if name not in known:
        raise ValueError(f"unknown receiver profile {name!r}; known: {', '.join(sorted(known))}")
    return known[name]
