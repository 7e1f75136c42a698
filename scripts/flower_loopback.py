"""One fedoversight round through Flower's deployment runtime, on loopback, bounded in time.

Starts ``flower-superlink`` and one ``flower-supernode`` per carrier (each given its carrier's
``node.toml`` in ``--node-config``), submits the bundle in ``deploy/flower/`` with ``flwr run``,
and waits for the round in the round store; then stops every process it started. Needs the
``flower`` extra (run it with the Python of that environment):

    python scripts/flower_loopback.py [--carriers 2] [--timeout 240] [--work DIR]

Prints the round's state, each carrier's, and the round's wall time (submission to the round
stored as finished); exits 0 when every carrier answered.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coordinator.store import RoundStore  # noqa: E402
from oversight_sim.flower_sim import write_node_tomls  # noqa: E402
from oversight_sim.harness import SimulatedFederation  # noqa: E402
from oversight_sim.synth import SynthConfig, write_carriers  # noqa: E402

BUNDLE = ROOT / "deploy" / "flower"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    """A Flower command of this Python's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} not found beside {sys.executable}: install fedoversight[flower]")
    return str(path)


def coordinator_toml(fed: SimulatedFederation, path: Path) -> Path:
    """The federation's coordinator settings as a coordinator.toml."""
    config = fed.coordinator_config()
    data = config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carriers", type=int, default=2)
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds for the whole run")
    parser.add_argument("--work", type=Path, default=None, help="kept when given")
    parser.add_argument("--metrics", default="enrollment.member_months,cost.pmpm")
    parser.add_argument("--by", default="month")
    options = parser.parse_args(argv)
    started = time.monotonic()
    work = options.work or Path(tempfile.mkdtemp(prefix="flower-loopback-"))
    work.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(carriers=options.carriers, members=options.members, year=2026, months=3)
    dirs = {d.name: d for d in write_carriers(work / "carriers", config)}
    fed = SimulatedFederation(dirs, work / "federation")
    tomls = write_node_tomls(fed)
    coordinator = coordinator_toml(fed, work / "coordinator.toml")
    store_path = fed.coordinator_config().store_path
    output = work / "round.json"

    env = {
        **os.environ,
        "FLWR_HOME": str(work / "flwr-home"),
        "PYTHONPATH": str(ROOT),
        # The SuperLink and SuperNodes start Flower's other commands by name.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # Flower 1.41 serves its Fleet, Control and runtime APIs on one HTTP port.
    link = free_port()
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        log = (logs / f"{name}.log").open("wb")
        processes.append(
            subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    try:
        start(
            "superlink",
            tool("flower-superlink"),
            "--insecure",
            "--host=127.0.0.1",
            f"--port={link}",
        )
        for carrier_id, node_toml in sorted(tomls.items()):
            start(
                f"supernode-{carrier_id}",
                tool("flower-supernode"),
                "--insecure",
                f"--superlink=127.0.0.1:{link}",
                "--host=127.0.0.1",
                f"--port={free_port()}",
                "--node-config",
                f"node-config='{node_toml}'",
            )
        flwr_home = work / "flwr-home"
        flwr_home.mkdir(exist_ok=True)
        (flwr_home / "config.toml").write_text(
            "[superlink]\ndefault = 'loopback'\n\n"
            f"[superlink.loopback]\naddress = '127.0.0.1:{link}'\ninsecure = true\n",
            encoding="utf-8",
        )
        bundle = work / "bundle"
        shutil.copytree(BUNDLE, bundle, dirs_exist_ok=True)
        run_config = (
            f"coordinator-config='{coordinator}' period='2026-01:2026-03'"
            f" metrics='{options.metrics}' by='{options.by}' output='{output}' deadline=120"
        )
        submit = time.monotonic()
        command = [tool("flwr"), "run", str(bundle), "loopback", "--run-config", run_config]
        while True:  # the SuperLink's control API may take a moment to come up
            if any(p.poll() is not None for p in processes):
                print(f"a Flower process exited early; logs in {logs}")
                return 1
            try:
                done = subprocess.run(command, env=env, capture_output=True, timeout=60)
            except subprocess.TimeoutExpired:
                done = None
            if done is not None and done.returncode == 0:
                break
            if time.monotonic() - started > options.timeout:
                if done is not None:
                    print(done.stdout.decode(errors="replace")[-2000:])
                print(f"flwr run failed; logs in {logs}")
                return 1
            time.sleep(1.0)
        print(f"submitted after {submit - started:.1f} s")
        while time.monotonic() - started < options.timeout:
            if output.exists() and store_path.exists():
                with RoundStore(store_path) as store:
                    rounds = store.list_rounds(1)
                    if rounds and not rounds[0].state.is_open:
                        record = rounds[0]
                        carriers = store.carrier_rounds(record.round_id)
                        break
            time.sleep(0.5)
        else:
            print(f"no finished round within {options.timeout:.0f} s; logs in {logs}")
            return 1
        wall = time.monotonic() - submit
        print(f"round {record.round_id}: {record.state} in {wall:.1f} s (submission to stored)")
        for c in carriers:
            print(f"  {c.carrier_id}: {c.state}")
        print(f"export: {output}")
        return 0 if all(str(c.state) == "answered" for c in carriers) else 1
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if options.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
