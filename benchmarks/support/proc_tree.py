"""CPU time and peak memory of a process tree, read from ``/proc`` (Linux).

A flow started with ``--processes P`` or a server with ``serving.processes``
runs as a launcher and its children; a benchmark charges the whole tree.
Processes that have exited are gone from ``/proc``, so :class:`TreeUsage`
keeps the last figures it read of each one.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def peak_rss_bytes(pid: int) -> int:
    """The process's high-water resident set (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class TreeUsage:
    """CPU and peak RSS of ``root`` and its descendants, sampled by :meth:`sample`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.cpu: dict[int, float] = {}
        self.peak_rss: dict[int, int] = {}

    def sample(self) -> float:
        """Read every live process of the tree; returns the tree's CPU seconds so far."""
        for pid in (self.root, *descendants(self.root)):
            try:
                cpu, peak = cpu_seconds(pid), peak_rss_bytes(pid)
            except (OSError, ValueError, IndexError):
                continue  # exited between the listing and the read: its last figures stay
            # An exited, unreaped process (a zombie) reports no memory: keep the last peak.
            self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))
            self.peak_rss[pid] = max(peak, self.peak_rss.get(pid, 0))
        return sum(self.cpu.values())

    def largest_peaks_rss(self, n: int) -> int:
        """The ``n`` largest peak RSS summed: the processes doing the work, not a launcher
        that only waits for them (or a short-lived helper)."""
        return sum(sorted(self.peak_rss.values(), reverse=True)[:n])


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from ``/proc/stat``: two
    readings give how busy every core was in between, whoever used them."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else float("nan")


def rss_bytes(pid: int) -> int:
    """The process's resident set now (``VmRSS``; 0 for a zombie)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    """How many file descriptors the process holds open now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def tree_now(root: int) -> tuple[int, int]:
    """(RSS bytes, open file descriptors) of ``root`` and its descendants now."""
    rss = fds = 0
    for pid in (root, *descendants(root)):
        try:
            rss += rss_bytes(pid)
            fds += open_fds(pid)
        except OSError:
            continue  # exited meanwhile
    return rss, fds
