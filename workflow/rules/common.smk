# Helpers of the ctbench workflow: the grid of cells, per-stage parameters and fingerprints, resources.
# Every function the rules use lives here (snakemake --lint: no functions beside rules elsewhere).
# The grid (cells, resolved configs, fingerprints) comes from ctbench.grid: one resolution of a cell,
# shared with the jobs (the train job trains the cell.json written from it) and with `ctbench report`.
import json
import os
import re
import shlex
import sys

from snakemake.utils import validate

import ctbench.analysis as ctbench_analysis
import ctbench.analysis.protocol as analysis_protocol
from ctbench.core import SCHEMAS
from ctbench.errors import CTBenchError
from ctbench.grid import GRID_ANALYSES as GRID_LISTED, Grid
from ctbench.fingerprint import digest
from ctbench import stagefile
from ctbench.grid import stale
from ctbench.io import write_json


def fail(message):
    """A configuration error: one line, no traceback, exit status 1."""
    print(f"ctbench: error: {message}", file=sys.stderr)
    sys.exit(1)


try:
    GRID = Grid(config)
except CTBenchError as e:
    fail(e)
validate(
    config, schema=str(SCHEMAS / "config.schema.yaml")
)  # the schema shipped inside the package (ctbench/schemas); fills in the schema's defaults

CELLS = GRID.cells
TABLE1_CELLS = GRID.table1_cells()
ABLATION_CELLS = GRID.ablation_cells()
MANIFEST_PARTS = {
    "all": CELLS,
    "table1": TABLE1_CELLS,
    "ablations": ABLATION_CELLS + TABLE1_CELLS,
}


def mark_stale_outputs():
    """Outputs whose inputs were deleted (or replaced) since they were made get a redo note, which the rule
    takes as an input (`redo`): Snakemake then re-makes them, and what they need, instead of answering
    "Nothing to be done" (ctbench/grid/stale.py). Main process only: a cluster job never writes notes.
    """
    found = []
    for c in CELLS:
        for stage_name, reason in stale.cell_problems(c.dir).items():
            output = dict((s, o) for s, o, _ in stale.CELL_STAGES)[stage_name]
            found.append(
                (stale.redo_note(c.dir, stage_name), f"{c.dir}/{output}", reason)
            )
    for rule_name, table, part in (
        ("report", "results/table1.csv", "table1"),
        ("ablations", "results/ablations.csv", "ablations"),
    ):
        reason = stale.table_problem(table, f"results/manifest/{part}.json")
        if reason:
            found.append((stale.redo_note("results", rule_name), table, reason))
    for note, output, reason in found:
        stale.write_redo_note(note, output, reason)
        print(f"ctbench: {output} is re-made: {reason} (see {note})", file=sys.stderr)


def redo(stage, directory=None):
    """input: the stage's redo note when there is one (a newer note re-runs the rule; see above)."""

    def _redo(wildcards):
        note = stale.redo_note(directory or cell(wildcards).dir, stage)
        return [note] if os.path.exists(note) else []

    return _redo


if workflow.is_main_process:
    mark_stale_outputs()

# GPU rules' wall time and memory per dataset (sbatch -t minutes, --mem MB) on one A100/H100-class GPU
# for the paper's schedules; edit for your site (or override with set-resources in a profile).
RUNTIME_MIN = {
    "train": {"mnist": 600, "mnist_mini": 60, "cifar10": 1440, "tinyimagenet": 2880},
    "certify": {"mnist": 1440, "mnist_mini": 60, "cifar10": 2880, "tinyimagenet": 2880},
    "attack": {"mnist": 120, "mnist_mini": 30, "cifar10": 240, "tinyimagenet": 360},
}
# CPU threads of the compute rules. Locally Snakemake caps them at --cores; on SLURM they become
# --cpus-per-task (the SLURM profile sets no cpus_per_task, so the two cannot disagree; change them with
# `set-threads:` in a profile). Every job passes `--threads {threads}` to ctbench (ctbench/threads.py), so
# torch uses exactly the CPUs the job was given instead of every core of a shared node.
THREADS = {
    "train": 8,
    "certify": 8,
    "attack": 4,
    "analyze_model": 4,
    "certify_verifier": 8,
}
MEM_MB = {"mnist": 16000, "mnist_mini": 4000, "cifar10": 32000, "tinyimagenet": 64000}


