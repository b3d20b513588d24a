"""Can SLURM run these jobs at all? A check of requests against the cluster's nodes, before submitting.

A job that asks for more CPUs, memory or GPUs than any node of its partition has stays PENDING forever
(``Reason=PartitionConfig``) and Snakemake waits on it silently. The workflow's ``onstart`` hook calls
:func:`unschedulable` with every job it is about to submit and stops with one message per problem
instead::

    rule train (3 jobs) asks partition gpu for cpus_per_task=8 but its largest node has 2 CPUs

Node capacities come from ``sinfo -h -N -o "%P|%c|%m|%G"`` (partition, CPUs, memory MB, GRES); the
default partition is the one ``sinfo`` marks with ``*``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Request:
    rule: str
    partition: str | None  #: None: the cluster's default partition
    cpus: int
    mem_mb: int
    gpus: int


def parse_gres_gpus(gres: str | None) -> int:
    """GPUs in a GRES string: ``gpu:2`` → 2, ``gpu:a100:4(S:0-1)`` → 4, ``(null)`` → 0."""
    total = 0
    for part in (gres or "").split(","):
        m = re.match(r"^gpu(?::[A-Za-z0-9_.-]+)?:(\d+)", part.strip())
        if m:
            total += int(m.group(1))
        elif part.strip() == "gpu":
            total += 1
    return total


def parse_sinfo(text: str) -> tuple[dict[str, list[Node]], str | None]:
    """``sinfo -h -N -o "%P|%c|%m|%G"`` output → (partition → nodes, default partition)."""
    partitions: dict[str, list[Node]] = {}
    default = None
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        name, cpus, mem, gres = fields
        if name.endswith("*"):
            name = default = name[:-1]
        try:
            node = Node(int(cpus), int(re.sub(r"\D", "", mem) or 0), parse_gres_gpus(gres))
        except ValueError:
            continue
        partitions.setdefault(name, []).append(node)
    return partitions, default


def query_sinfo(timeout: float = 20) -> tuple[dict[str, list[Node]], str | None] | None:
    """The cluster's nodes per partition, or None when ``sinfo`` is absent or fails."""
    if not shutil.which("sinfo"):
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_sinfo(out)


def unschedulable(requests: list[Request], partitions: dict[str, list[Node]], default: str | None) -> list[str]:
    """One message per (rule, partition, problem) that no node of the partition can satisfy."""
    problems: dict[tuple, int] = {}
    for r in requests:
        name = r.partition or default
        nodes = partitions.get(name or "")
        if not nodes:
            known = ", ".join(sorted(partitions)) or "none"
            key = (r.rule, f"asks for partition {name!r}, which has no nodes here (partitions: {known})")
            problems[key] = problems.get(key, 0) + 1
            continue
        if any(n.cpus >= r.cpus and n.mem_mb >= r.mem_mb and n.gpus >= r.gpus for n in nodes):
            continue
        best = (max(n.cpus for n in nodes), max(n.mem_mb for n in nodes), max(n.gpus for n in nodes))
        wants = []
        if r.cpus > best[0]:
            wants.append(f"cpus_per_task={r.cpus} (largest node: {best[0]} CPUs)")
        if r.mem_mb > best[1]:
            wants.append(f"mem_mb={r.mem_mb} (largest node: {best[1]} MB)")
        if r.gpus > best[2]:
            wants.append(f"{r.gpus} GPU(s) (largest node: {best[2]})")
        if not wants:
            wants.append(f"cpus={r.cpus}, mem_mb={r.mem_mb}, gpus={r.gpus} together (no single node has all)")
        key = (r.rule, f"asks partition {name} for {', '.join(wants)}")
        problems[key] = problems.get(key, 0) + 1
    return [f"rule {rule} ({n} job{'s' if n > 1 else ''}) {what}" for (rule, what), n in sorted(problems.items())]
