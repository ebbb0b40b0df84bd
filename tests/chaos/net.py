"""Network partitions between processes that all live on loopback, with nftables.

Every broker runs in a cgroup (v2) of its own: it is launched through a shell wrapper that
moves itself into the cgroup and then execs the broker, so every socket the broker opens carries
that cgroup. One nftables table (``inet odradek_chaos_<pid>``) has an output-hook chain that
stamps each new connection with a conntrack mark naming the broker that opened it
(``socket cgroupv2``), and a ``cuts`` chain where a partition is a pair of rules per direction:
drop packets of connections opened by broker A whose destination (requests) or source (answers)
port is one of B's listening ports. The mark follows the connection, so both directions of
already established connections are cut too, and nothing else on the machine (other tests, the
clients of this run, which are not in a marked cgroup) is touched.

Needs root, the ``nft`` binary (Debian's nftables), a cgroup2 mount and the kernel's nf_tables
with the socket and conntrack expressions; :func:`unavailable` says why not when something is
missing, and the harness then skips the network faults. Where cgroup2 is mounted elsewhere than
``/sys/fs/cgroup`` (hybrid hierarchies), nft resolves cgroup paths only there, so rules are
loaded in a private mount namespace with cgroup2 mounted at that path (``unshare -m``).

:class:`NetFaults` is owned by the harness thread that runs the faults; not thread-safe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["NetFaults", "unavailable", "cgroup2_mount"]

_NFT_ROOT = Path("/sys/fs/cgroup")


def cgroup2_mount() -> Path | None:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_nft(script: str, mount: Path) -> subprocess.CompletedProcess[str]:
    if mount == _NFT_ROOT:
        args = ["nft", "-f", "-"]
    else:
        args = ["unshare", "-m", "sh", "-c",
                f"mount -t cgroup2 none {_NFT_ROOT} && exec nft -f -"]
    return subprocess.run(args, input=script, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """None when network partitions can be made here, else why not."""
    if os.geteuid() != 0:
        return "network partitions need root (nftables rules and cgroups)"
    if shutil.which("nft") is None:
        return "nft is not installed (Debian's nftables; `make system-deps` installs it)"
    mount = cgroup2_mount()
    if mount is None:
        return "no cgroup2 hierarchy is mounted (sockets cannot be told apart by process)"
    if mount != _NFT_ROOT and shutil.which("unshare") is None:
        return f"cgroup2 is mounted at {mount}, and unshare(1) is missing to load rules"
    probe = mount / f"odradek-chaos-probe-{os.getpid()}"
    table = f"odradek_chaos_probe_{os.getpid()}"
    try:
        probe.mkdir(exist_ok=True)
    except OSError as e:
        return f"cannot create a cgroup under {mount}: {e}"
    try:
        done = _run_nft(
            f"table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n"
            f'  ct state new socket cgroupv2 level 1 "{probe.name}" ct mark set 1\n }}\n}}\n'
            f"delete table inet {table}\n",
            mount,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"nft failed to run: {e}"
    finally:
        probe.rmdir()
    if done.returncode != 0:
        return f"this kernel or nft refuses the rules the partitions need: {done.stderr.strip()}"
    return None


class NetFaults:
    """One run's cgroups and nftables table. ``members`` are the names of the processes that
    get a cgroup and a connection mark (e.g. ``"broker-1"``)."""

    def __init__(self, members: Sequence[str]) -> None:
        mount = cgroup2_mount()
        assert mount is not None, "check unavailable() first"
        self._mount = mount
        self._root = mount / f"odradek-chaos-{os.getpid()}"
        self._table = f"odradek_chaos_{os.getpid()}"
        # Marks differ between concurrent runs (ports differ too, so this is belt and braces).
        base = (os.getpid() & 0xFFFF) << 8
        self._marks = {name: base + i + 1 for i, name in enumerate(members)}
        self.cuts: list[tuple[str, tuple[int, ...]]] = []

    def setup(self) -> None:
        self._remove_stale()
        self._root.mkdir(exist_ok=True)
        for name in self._marks:
            (self._root / name).mkdir(exist_ok=True)
        rules = "".join(
            f'  ct state new socket cgroupv2 level 2 "{self._root.name}/{name}" '
            f"ct mark set {mark}\n"
            for name, mark in self._marks.items()
        )
        self._nft(
            f"table inet {self._table} {{\n"
            f" chain cuts {{\n }}\n"
            f" chain out {{\n  type filter hook output priority 0; policy accept;\n"
            f"{rules}  jump cuts\n }}\n}}\n"
        )

    def launch_prefix(self, name: str) -> list[str]:
        """The command prefix that runs a process in ``name``'s cgroup."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self._root / name)]

    def cut(self, name: str, ports: Iterable[int]) -> None:
        """Drop both directions of every connection ``name`` opens to any of ``ports``."""
        wanted = tuple(sorted(set(ports)))
        if not wanted:
            return
        mark, listed = self._marks[name], ", ".join(map(str, wanted))
        self._nft(
            f"add rule inet {self._table} cuts ct mark {mark} tcp dport {{ {listed} }} drop\n"
            f"add rule inet {self._table} cuts ct mark {mark} tcp sport {{ {listed} }} drop\n"
        )
        self.cuts.append((name, wanted))

    def heal(self) -> None:
        self._nft(f"flush chain inet {self._table} cuts\n")
        self.cuts.clear()

    def teardown(self) -> None:
        """Remove the table and the cgroups (once their processes are gone)."""
        self._nft(f"delete table inet {self._table}\n", check=False)
        for name in self._marks:
            try:
                (self._root / name).rmdir()
            except OSError:
                pass
        try:
            self._root.rmdir()
        except OSError:
            pass

    def _remove_stale(self) -> None:
        """Tables and cgroups of runs whose process is gone (killed before its teardown)."""
        listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                timeout=30)
        for line in listed.stdout.splitlines():
            name = line.split()[-1] if line.startswith("table inet ") else ""
            pid = name.removeprefix("odradek_chaos_")
            if pid.isdigit() and not _alive(int(pid)):
                self._nft(f"delete table inet {name}\n", check=False)
        for old in self._mount.glob("odradek-chaos-*"):
            pid = old.name.removeprefix("odradek-chaos-")
            if pid.isdigit() and not _alive(int(pid)):
                for child in old.iterdir():
                    if child.is_dir():
                        try:
                            child.rmdir()
                        except OSError:
                            pass  # a process still lives in it
                try:
                    old.rmdir()
                except OSError:
                    pass

    def _nft(self, script: str, *, check: bool = True) -> None:
        done = _run_nft(script, self._mount)
        if check and done.returncode != 0:
            raise RuntimeError(f"nft failed: {done.stderr.strip()}\n{script}")
