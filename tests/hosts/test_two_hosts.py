"""Many hosts on one machine: two network namespaces joined by a veth pair, one Temporal server.

host-1 (127.88.0.1) runs the Temporal dev server and a worker; host-2 (127.88.0.2) runs a worker
that reaches Temporal over the veth link. Each host has its own hostname (a UTS namespace) and
its own home, as separate machines would. Everything is driven through the real CLI inside the
namespaces. Addresses are loopback-range only (route_localnet is set inside the namespaces,
never on the machine's own network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SUBNET = "127.88.0"
# Runs until the test creates RELEASE (the argument); dies with its worker (parent death).
TOOL = 'echo hello-from-$(hostname); while [ ! -e "$1" ]; do sleep 0.2; done'
CLI_TIMEOUT = 120


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def namespaces_unavailable() -> str | None:
    if sys.platform != "linux" or shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs Linux with iproute2 and util-linux (ip, unshare)"
    probe = f"twprobe-{uuid.uuid4().hex[:6]}"
    created = _ip("netns", "add", probe)
    if created.returncode != 0:
        return f"network namespaces are not permitted here: {created.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class Host:
    name: str
    netns: str
    address: str
    home: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *command: str) -> list[str]:
        """COMMAND run on this host: its network namespace, its own hostname."""
        script = f'hostname {self.name} && exec "$@"'
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", script, "sh", *command]

    def start(self, log: Path, *command: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.argv(*command), env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(sys.executable, "-m", "toolwarden.cli", *args), env=self.env,
            capture_output=True, text=True, timeout=CLI_TIMEOUT,
        )

    def show(self, run_id: str) -> dict[str, object]:
        shown = self.cli("show", "--json", run_id)
        assert shown.returncode == 0, shown.stderr
        document: dict[str, object] = json.loads(shown.stdout)
        return document


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:8]
    port = free_port()  # free in the namespace too: a fresh namespace has nothing bound
    server_address = f"{SUBNET}.1:{port}"
    made: list[str] = []
    hosts: list[Host] = []
    try:
        for number in (1, 2):
            netns = f"tw{number}-{tag}"
            assert _ip("netns", "add", netns).returncode == 0
            made.append(netns)
        link = _ip("link", "add", f"tva{tag}", "type", "veth", "peer", "name", f"tvb{tag}")
        assert link.returncode == 0, link.stderr
        for number, veth in ((1, f"tva{tag}"), (2, f"tvb{tag}")):
            netns = f"tw{number}-{tag}"
            address = f"{SUBNET}.{number}"
            for step in (
                ["link", "set", veth, "netns", netns],
                ["-n", netns, "link", "set", "lo", "up"],
                ["-n", netns, "addr", "add", f"{address}/24", "dev", veth],
                ["-n", netns, "link", "set", veth, "up"],
            ):
                done = _ip(*step)
                assert done.returncode == 0, (step, done.stderr)
            for interface in ("all", veth):  # 127/8 is routed only where this allows it
                subprocess.run(
                    ["ip", "netns", "exec", netns, "sysctl", "-qw",
                     f"net.ipv4.conf.{interface}.route_localnet=1"],
                    check=True, timeout=30,
                )
            home = tmp_path / f"host-{number}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
            env.update(
                TOOLWARDEN_HOME=str(home),
                TOOLWARDEN_TEMPORAL__ADDRESS=server_address,
                TOOLWARDEN_TEMPORAL__TASK_QUEUE=f"hosts-{tag}",
                # All of host-1's addresses: the dev server's own services dial each other on
                # 127.0.0.1 even when its frontend listens elsewhere.
                TOOLWARDEN_SERVER__IP="0.0.0.0",
                TOOLWARDEN_SERVER__PORT=str(port),
                TOOLWARDEN_SERVER__UI_PORT="0",
                TOOLWARDEN_SERVER__LOG_LEVEL="error",
                TOOLWARDEN_WORKER__HEALTH_ADDRESS="",
                TOOLWARDEN_WORKER__SDK_METRICS_ADDRESS="",
                TOOLWARDEN_WORKER__HEARTBEAT_INTERVAL="0.5s",
                TOOLWARDEN_WORKER__HEARTBEAT_TIMEOUT="5s",
                TOOLWARDEN_WORKER__SOCKET_DIR=str(tmp_path / f"s{number}"),
                TOOLWARDEN_MIRROR__ENABLED="false",
            )
            hosts.append(Host(f"host-{number}", netns, address, home, env))
        yield hosts[0], hosts[1]
    finally:
        for host in hosts:
            for process in reversed(host.processes):
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(timeout=30)
        for netns in made:
            _ip("netns", "del", netns)


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Poll `check` (a blocking call: these tests drive processes, not an event loop)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")


def host_of(document: dict[str, object]) -> str | None:
    live = document.get("live") or document.get("last_attempt")
    return live.get("host") if isinstance(live, dict) else None


def test_runs_spread_over_two_hosts_survive_one_and_logs_stay_where_they_ran(
    hosts: tuple[Host, Host], tmp_path: Path
) -> None:
    one, two = hosts
    began = time.monotonic()
    one.start(tmp_path / "server.log", sys.executable, "-m", "toolwarden.cli", "server")
    wait_for(lambda: one.cli("list").returncode == 0, 90, "the Temporal server on host-1")
    workers = {
        host.name: host.start(tmp_path / f"worker-{host.name}.log", sys.executable, "-m",
                              "toolwarden.cli", "worker", "-v")
        for host in (one, two)
    }

    release = tmp_path / "RELEASE"
    # Start runs from either host until both hosts run some (Temporal hands each attempt to
    # whichever worker polls first, so a few runs may be needed).
    where: dict[str, str] = {}
    for number in range(16):
        run_id = f"spread-{number:02d}"
        started = (one if number % 2 else two).cli(
            "run", "--detach", "--id", run_id, "--", "sh", "-c", TOOL, "sh", str(release)
        )
        assert started.returncode == 0, started.stderr
        where[run_id] = wait_for(lambda run_id=run_id: host_of(one.show(run_id)), 60, f"{run_id} on a host")
        if number >= 3 and len(set(where.values())) == 2:
            break
    assert set(where.values()) == {"host-1", "host-2"}, where
    on_two = sorted(run for run, host in where.items() if host == "host-2")

    workers["host-2"].kill()  # host-2's worker dies; its tools die with it (parent death)
    workers["host-2"].wait(timeout=30)
    killed_at = time.monotonic()

    def all_on_host_one() -> bool:
        return all(host_of(one.show(run)) == "host-1" for run in on_two)

    wait_for(all_on_host_one, 120, "host-2's runs relaunched on host-1")
    moved_in = time.monotonic() - killed_at
    release.touch()

    def all_succeeded() -> bool:
        return all(one.show(run)["state"] == "succeeded" for run in where)

    wait_for(all_succeeded, 120, "every run succeeded")
    for run in on_two:
        document = one.show(run)
        assert host_of(document) == "host-1", document  # relaunched and finished on host-1

    # Output stays on the host that produced it: `logs` there prints it.
    first_on_one = next(run for run, host in where.items() if host == "host-1")
    logs = one.cli("logs", first_on_one)
    assert logs.returncode == 0 and "hello-from-host-1" in logs.stdout, logs
    moved = on_two[0]
    on_its_first_host = two.cli("logs", moved)  # host-2's disk holds attempt 1
    assert "hello-from-host-2" in on_its_first_host.stdout, on_its_first_host
    on_its_last_host = one.cli("logs", moved)  # host-1 holds the relaunch
    assert "hello-from-host-1" in on_its_last_host.stdout, on_its_last_host
    elsewhere = two.cli("logs", first_on_one)  # host-2 never ran it: it says where the files are
    assert "log files are on host-1" in elsewhere.stderr, elsewhere
    print(
        f"\nmany hosts: {len(where)} runs, {len(where) - len(on_two)} on host-1 and "
        f"{len(on_two)} on host-2; host-2's worker SIGKILLed; its runs relaunched on host-1 "
        f"{moved_in:.1f}s later (heartbeat timeout 5s) and finished; "
        f"whole test {time.monotonic() - began:.1f}s"
    )
