"""Kaggle credentials, found before the kaggle package is imported, and kept out of all output.

The kaggle package (2.x) authenticates when imported and, when that fails, prints a page of help
to standard output and carries on unauthenticated; older versions exit the process. So fgvc
looks for the credentials first, in the kaggle package's own order, and turns each missing or
broken case into one line naming it:

1. ``KAGGLE_API_TOKEN``: an API token (kaggle.com/settings/api), or the path of a file holding one;
2. ``~/.kaggle/access_token`` (or ``access_token.txt``): the token in a file;
3. legacy keys: ``KAGGLE_USERNAME`` and ``KAGGLE_KEY`` together, or ``kaggle.json``
   (``{"username": ..., "key": ...}``) in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``;
4. ``~/.kaggle/credentials.json``, written by ``kaggle auth login`` (OAuth).

Every secret found (token, key, file contents) is scrubbed from any text fgvc prints.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fgvc.errors import FgvcError

HOW = ("set KAGGLE_API_TOKEN to a token from https://www.kaggle.com/settings/api or save it in "
       "~/.kaggle/access_token; legacy keys: KAGGLE_USERNAME and KAGGLE_KEY, or "
       "~/.kaggle/kaggle.json")


class CredentialsError(FgvcError, RuntimeError):
    """No usable Kaggle credentials; the message names the case and how to fix it."""


@dataclass
class Credentials:
    source: str  # where they came from, for messages (never the secret itself)
    secrets: list[str] = field(default_factory=list)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a token is no file name (too long, NUL byte, ...)
        return False


def _kaggle_dir() -> Path:
    return Path.home() / ".kaggle"


def _config_dir() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or _kaggle_dir())


def _read_token_file(path: Path, what: str) -> str:
    token = path.read_text(errors="replace").strip()
    if not token:
        raise CredentialsError(f"{what} {path} is empty: {HOW}")
    return token


def find_credentials() -> Credentials:
    """The first credentials present, in the kaggle package's order; a malformed one is an
    error (not skipped: the user meant it to be used)."""
    env_token = os.environ.get("KAGGLE_API_TOKEN")
    if env_token is not None:
        if not env_token.strip():
            raise CredentialsError(f"KAGGLE_API_TOKEN is set but empty: {HOW}")
        if _is_file(env_token):
            return Credentials(f"the file named by KAGGLE_API_TOKEN ({env_token})",
                               [_read_token_file(Path(env_token), "KAGGLE_API_TOKEN names the file")])
        return Credentials("KAGGLE_API_TOKEN", [env_token.strip()])
    for name in ("access_token", "access_token.txt"):
        path = _kaggle_dir() / name
        if path.exists():
            return Credentials(str(path), [_read_token_file(path, "token file")])
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return Credentials("KAGGLE_USERNAME/KAGGLE_KEY", [key])
    if bool(user) != bool(key):
        present, absent = ("KAGGLE_USERNAME", "KAGGLE_KEY") if user else ("KAGGLE_KEY", "KAGGLE_USERNAME")
        raise CredentialsError(f"{present} is set but {absent} is not: a legacy Kaggle key needs "
                               f"both (or {HOW})")
    config = _config_dir() / "kaggle.json"
    if config.exists():
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            raise CredentialsError(f"{config} is not valid JSON: expected "
                                   '{"username": "...", "key": "..."}') from None
        missing = [k for k in ("username", "key") if not (isinstance(data, dict) and data.get(k))]
        if missing:
            raise CredentialsError(f"{config} lacks {' and '.join(missing)}: expected "
                                   '{"username": "...", "key": "..."}')
        return Credentials(str(config), [str(data["key"])])
    oauth = _kaggle_dir() / "credentials.json"
    if oauth.exists():
        return Credentials(f"{oauth} (kaggle auth login)", _oauth_secrets(oauth))
    raise CredentialsError(f"no Kaggle credentials found: {HOW}")


def _oauth_secrets(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [str(v) for k, v in data.items() if "token" in k.lower() and v] if isinstance(data, dict) else []


def known_secrets() -> list[str]:
    """Every credential value present in the environment or the usual files, found or not by
    :func:`find_credentials`, so that none can leak through an error message."""
    secrets = [os.environ.get(k, "") for k in ("KAGGLE_API_TOKEN", "KAGGLE_KEY")]
    files = [_kaggle_dir() / "access_token", _kaggle_dir() / "access_token.txt"]
    env_token = os.environ.get("KAGGLE_API_TOKEN")
    if env_token and _is_file(env_token):
        files.append(Path(env_token))
    for path in files:
        if path.is_file():
            secrets.append(path.read_text(errors="replace").strip())
    config = _config_dir() / "kaggle.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        secrets.append(str(json.loads(config.read_text()).get("key", "")))
    secrets += _oauth_secrets(_kaggle_dir() / "credentials.json")
    return [s for s in secrets if s and len(s) >= 4]


def scrub(text: str) -> str:
    """``text`` with every known credential replaced by ``***``."""
    for secret in sorted(set(known_secrets()), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