def regex_alternatives(values):
    return "|".join(re.escape(str(v)) for v in sorted(set(values), key=str))


def cell(wildcards):
    return GRID.cell(
        wildcards.dataset, wildcards.eps, wildcards.model, wildcards.run, wildcards.seed
    )


def fingerprint(stage):
    """params entry: the stage's fingerprint (a changed one re-runs the stage and everything after)."""

    def _fingerprint(wildcards):
        return GRID.fingerprints(cell(wildcards))[stage]

    return _fingerprint


def write_cell_file(wildcards, path):
    write_json(path, GRID.cell_file(cell(wildcards)))


def stage_settings(kind):
    """input: the stage settings file the job runs (ctbench.stagefile), e.g. settings/certify.json or, for
    the kinds analysis and verifier, settings/analysis_<analysis>.json (written by write_stage_files below).
    ancient(): only its content counts — a changed content has changed the stage's fingerprint, a params
    entry of the rule, which re-runs it (and a results tree from before these files existed is not re-run).
    """

    def _stage_settings(wildcards):
        stage = (
            f"{kind}_{getattr(wildcards, kind)}"
            if kind in ("analysis", "verifier")
            else kind
        )
        return ancient(f"{cell(wildcards).dir}/settings/{stage}.json")

    return _stage_settings


def write_manifest(part, path):
    write_json(path, GRID.manifest(MANIFEST_PARTS[part]))


def manifest_digest(wildcards):
    """params of a manifest: only its own cells' fingerprints (adding a variant leaves Table 1's alone)."""
    return digest(GRID.manifest(MANIFEST_PARTS[wildcards.part]))


def final_targets():
    """The default target: Table 1, the seed statistics, and the ablations when the grid has any."""
    targets = ["results/table1.csv", "results/seeds.csv", "results/manifest/all.json"]
    targets += ["results/ablations.csv"] if ABLATION_CELLS else []
    return targets + analysis_targets()


def data_source_args(wildcards):
    data = config.get("data", {})
    args = ["--root", shlex.quote(data.get("root", "data"))]
    if data.get("source_dir"):
        args += ["--source-dir", shlex.quote(data["source_dir"])]
    if data.get("download"):
        args.append("--download")
    return " ".join(args)


def data_root(wildcards):
    return shlex.quote(config.get("data", {}).get("root", "data"))


def certify_extra_inputs(wildcards):
    """The alpha-beta-CROWN config, when set, is an input: editing it re-runs certification."""
    path = config.get("certify", {}).get("abcrown_config")
    return [path] if path else []


def runtime(stage):
    def _runtime(wildcards):
        return RUNTIME_MIN[stage].get(wildcards.dataset, 600)

    return _runtime


def mem_mb(wildcards):
    return MEM_MB.get(wildcards.dataset, 16000)


def cell_files(cells, name):
    return [f"{c.dir}/{name}" for c in cells]


def all_cell_files(name):
    return cell_files(CELLS, name)


def prepared_flag(wildcards):
    return f"results/data/{wildcards.dataset}.prepared"


def cell_dir(wildcards):
    return cell(wildcards).dir


def print_where_to_look(workflow):
    """onsuccess: the run's last lines say where its results are and how to bundle them into one page."""
    shown = [
        f
        for f in ("results/table1.md", "results/seeds.csv", "results/ablations.md")
        if os.path.exists(f)
    ]
    if not shown:
        return
    configs = " ".join(
        f"--configfile {shlex.quote(str(os.path.relpath(c)))}"
        for c in workflow.overwrite_configfiles or []
    )
    lines = ["ctbench: results are in " + ", ".join(shown)]
    if os.path.isdir("results/analysis"):
        lines.append(
            "ctbench: the analyses' tables and figures are in results/analysis/"
        )
    lines.append(
        "ctbench: one HTML page of all of them: "
        + " ".join(
            p for p in ("snakemake", configs, "--report results/report.html") if p
        )
    )
    print("\n".join(lines), file=sys.stderr)


