"""Persistence in the data dir, so a restarted server serves with the same keys even while
the control plane is down.

Files (all 0600, written atomically: temp file, fsync, rename; the folder is 0700):

- ``identity.json``: server id, server credential (a secret), trust domain and placement;
- ``state.json``: last applied effective config, last bundle from the control plane, key
  records, the specs of the key managers that hold them, and the served bundle's sequence;
- ``api_token``: the bearer token of the local API when it listens on TCP (a secret);
- ``api.sock``: the local API's Unix socket (default listener, 0600).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from controlplane.files import ensure_private_dir, write_private_atomically

__all__ = ["API_SOCKET_FILE", "Identity", "StateStore", "load_or_create_key_identifier"]

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
STATE_FILE = "state.json"
API_TOKEN_FILE = "api_token"
API_SOCKET_FILE = "api.sock"


@dataclass(frozen=True)
class Identity:
    server_id: str
    credential: str
    trust_domain: str
    trust_domain_id: str
    trust_domain_deployment_id: str
    cluster_id: str | None
    endpoint: str

    def __repr__(self) -> str:  # keep the credential out of logs and tracebacks
        return f"Identity(server_id={self.server_id!r}, trust_domain={self.trust_domain!r})"


class StateStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        ensure_private_dir(self.data_dir)

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.data_dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # A corrupt file must not be silently replaced: the keys it names would be lost.
            raise RuntimeError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise RuntimeError(f"{path} does not hold a JSON object")
        return data

    def load_identity(self) -> Identity | None:
        data = self._read(IDENTITY_FILE)
        return Identity(**data) if data else None

    def save_identity(self, identity: Identity) -> None:
        write_private_atomically(
            self.data_dir / IDENTITY_FILE, json.dumps(asdict(identity)).encode()
        )

    def forget_identity(self) -> None:
        """Drop the identity (the control plane deregistered it): the next start joins again."""
        (self.data_dir / IDENTITY_FILE).unlink(missing_ok=True)

    @property
    def api_token_path(self) -> Path:
        return self.data_dir / API_TOKEN_FILE

    def load_or_create_api_token(self) -> str:
        """The local API's bearer token (created on first use, 0600); kept across restarts so
        callers configured with it keep working."""
        path = self.api_token_path
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            token = ""
        if not token:
            token = secrets.token_urlsafe(32)
            write_private_atomically(path, (token + "\n").encode())
            log.info("created the local API token in %s", path)
        return token

    def load_state(self) -> dict[str, Any] | None:
        return self._read(STATE_FILE)

    def save_state(self, state: dict[str, Any]) -> None:
        write_private_atomically(
            self.data_dir / STATE_FILE, json.dumps(state, sort_keys=True).encode()
        )


def load_or_create_key_identifier(path: Path) -> str:
    """The stable server id for key managers (SPIRE's key_identifier_file): created with a new
    UUID when missing, 0600."""
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = str(uuid.uuid4())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its id
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    log.info("created key identifier file %s", path)
    return value
