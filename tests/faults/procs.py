"""A federation of real processes for fault tests: kits from ``oversight provision``, one
``oversight serve`` and one ``carrier-node serve`` per carrier on 127.0.0.1, each process's
output in a log file, and the operator API to run and read rounds.

Every process is started from the checkout this file belongs to (its root is the working
directory and ``PYTHONPATH``), so the code under test is this checkout's, whatever is
installed. Children die with the test process (``PR_SET_PDEATHSIG``), every wait has a
timeout, and :meth:`Federation.close` kills whatever is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import grpc
import tomli_w

from coordinator.client import OperatorClient, RoundOutcome
from coordinator.convert import carrier_state_from_pb, round_state_from_pb
from coordinator.store import CarrierRoundState, RoundState
from fedoversight.domain import QuerySpec
from fedoversight.periods import Period
from fedoversight.v1 import operator_pb2, operator_pb2_grpc

T = TypeVar("T")

#: The kind of an audit entry, read without decoding the entry.
_KIND = re.compile(r'"kind":"([a-z_]+)"')

#: The root of the checkout under test.
REPO = Path(__file__).resolve().parents[2]
#: The operator named in the provisioning plan.
OPERATOR = "faults-operator"
#: First thing a daemon does: ask for SIGKILL when the test process goes, however it goes
#: (``PR_SET_PDEATHSIG``), and stop if that process is gone already. Done in the child itself:
#: a ``preexec_fn`` would run Python between fork and exec in a process with gRPC threads.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL);"
    " os.getppid() == int(os.environ['FAULTS_PARENT_PID']) or sys.exit(70); "
)
#: How this checkout's commands are started.
OVERSIGHT = (sys.executable, "-c", _DIE_WITH_PARENT + "from oversight_sim.cli import main; main()")
CARRIER_NODE = (
    sys.executable,
    "-c",
    _DIE_WITH_PARENT + "from carrier_node.cli import main; main()",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this checkout first on the path, no inherited settings of
    the daemons, plain (not coloured, not wrapped) output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OVERSIGHT_", "CARRIER_NODE_", "PYTHONPATH"))
    }
    env.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        COLUMNS="200",
        TERM="dumb",
        FAULTS_PARENT_PID=str(os.getpid()),
    )
    env.update(extra)
    return env


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


@dataclass
class Proc:
    """One daemon: started with its output in ``log``; stopped by signal, killed, waited."""

    name: str
    args: Sequence[str]
    log: Path
    env: dict[str, str] = field(default_factory=child_env)
    popen: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    def start(self) -> Proc:
        if self.alive:
            raise RuntimeError(f"{self.name} is running")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("ab")
        self._log_file.write(f"\n=== start {' '.join(self.args[3:])}\n".encode())
        self._log_file.flush()
        self.popen = subprocess.Popen(
            list(self.args),
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """``kill -9``, and reap it."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int:
        """Wait for the process to end; its exit status (TimeoutError when it does not)."""
        assert self.popen is not None
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still running after {timeout:.0f}s") from None
        self._close_log()
        return code

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL when it does not end within ``timeout``."""
        if not self.alive:
            self._close_log()
            return
        self.signal(signal.SIGTERM)
        try:
            self.wait(timeout)
        except TimeoutError:
            self.kill()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Node:
    """A carrier's node: its kit, config, data and state directories, and its process."""

    carrier_id: str
    kit: Path
    config: Path
    data_dir: Path
    state_dir: Path
    proc: Proc

    @property
    def audit_log(self) -> Path:
        return self.state_dir / f"{self.carrier_id}.audit.jsonl"

    @property
    def state_db(self) -> Path:
        return self.state_dir / f"{self.carrier_id}.node.sqlite3"

    def audit_kinds(self, round_id: str) -> list[str]:
        """The kinds of the node's audit entries of one round, as written so far (read
        without decoding the entries: a released one holds its whole signed result)."""
        try:
            text = self.audit_log.read_text(errors="replace")
        except OSError:
            return []
        wanted = f'"round_id":"{round_id}"'
        kinds = []
        for line in text.splitlines():
            if wanted in line:
                found = _KIND.search(line)
                if found is not None:
                    kinds.append(found.group(1))
        return kinds

    def outbox(self) -> list[str]:
        """Request ids of answers the node keeps until the coordinator acknowledges them."""
        with contextlib.closing(sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True)) as db:
            return [str(r[0]) for r in db.execute("SELECT request_id FROM outbox")]

    def set_config(self, **changes: object) -> None:
        """Change the node's config file (read at its next start)."""
        data = tomllib.loads(self.config.read_text())
        data.update({k: v for k, v in changes.items() if v is not None})
        self.config.write_text(tomli_w.dumps(data))


