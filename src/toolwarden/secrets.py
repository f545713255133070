"""Secrets by reference: a run names variables, the worker fills in their values at launch.

A `RunSpec` carries only the names (`toolwarden run --secret API_TOKEN`, `secrets:` in a tool
profile). The worker resolves each one as it starts the tool, from the secrets file its config
names (`worker.secrets_file`) or else its own environment, so a value never enters the
workflow's history, a query, the mirror, the worker's log or its metrics. `--env` values, by
contrast, are plain configuration: they travel in the run's spec and `show` prints them.

Plain functions, no Temporal.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

# Keys an `--env` user most likely meant as a secret.
SECRET_LOOKING_KEY = re.compile(r"TOKEN|KEY|PASSWORD|SECRET", re.IGNORECASE)
# Output lines kept in heartbeat details and results are scrubbed of values at least this long;
# shorter ones ("1", "yes") would blank out ordinary text and hide little.
MIN_REDACTED_LENGTH = 4
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class SecretError(Exception):
    """A secret cannot be resolved; the message names the secret and the file, never a value."""


def looks_like_secret(key: str) -> bool:
    return bool(SECRET_LOOKING_KEY.search(key))


def read_secrets_file(path: Path) -> dict[str, str]:
    """Parse a dotenv-like file: `NAME=value` lines, `#` comments, optional `export` and quotes.

    The file must be a regular file that neither group nor others can read or write, like an
    SSH key: a secret readable by anyone on the host is no secret.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise SecretError(f"secrets file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise SecretError(f"secrets file {path}: not a regular file")
    if mode & 0o077:
        raise SecretError(
            f"secrets file {path} is open to others (mode {stat.S_IMODE(mode):04o}); "
            f"chmod 600 {path}"
        )
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise SecretError(f"secrets file {path} line {number}: expected NAME=value")
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def resolve_secrets(
    names: Sequence[str], environ: Mapping[str, str], secrets_file: Path | None
) -> dict[str, str]:
    """The value of each named secret: from `secrets_file` if it holds it, else `environ`."""
    if not names:
        return {}
    from_file = read_secrets_file(secrets_file) if secrets_file is not None else {}
    resolved: dict[str, str] = {}
    missing = []
    for name in names:
        if name in from_file:
            resolved[name] = from_file[name]
        elif name in environ:
            resolved[name] = environ[name]
        else:
            missing.append(name)
    if missing:
        where = f"in {secrets_file} or " if secrets_file is not None else ""
        raise SecretError(
            f"secret {', '.join(missing)} not found {where}in the worker's environment"
        )
    return resolved


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """`text` with each secret value replaced by `[secret NAME]`."""
    for name, value in secrets.items():
        if len(value) >= MIN_REDACTED_LENGTH and value in text:
            text = text.replace(value, f"[secret {name}]")
    return text
