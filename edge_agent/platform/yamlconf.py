"""Load a YAML configuration into a pydantic model, with errors as ``file:line: key: message``.

The YAML is composed into nodes first so every key path keeps its line; a pydantic error's
location is mapped back to the deepest node that exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "load_model", "mask_secrets"]

M = TypeVar("M", bound=BaseModel)

SECRET_KEYS = ("password", "secret", "token", "passphrase", "api_key")


class ConfigError(Exception):
    """An invalid configuration; ``str()`` is ``file:line: key: message``."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.path = path
        self.line = line
        self.key = key
        self.message = message


def _index(node: yaml.Node, prefix: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    lines[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            _index(value_node, key, lines)
            lines[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*prefix, str(i)), lines)


def load_model(model: type[M], path: str | Path, text: str | None = None) -> M:
    """Parse and validate a YAML file (or ``text`` attributed to ``path``) into ``model``."""
    path = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(path, None, "", exc.strerror or str(exc)) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(path, None, "", f"not UTF-8 text: {exc.reason}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, line, "", f"YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, 1, "", "the top level must be a mapping of sections")
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _index(node, (), lines)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(str(p) for p in err["loc"])
        # pydantic puts union/validator tags in the location; keep the parts that are keys
        keys = tuple(p for p in loc if not p.startswith(("function-", "union[")))
        probe = keys
        while probe and probe not in lines:
            probe = probe[:-1]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key missing"
        raise ConfigError(path, lines.get(probe), ".".join(keys), msg) from None


def _secret_key(key: str) -> bool:
    low = key.lower()
    # a path to a secret (api.token_file, broker.tls.key is a path too) is not the secret
    if low.endswith(("_file", "_path", "_dir")):
        return False
    return any(s in low for s in SECRET_KEYS)


def mask_secrets(obj: Any) -> Any:
    """A copy of a config dump with values of secret-looking keys replaced by ``***``."""
    if isinstance(obj, dict):
        return {k: ("***" if _secret_key(k) and v else mask_secrets(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [mask_secrets(v) for v in obj]
    return obj