@dataclass
class CarrierView:
    """A carrier's part in a round as the operator API shows it: its state, its reason (a
    refusal's public message) and how many signed results (receipts) the coordinator stored
    for it."""

    state: CarrierRoundState
    message: str
    receipts: int
    late: bool = False


@dataclass
class RoundView:
    """A round as the operator API shows it; ``outcome`` (with every table) only when asked
    for: GetRound of a heavy round is large and slow."""

    round_id: str
    state: RoundState
    carriers: dict[str, CarrierView]
    outcome: RoundOutcome | None = None

    def states(self) -> dict[str, CarrierRoundState]:
        return {c: v.state for c, v in self.carriers.items()}

    @property
    def late(self) -> list[str]:
        return sorted(c for c, v in self.carriers.items() if v.late)


class Federation:
    """``Federation(work, {carrier: data_dir})``: provision, then :meth:`start`; rounds with
    :meth:`run_round`, processes in :attr:`coordinator` and :attr:`nodes`."""

    def __init__(
        self,
        work: Path,
        carrier_data: dict[str, Path],
        *,
        disconnect_grace_seconds: float = 8.0,
        heartbeat_seconds: int = 2,
        node_settings: dict[str, object] | None = None,
    ) -> None:
        self.work = work
        self.port = free_port()
        self.address = f"localhost:{self.port}"
        self.kits = work / "kits"
        self.logs = work / "logs"
        self._carrier_data = dict(carrier_data)
        self._grace = disconnect_grace_seconds
        self._heartbeat = heartbeat_seconds
        self._node_settings = {
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
            "engine_threads": 1,
            "audit_fsync": False,
            **(node_settings or {}),
        }
        self.coordinator: Proc | None = None
        self.nodes: dict[str, Node] = {}

    # --- provisioning ---------------------------------------------------------------------

    def provision(self) -> None:
        """Kits from the real ``oversight provision`` (the coordinator on 127.0.0.1, each node's
        data and state outside its kit, as the plan says), then this test's local settings."""
        self.work.mkdir(parents=True, exist_ok=True)
        plan = self.work / "plan.toml"
        plan.write_text(
            tomli_w.dumps(
                {
                    "coordinator_id": "faults-coordinator",
                    "coordinator_address": self.address,
                    "carriers": [
                        {
                            "id": c,
                            "name": f"Carrier {c}",
                            "data_dir": str(data_dir),
                            "state_dir": str(self.work / "state" / c),
                        }
                        for c, data_dir in self._carrier_data.items()
                    ],
                    "operators": [{"name": OPERATOR, "role": "operator"}],
                }
            )
        )
        done = subprocess.run(
            [*OVERSIGHT, "provision", "--carriers", str(plan), "--out", str(self.kits)],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"oversight provision failed:\n{done.stdout}\n{done.stderr}")
        config = self.coordinator_config
        data = tomllib.loads(config.read_text())
        # Provisioned configs listen on loopback by default.
        assert data["listen"] == f"127.0.0.1:{self.port}", data["listen"]
        data.update(
            store_path=str(self.work / "rounds.sqlite3"),
            disconnect_grace_seconds=self._grace,
            heartbeat_seconds=self._heartbeat,
            # GetRound carries every table of a round: a heavy one outgrows the default.
            max_message_bytes=64 * 1024 * 1024,
        )
        config.write_text(tomli_w.dumps(data))
        for carrier_id, data_dir in self._carrier_data.items():
            kit = self.kits / "carriers" / carrier_id
            node = Node(
                carrier_id=carrier_id,
                kit=kit,
                config=kit / "node.toml",
                data_dir=data_dir,
                state_dir=self.work / "state" / carrier_id,
                proc=Proc(
                    f"node {carrier_id}",
                    [*CARRIER_NODE, "serve", "--config", str(kit / "node.toml")],
                    self.logs / f"node-{carrier_id}.log",
                ),
            )
            node.state_dir.mkdir(parents=True, exist_ok=True)
            node.set_config(**self._node_settings)
            self.nodes[carrier_id] = node
        self.coordinator = Proc(
            "coordinator",
            [*OVERSIGHT, "serve", "--config", str(config)],
            self.logs / "coordinator.log",
        )

    @property
    def coordinator_config(self) -> Path:
        return self.kits / "coordinator" / "coordinator.toml"

    @property
    def carrier_ids(self) -> list[str]:
        return sorted(self.nodes)

    # --- processes ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """The coordinator and every node, connected."""
        self.start_coordinator()
        for node in self.nodes.values():
            node.proc.start()
        self.wait_connected(self.carrier_ids, timeout)

    def start_coordinator(self, timeout: float = 30.0) -> None:
        assert self.coordinator is not None
        self.coordinator.start()
        wait_until(self._serving, timeout, "the coordinator to serve")

    def _serving(self) -> bool:
        assert self.coordinator is not None
        if not self.coordinator.alive:
            raise RuntimeError(f"the coordinator exited:\n{self.coordinator.tail()}")
        try:
            self.call(lambda c: c.list_carriers(), timeout=2.0)
        except Exception:
            return False
        return True

    def start_node(self, carrier_id: str, *, connect: bool = True, timeout: float = 60.0) -> Node:
        node = self.nodes[carrier_id]
        node.proc.start()
        if connect:
            self.wait_connected([carrier_id], timeout)
        return node

    def connected(self) -> dict[str, bool]:
        return {c.carrier_id: c.connected for c in self.call(lambda c: c.list_carriers())}

    def wait_connected(self, carrier_ids: Sequence[str], timeout: float = 60.0) -> None:
        def check() -> bool:
            for carrier_id in carrier_ids:
                proc = self.nodes[carrier_id].proc
                if not proc.alive:
                    raise RuntimeError(f"node {carrier_id} exited:\n{proc.tail()}")
            now = self.connected()
            return all(now.get(c) for c in carrier_ids)

        wait_until(check, timeout, f"{', '.join(carrier_ids)} to connect", step=0.2)

    def wait_disconnected(self, carrier_id: str, timeout: float = 30.0) -> None:
        wait_until(
            lambda: not self.connected().get(carrier_id, False),
            timeout,
            f"{carrier_id} to be seen disconnected",
            step=0.2,
        )

    def ensure_running(self, timeout: float = 60.0) -> None:
        """Whatever a previous test stopped or killed, started again and connected."""
        assert self.coordinator is not None
        if not self.coordinator.alive:
            self.start_coordinator()
        for node in self.nodes.values():
            if not node.proc.alive:
                node.proc.start()
        self.wait_connected(self.carrier_ids, timeout)

    def processes(self) -> list[Proc]:
        procs = [n.proc for n in self.nodes.values()]
        return [*procs, self.coordinator] if self.coordinator is not None else procs

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL); nothing is left running."""
        for proc in self.processes():
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        for proc in self.processes():
            if proc.alive:
                proc.kill()

    def report(self, lines: int = 80) -> str:
        """The tail of every process's log, for a failed test."""
        parts = []
        for proc in self.processes():
            state = "running" if proc.alive else f"exited {proc.returncode}"
            parts.append(f"----- {proc.name} ({state}): {proc.log}\n{proc.tail(lines)}")
        return "\n".join(parts)

    # --- the operator API -----------------------------------------------------------------

    def client(self) -> OperatorClient:
        kit = self.kits / "operators" / OPERATOR
        return OperatorClient(
            self.address,
            ca_cert=kit / "ca.crt",
            cert=kit / "operator.crt",
            key=kit / "operator.key",
        )

    def call(self, action: Callable[[OperatorClient], Awaitable[T]], timeout: float = 60.0) -> T:
        """One operator API action on a fresh client (each call its own event loop)."""

        async def run() -> T:
            async with self.client() as client:
                return await asyncio.wait_for(action(client), timeout)

        return asyncio.run(run())

    def create_round(
        self,
        period: Period,
        queries: Sequence[QuerySpec],
        *,
        deadline: int = 60,
        quorum: int = 1,
        carriers: Sequence[str] = (),
    ) -> str:
        return self.call(
            lambda c: c.create_round(
                period, queries, carriers=carriers, quorum=quorum, deadline_seconds=deadline
            )
        )

    def summary(self, round_id: str) -> operator_pb2.RoundSummary:
        """The round's summary (its state and counts, without its tables)."""
        for summary in self.call(lambda c: c.list_rounds(20)):
            if summary.round_id == round_id:
                return summary
        raise LookupError(round_id)

    def wait_round(self, round_id: str, timeout: float, *, tables: bool = True) -> RoundView:
        """Wait until the round has finished; what the operator API says of it."""
        wait_until(
            lambda: not round_state_from_pb(self.summary(round_id).state).is_open,
            timeout,
            f"round {round_id} to finish",
            step=0.1,
        )
        return self.view(round_id, tables=tables)

    def view(self, round_id: str, *, tables: bool = True) -> RoundView:
        """The round's state, each carrier's state, reason and receipts; its tables too
        unless ``tables`` is false."""

        async def progress() -> operator_pb2.RoundProgress:
            # The first message of WatchRound: the round's and carriers' states, no tables.
            kit = self.kits / "operators" / OPERATOR
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(kit / "ca.crt").read_bytes(),
                private_key=(kit / "operator.key").read_bytes(),
                certificate_chain=(kit / "operator.crt").read_bytes(),
            )
            async with grpc.aio.secure_channel(self.address, credentials) as channel:
                stub = operator_pb2_grpc.OversightStub(channel)
                ref = operator_pb2.RoundRef(round_id=round_id)
                async for message in stub.WatchRound(ref, timeout=30):
                    first: operator_pb2.RoundProgress = message
                    return first
            raise LookupError(round_id)

        now = asyncio.run(progress())
        receipts = self.call(lambda c: c.get_receipts(round_id))
        counts: dict[str, int] = {}
        for r in receipts.receipts:
            counts[r.carrier_id] = counts.get(r.carrier_id, 0) + 1
        return RoundView(
            round_id,
            round_state_from_pb(now.summary.state),
            {
                c.carrier_id: CarrierView(
                    carrier_state_from_pb(c.state),
                    c.message,
                    counts.get(c.carrier_id, 0),
                    c.HasField("late_answer_at"),
                )
                for c in now.carriers
            },
            self.call(lambda c: c.get_round(round_id)) if tables else None,
        )

    def run_round(
        self,
        period: Period,
        queries: Sequence[QuerySpec],
        *,
        deadline: int = 60,
        quorum: int = 1,
        carriers: Sequence[str] = (),
        tables: bool = True,
    ) -> RoundView:
        round_id = self.create_round(
            period, queries, deadline=deadline, quorum=quorum, carriers=carriers
        )
        return self.wait_round(round_id, deadline + 30, tables=tables)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made if absent), unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], check=False, capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, *, read_only: bool) -> None:
    mode = "ro" if read_only else "rw"
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)