def check_slurm_resources(workflow):
    """onstart: with the SLURM executor, stop (one line per problem) before submitting a job that no
    node of its partition can run — SLURM would keep it PENDING forever (Reason=PartitionConfig).
    """
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    from ctbench.slurm import Request, parse_gres_gpus, query_sinfo, unschedulable

    cluster = query_sinfo()
    if cluster is None:
        return
    requests = []
    for job in workflow.dag.needrun_jobs():
        if job.is_local:
            continue
        res = job.resources
        gpus = int(res.get("gpu", 0) or 0) + parse_gres_gpus(res.get("gres"))
        cpus = int(res.get("cpus_per_task", 0) or job.threads or 1)
        requests.append(
            Request(
                job.rule.name,
                res.get("slurm_partition"),
                cpus,
                int(res.get("mem_mb", 0) or 0),
                gpus,
            )
        )
    problems = unschedulable(requests, *cluster)
    if problems:
        fail(
            "SLURM cannot run these jobs (they would stay PENDING): "
            + "; ".join(problems)
            + ". Lower the requests in the profile (set-resources) or use another partition."
        )


# -- analyses (ctbench.analysis; workflow/rules/analysis.smk) -------------------------------------------

ALL_MODEL_ANALYSES = ctbench_analysis.MODEL_ANALYSES
ALL_GRID_ANALYSES = ctbench_analysis.GRID_ANALYSES
ANALYSIS = GRID.analysis()
MODEL_ANALYSES = list(ANALYSIS["model"])
VERIFIER_CELLS = GRID.verifier_cells()
VERIFIERS = list(ANALYSIS["verifiers"]["stages"]) if VERIFIER_CELLS else []
SWEEP_CELLS = GRID.sweep_cells()  # the sweeps' cells and their base cells (Fig. 7)
BASE_CELLS = [
    c for c in CELLS if not c.variant
]  # Table 1's and the extra architectures' (Table 21)
# Each analysis declares what it reads (ctbench.analysis.protocol): an option, a set of cells and the files of
# each cell. These are the grid's cell sets and values the declarations name.
ANALYSIS_CELL_SETS = {
    "all": [c.dir for c in CELLS],
    "table1": [c.dir for c in TABLE1_CELLS],
    "base": [c.dir for c in BASE_CELLS],
    "sweep": [c.dir for c in SWEEP_CELLS],
    "verifier": [c.dir for c in VERIFIER_CELLS],
}
ANALYSIS_VALUES = {
    "verifier": VERIFIERS,
    "sweep": [f"{name}={key}" for name, key in GRID.sweeps().items()],
}
DECLARED = {
    a: analysis_protocol.declaration(ctbench_analysis.load(a))
    for a in ctbench_analysis.ANALYSES
}
# The cross-cell analyses the configuration chooses (analysis.grid; the others, which that list cannot name,
# by their own settings, e.g. analysis.verifiers), each when it has cells to read.
GRID_ANALYSES = [
    a
    for a in dict.fromkeys(
        [*ANALYSIS["grid"], *(a for a in ALL_GRID_ANALYSES if a not in GRID_LISTED)]
    )
    if analysis_protocol.runs(DECLARED[a]["inputs"], ANALYSIS_CELL_SETS)
]


def analysis_fingerprint(wildcards):
    return GRID.analysis_fingerprint(cell(wildcards), wildcards.analysis)


