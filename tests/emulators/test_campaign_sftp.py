"""Campaign's SFTP storage in the emulator: a real asyncssh client, the host key pinned, the login, the
chroot, the `sftp_disconnect` fault, and what `write_config` / `mapsync emulate --write-config` write."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest
import yaml

from mapsync.emulators.server import Emulator, Served, start_in_thread, write_config
from tests.emulators import sftp_client
from tests.emulators.sftp_client import upload


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Emulator, Served]]:
    emulator = Emulator(seed=3, contacts=20, signal_interval_seconds=1.0, import_rows_per_second=1e6)
    running = start_in_thread(emulator)
    try:
        yield emulator, running
    finally:
        running.stop()


def test_a_client_pinning_the_generated_host_key_uploads_and_renames(served: tuple[Emulator, Served]) -> None:
    emulator, _ = served
    assert emulator.sftp_host_key_line.startswith("ssh-ed25519 AAAA")
    upload(emulator, {"hello.csv": b"externalId,email\nk1,a@example.com\n"})
    assert (emulator.sftp_root / "incoming" / "hello.csv").read_bytes() == b"externalId,email\nk1,a@example.com\n"
    assert not (emulator.sftp_root / "incoming" / "hello.csv.part").exists()
    assert sftp_client.listdir(emulator, "/") == ["incoming", "outgoing"]
    # Uploading the same name again (a restarted run) replaces the file.
    upload(emulator, {"hello.csv": b"externalId\nk2\n"})
    assert (emulator.sftp_root / "incoming" / "hello.csv").read_bytes() == b"externalId\nk2\n"


def test_a_client_pinning_another_key_refuses_the_server(served: tuple[Emulator, Served]) -> None:
    emulator, _ = served
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        upload(emulator, {"never.csv": b"x\n"}, host_key=other)
    assert not (emulator.sftp_root / "incoming" / "never.csv").exists()


def test_each_emulator_has_its_own_host_key_and_folder() -> None:
    a, b = Emulator(contacts=0), Emulator(contacts=0)
    assert a.sftp_host_key_line != b.sftp_host_key_line
    assert a.sftp_root != b.sftp_root
    assert sorted(p.name for p in a.sftp_root.iterdir()) == ["incoming", "outgoing"]


def test_a_wrong_password_is_refused(served: tuple[Emulator, Served]) -> None:
    emulator, _ = served

    async def attempt() -> None:
        async with await sftp_client._connect(emulator, password="not-the-password"):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(attempt())


def _key_login(emulator: Emulator, key: asyncssh.SSHKey) -> list[str]:
    """Log in with ``key`` only (no password), and list the root."""

    async def attempt() -> list[str]:
        username, _ = emulator.sftp_credentials
        connecting = asyncssh.connect(
            "127.0.0.1", emulator.sftp_port, username=username, client_keys=[key], password=None,
            known_hosts=sftp_client.pinned(emulator.sftp_host_key_line), agent_path=None, config=None)
        async with await connecting as conn, conn.start_sftp_client() as sftp:
            return sorted(await sftp.listdir("/"))

    return asyncio.run(attempt())


def test_a_key_authorized_through_the_control_endpoint_logs_in_and_another_key_does_not(
        served: tuple[Emulator, Served]) -> None:
    emulator, running = served
    key, other = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        _key_login(emulator, key)  # not authorized yet
    with httpx.Client(verify=running.client_ssl(), base_url=running.base_url, timeout=30) as client:
        bad = client.put("/_emulator/sftp/keys", json={"public_key": "ssh-ed25519 not-a-key"})
        assert bad.status_code == 400 and "not an OpenSSH public key line" in bad.json()["error"]
        added = client.put("/_emulator/sftp/keys", json={"public_key": key.export_public_key().decode()})
        assert added.status_code == 200 and added.json()["authorized_keys"] >= 1
    assert [n for n in _key_login(emulator, key) if not n.startswith(".")] == ["incoming", "outgoing"]
    with pytest.raises(asyncssh.PermissionDenied):
        _key_login(emulator, other)


def test_the_client_cannot_leave_the_served_folder(served: tuple[Emulator, Served]) -> None:
    emulator, _ = served
    # "/.." is the root itself: the served folder is the whole filesystem the client sees.
    assert sftp_client.listdir(emulator, "/..") == ["incoming", "outgoing"]
    with pytest.raises(asyncssh.SFTPError):
        sftp_client.read(emulator, "/../../etc/passwd")


def test_sftp_disconnect_drops_the_next_upload_once() -> None:
    emulator = Emulator(contacts=0, faults="sftp_disconnect")
    running = start_in_thread(emulator)
    try:
        big = b"externalId\n" + b"".join(b"key-%06d\n" % i for i in range(500))  # > 1 KiB
        with pytest.raises((asyncssh.Error, ConnectionError, OSError)):
            upload(emulator, {"big.csv": big})
        part = emulator.sftp_root / "incoming" / "big.csv.part"
        assert part.exists() and part.stat().st_size <= 1024  # what arrived before the line dropped
        assert not (emulator.sftp_root / "incoming" / "big.csv").exists()
        assert emulator.adobe_faults.counts["sftp_disconnect"] == 1
        upload(emulator, {"big.csv": big})  # the fault is spent: the retry goes through whole
        assert (emulator.sftp_root / "incoming" / "big.csv").read_bytes() == big
    finally:
        running.stop()


def test_the_server_stops_with_the_emulator() -> None:
    emulator = Emulator(contacts=0)
    running = start_in_thread(emulator)
    port = emulator.sftp_port
    assert port is not None
    running.stop()
    assert emulator.sftp_port is None
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))


def test_a_busy_sftp_port_is_said() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        emulator = Emulator(contacts=0)
        with pytest.raises(OSError) as caught:
            emulator.start_sftp("127.0.0.1", taken.getsockname()[1])
        assert caught.value.errno == errno.EADDRINUSE


def test_no_sftp_server_without_sftp() -> None:
    emulator = Emulator(contacts=0, sftp=False)
    running = start_in_thread(emulator)
    try:
        assert emulator.sftp_port is None and emulator.bulk_setup() is None
    finally:
        running.stop()


def test_write_config_with_the_bulk_setup(tmp_path: Path, served: tuple[Emulator, Served]) -> None:
    emulator, running = served
    setup = emulator.bulk_setup()
    assert setup is not None
    path = write_config(tmp_path / "mapsync.yaml", base_url=running.base_url, ca_file=running.ca_file, bulk=setup)
    env = yaml.safe_load(path.read_text())["environments"]["emulator"]
    assert env["campaign"]["sftp"] == {
        "host": "127.0.0.1", "port": emulator.sftp_port, "username": "mapsync-emulator",
        "password": emulator.sftp_credentials[1], "host_key": emulator.sftp_host_key_line,
        "incoming": "/incoming", "outgoing": "/outgoing"}
    assert env["bulk"] == {"signal_interval_seconds": 1, "workflows": {
        "cusVehicle": {"workflow": "WKFIMPCUSVEHICLE", "signal": "signal1"},
        "profile": {"workflow": "WKFIMPPROFILE", "signal": "signal1"}}}
    assert setup.sftp.password not in repr(setup)


def test_write_config_without_bulk_writes_no_bulk_keys(tmp_path: Path, served: tuple[Emulator, Served]) -> None:
    _, running = served
    env = yaml.safe_load(write_config(tmp_path / "m.yaml", base_url=running.base_url,
                                      ca_file=running.ca_file).read_text())["environments"]["emulator"]
    assert "bulk" not in env and "sftp" not in env["campaign"]


def test_mapsync_emulate_serves_sftp_and_writes_its_config(tmp_path: Path) -> None:
    """The real command: `--sftp-port`, `--signal-interval`, `--import-rate`; the config names what serves."""
    from tests.e2e.processes import free_port

    config, sftp_port = tmp_path / "mapsync.yaml", free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mapsync.engine.cli", "emulate", "--port", str(free_port()),
                             "--contacts", "0", "--sftp-port", str(sftp_port), "--signal-interval", "2.5",
                             "--import-rate", "100", "--write-config", str(config)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:  # a handful of lines, then it serves
            printed.append(line)
            if "Press Ctrl+C" in line:
                break
        assert any(f"sftp://127.0.0.1:{sftp_port}/" in line for line in printed), printed
        assert not any("emulator-sftp-secret" in line for line in printed)  # the password is not printed
        env = yaml.safe_load(config.read_text(encoding="utf-8"))["environments"]["emulator"]
        assert env["campaign"]["sftp"]["port"] == sftp_port
        assert env["campaign"]["sftp"]["host_key"].startswith("ssh-ed25519 ")
        assert env["bulk"]["signal_interval_seconds"] == 2.5
        assert env["bulk"]["workflows"]["profile"] == {"workflow": "WKFIMPPROFILE", "signal": "signal1"}
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    with socket.socket() as sock, pytest.raises(OSError):  # the SFTP server stopped with the command
        sock.settimeout(2)
        sock.connect(("127.0.0.1", sftp_port))
