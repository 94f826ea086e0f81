"""``mapsync emulate``: serve every emulated service (Entra ID, Dataverse, IMS, Campaign, events journal)
over TLS on loopback, and Campaign's SFTP storage beside them, print the URLs, and stop cleanly on
SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mapsync.engine.commands._common import add_command, project_snapshots, require_emulators
from mapsync.engine.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "emulate", "Serve the Dynamics 365 and Campaign emulators locally.", run)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port (default: 8443)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the demo data (default: 42)")
    parser.add_argument("--contacts", type=int, default=1000, help="number of seeded contacts (default: 1000)")
    parser.add_argument("--faults", default="none",
                        choices=("none", "flaky", "hostile", "sftp_disconnect", "signal_refused", "import_failed"),
                        help="fault-injection profile (default: none)")
    parser.add_argument("--sftp-port", type=int, default=0, metavar="N",
                        help="port of Campaign's SFTP storage (default: a free port)")
    parser.add_argument("--signal-interval", type=float, default=600.0, metavar="S",
                        help="seconds between two signals of one workflow (Adobe's rule: 600; lower for tests)")
    parser.add_argument("--import-rate", type=float, default=5000.0, metavar="R",
                        help="rows per second the import workflows load (default: 5000)")
    parser.add_argument("--write-config", metavar="PATH", type=Path,
                        help="write a mapsync.yaml with an `emulator` environment pointing here")
    parser.add_argument("--rows", action="append", default=[], metavar="TABLE=N",
                        help="also fill a Dataverse table of the snapshots with N generated rows "
                             "(e.g. new_membership=500); repeatable")
    return parser


def _rows(specs: list[str]) -> list[tuple[str, int]]:
    out = []
    for spec in specs:
        table, sep, count = spec.partition("=")
        if not sep or not table or not count.isdigit() or int(count) > 1_000_000:
            raise ConfigError(f"--rows {spec}: expected TABLE=N with N from 0 to 1,000,000 (e.g. new_membership=500)",
                              setting="--rows")
        out.append((table, int(count)))
    return out


def run(args: argparse.Namespace) -> int:
    require_emulators("emulate")
    from mapsync.emulators.server import Emulator, PortInUse, bind, config_files, serve, write_config
    from mapsync.emulators.tls import TestCA

    if args.contacts < 0:
        raise ConfigError("--contacts must be 0 or more", setting="--contacts")
    if not 0 < args.port < 65536:
        raise ConfigError("--port must be between 1 and 65535", setting="--port")
    if not 0 <= args.sftp_port < 65536 or (args.sftp_port == args.port):
        raise ConfigError("--sftp-port must be between 1 and 65535 and not --port (0: a free port)",
                          setting="--sftp-port")
    if args.signal_interval < 0:
        raise ConfigError("--signal-interval must be 0 or more seconds", setting="--signal-interval")
    if args.import_rate <= 0:
        raise ConfigError("--import-rate must be above 0 rows per second", setting="--import-rate")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("mapsync: warning: the emulator has no real security; listening beyond loopback", file=sys.stderr)
    rows = _rows(args.rows)
    snapshots = project_snapshots(args)
    host = "127.0.0.1" if args.host == "localhost" else args.host
    try:
        sock = bind(host, args.port)  # before seeding: a busy port is said at once, not after a minute
    except PortInUse:
        raise ConfigError(f"port {args.port} is in use (try --port N)", setting="--port") from None
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{args.port}: {exc.strerror or exc}", setting="--port") from None
    print(f"mapsync: seeding {args.contacts} contacts (seed {args.seed})...", file=sys.stderr)
    emulator = Emulator(seed=args.seed, contacts=args.contacts, faults=args.faults, snapshots=snapshots,
                        signal_interval_seconds=args.signal_interval, import_rows_per_second=args.import_rate)
    for table, count in rows:
        if table not in emulator.dataverse.store.tables:
            known = ", ".join(sorted(emulator.dataverse.store.tables))
            raise ConfigError(f"--rows {table}={count}: no such Dataverse table in {snapshots} (known: {known})",
                              setting="--rows")
        emulator.dataverse.generate(table, count, seed=args.seed)
        print(f"mapsync: generated {count} {table} rows", file=sys.stderr)
    # With --write-config the CA must outlive this process (the config names its file): keep it beside it,
    # in a folder named after the config file, so a second emulator with another config keeps its own CA.
    ca_dir = config_files(args.write_config)[1] if args.write_config is not None else None
    ca = TestCA(ca_dir)

    def ready(base_url: str, ca_file: Path) -> None:
        for name, url in emulator.urls(base_url).items():
            print(f"  {name:<10} {url}")
        print(f"  {'ca_file':<10} {ca_file}")
        if emulator.sftp_port is not None:
            print(f"  {'sftp':<10} sftp://{host}:{emulator.sftp_port}/ (host key {emulator.sftp_host_key_line})")
        if args.write_config is not None:
            path = write_config(args.write_config, base_url=base_url, ca_file=ca_file, credentials=emulator.credentials,
                                bulk=emulator.bulk_setup())
            print(f"  {'config':<10} {path} (environment: emulator)")
        print("Press Ctrl+C to stop.", flush=True)

    try:
        serve(emulator, host=host, port=args.port, ca=ca, on_ready=ready, sock=sock, sftp_port=args.sftp_port)
    except PortInUse:
        raise ConfigError(f"port {args.sftp_port} is in use (try --sftp-port N)", setting="--sftp-port") from None
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{args.port}: {exc.strerror or exc}", setting="--port") from None
    finally:
        ca.cleanup()
    print("mapsync: emulator stopped", file=sys.stderr)
    return 0