def model_analysis_inputs(wildcards):
    """What the per-model analysis reads (its declaration: the cell's model.pt) and its settings file."""
    files = analysis_protocol.input_files(
        DECLARED[wildcards.analysis]["inputs"], {"cell": [cell(wildcards).dir]}
    )
    return {**files, "settings": stage_settings("analysis")(wildcards)}


def model_analysis_input_args(wildcards, input):
    declared = DECLARED[wildcards.analysis]
    return analysis_protocol.arguments(
        {option: input[option] for option in declared["inputs"]}, declared["args"]
    )


def model_analysis_tables_of(analysis):
    return cell_files(TABLE1_CELLS, f"analysis/{analysis}.parquet")


def model_analysis_tables(wildcards):
    return model_analysis_tables_of(wildcards.analysis)


def model_figure_inputs(wildcards):
    """The per-model tables of Table 1's cells, and what else its figure declares (FIGURE_INPUTS, e.g. the
    cells' metrics.json where the figure shows the cascade's certified accuracy)."""
    extra = analysis_protocol.input_files(
        DECLARED[wildcards.analysis]["figure_inputs"], ANALYSIS_CELL_SETS
    )
    return {"tables": model_analysis_tables(wildcards), **extra}


def model_figure_args(wildcards, input):
    options = DECLARED[wildcards.analysis]["figure_inputs"]
    return analysis_protocol.arguments({o: input[o] for o in options})


def verifier_fingerprint(wildcards):
    return GRID.verifier_fingerprint(cell(wildcards), wildcards.verifier)


def grid_analysis_inputs(wildcards):
    """The files the cross-cell analysis reads, by option: from its declaration (ctbench.analysis.protocol)."""
    return analysis_protocol.input_files(
        DECLARED[wildcards.grid_analysis]["inputs"],
        ANALYSIS_CELL_SETS,
        ANALYSIS_VALUES,
        config,
    )


def grid_analysis_args(wildcards, input):
    """Its options: each input's files, then the further options it declares (ARGS)."""
    declared = DECLARED[wildcards.grid_analysis]
    files = {option: input[option] for option in declared["inputs"]}
    return analysis_protocol.arguments(files, declared["args"], ANALYSIS_VALUES)


def analysis_targets():
    """Figures and tables, and every per-model table itself: a deleted table is re-made (Snakemake would
    otherwise skip a missing intermediate file whose figure is up to date)."""
    figures = [f"results/analysis/{a}.png" for a in MODEL_ANALYSES]
    tables = [f for a in MODEL_ANALYSES for f in model_analysis_tables_of(a)]
    return figures + tables + [f"results/analysis/{a}.csv" for a in GRID_ANALYSES]


def cell_stages(c):
    """The stage jobs of cell ``c`` that run from a settings file (the train job's is cell.json)."""
    stages = ["select", "certify", "attack", "summarize"]
    stages += [f"analysis_{a}" for a in MODEL_ANALYSES] if c in TABLE1_SET else []
    return stages + ([f"verifier_{v}" for v in VERIFIERS] if c in VERIFIER_SET else [])


def write_stage_files():
    """Every cell's stage settings files (ctbench.stagefile), written by the main process before the DAG is
    built, and only where the content changes: a job that re-parsed the workflow per file would cost
    seconds each. A changed configuration rewrites the files it changes (the rules' fingerprints then re-run
    what it affects); a file edited by hand is rewritten from the configuration, and said so.
    """
    for c in CELLS:
        for stage in cell_stages(c):
            path = f"{c.dir}/settings/{stage}.json"
            data = GRID.stage_file(c, stage)
            try:
                with open(path) as f:
                    old = json.load(f)
            except (OSError, ValueError):
                old = None
            if old == data:
                continue
            write_json(path, data)
            if isinstance(old, dict) and not stagefile.intact(old):
                print(
                    f"ctbench: {path} had been edited by hand: rewritten from the configuration",
                    file=sys.stderr,
                )


TABLE1_SET, VERIFIER_SET = set(TABLE1_CELLS), set(VERIFIER_CELLS)
if workflow.is_main_process:
    write_stage_files()
