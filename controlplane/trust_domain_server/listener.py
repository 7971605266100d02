"""Where the local API listens: a Unix socket by default, TCP with a bearer token on request.

The API does no workload attestation (it is for an agent or an operator on the host), so who
can reach it is the whole access control: the socket is 0600 in the data folder; a TCP
listener must be on loopback unless the operator says otherwise, and needs the token the server
keeps in its data folder.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from controlplane.api.serving import listen_address, listen_on

from .state import API_SOCKET_FILE, StateStore

__all__ = ["ListenerPlan"]

# sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class ListenerPlan:
    """A checked listener choice (`from_args` raises SystemExit with the reason)."""

    socket_path: Path | None = None  # Unix socket
    listen: str | None = None  # TCP, as given (checked: HOST:PORT, loopback unless allowed)

    @classmethod
    def from_args(
        cls, data_dir: Path, socket_path: Path | None, listen: str | None, allow_non_loopback: bool
    ) -> ListenerPlan:
        if listen:
            _check_tcp_address(listen, allow_non_loopback)
            return cls(listen=listen)
        path = (socket_path or data_dir / API_SOCKET_FILE).absolute()
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise SystemExit(
                f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
                "choose a shorter --socket"
            )
        return cls(socket_path=path)

    def open(self, store: StateStore) -> tuple[socket.socket, dict[str, str], str | None]:
        """(listening socket, what to announce, bearer token or None). Call before starting
        threads: a Unix socket is created under a process-wide umask."""
        if self.socket_path is not None:
            return _bind_unix(self.socket_path), {"socket": str(self.socket_path)}, None
        assert self.listen is not None
        sock = listen_on(self.listen)
        host, port = sock.getsockname()[:2]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        token = store.load_or_create_api_token()
        return sock, {"listen": url, "token_file": str(store.api_token_path)}, token

    def close(self) -> None:
        """Remove the socket file (the listening socket itself is closed by the server)."""
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


def _is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def _check_tcp_address(listen: str, allow_non_loopback: bool) -> None:
    host, _ = listen_address(listen)
    if not allow_non_loopback and not _is_loopback(host):
        raise SystemExit(
            f"--listen {listen}: {host} is not a loopback address; the local API does no "
            "workload attestation, so it only listens beyond this host with --allow-non-loopback"
        )


def _bind_unix(path: Path) -> socket.socket:
    """A Unix socket at `path`, mode 0600 from the start: call before starting any thread, as
    the umask is process-wide. A stale socket file is replaced; a live one is refused."""
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left behind by a process that is gone
        else:
            raise SystemExit(f"{path} is in use by a running server")
        finally:
            probe.close()
    elif path.exists() or path.is_symlink():
        raise SystemExit(f"{path} exists and is not a socket; refusing to replace it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
