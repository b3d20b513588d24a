# Helpers of the ctbench workflow: configuration, the grid of cells, per-cell parameters, resources.
# Every function the rules use lives here (snakemake --lint: no functions beside rules elsewhere).
import functools
import json
import re
import shlex

import yaml
from snakemake.utils import validate

from ctbench.config import eps_token, find_setting, load_hparams, resolve

validate(config, schema="../schemas/config.schema.yaml")
validate(load_hparams(config["hparams"]), schema="../schemas/hparams.schema.yaml")

HPARAMS = load_hparams(config["hparams"])
SETTINGS = {
    (s["dataset"], eps_token(s["eps"])): find_setting(HPARAMS, s["dataset"], s["eps"])
    for s in config["settings"]
}
EPS_STR = {eps_token(s["eps"]): s["eps"] for s in config["settings"]}
DATASETS = sorted({d for d, _ in SETTINGS})
METHODS = list(config["methods"])
SEEDS = [str(s) for s in config["seeds"]]
CELLS = [
    (dataset, eps, method, seed)
    for (dataset, eps) in SETTINGS
    for method in METHODS
    for seed in SEEDS
]

# GPU rules' wall time and memory per dataset (sbatch -t minutes, --mem MB) on one A100/H100-class GPU
# for the paper's schedules; edit for your site (or override with --set-resources in a profile).
RUNTIME_MIN = {
    "train": {"mnist": 600, "mnist_mini": 60, "cifar10": 1440, "tinyimagenet": 2880},
    "certify": {"mnist": 1440, "mnist_mini": 60, "cifar10": 2880, "tinyimagenet": 2880},
    "attack": {"mnist": 120, "mnist_mini": 30, "cifar10": 240, "tinyimagenet": 360},
}
MEM_MB = {"mnist": 16000, "mnist_mini": 4000, "cifar10": 32000, "tinyimagenet": 64000}


def regex_alternatives(values):
    return "|".join(re.escape(str(v)) for v in values)


def cell_overrides(setting, method):
    """The overrides of one cell: "*" entries first, then the setting's, the most specific last."""
    table = config.get("overrides", {})
    merged = {}
    for s in ("*", setting):
        for m in ("*", method):
            merged.update(table.get(s, {}).get(m, {}))
    if config.get("model"):
        merged.setdefault("model", config["model"])
    return merged


@functools.lru_cache(maxsize=None)
def _resolved(dataset, eps, method, seed):
    setting = SETTINGS[(dataset, eps)]
    cfg = resolve(
        setting,
        method,
        cell_overrides(setting, method),
        hparams=HPARAMS,
        seed=int(seed),
    )
    cfg["dataset"] = dataset
    return cfg


def train_config(wildcards):
    """The cell's resolved config (JSON): a params entry, so editing one cell re-runs only that cell."""
    return json.dumps(
        _resolved(wildcards.dataset, wildcards.eps, wildcards.method, wildcards.seed),
        sort_keys=True,
    )


def train_set_args(wildcards):
    """The cell's overrides as `--set key=value` arguments (shell-quoted)."""
    setting = SETTINGS[(wildcards.dataset, wildcards.eps)]
    items = cell_overrides(setting, wildcards.method)
    args = []
    for key, value in sorted(items.items()):
        text = (
            "null"
            if value is None
            else yaml.safe_dump(value, default_flow_style=True).strip()
        )
        text = text.removesuffix("\n...").strip()
        args += ["--set", shlex.quote(f"{key}={text}")]
    return " ".join(args)


def train_limits(wildcards):
    limits = config.get("train", {})
    args = []
    if limits.get("subset"):
        args += ["--subset", str(limits["subset"])]
    if limits.get("max_steps"):
        args += ["--max-steps", str(limits["max_steps"])]
    return " ".join(args)


def eps_str(wildcards):
    return shlex.quote(EPS_STR[wildcards.eps])


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


def certify_args(wildcards):
    c = config.get("certify", {})
    args = [
        "--stages",
        ",".join(
            c.get("stages", ["IBP", "CROWN-IBP", "CROWN", "alpha-CROWN", "PGD", "BaB"])
        ),
        "--timeout",
        str(c.get("timeout", 1000)),
        "--batch",
        str(c.get("batch", 256)),
    ]
    if c.get("n"):
        args += ["--n", str(c["n"])]
    if c.get("abcrown_config"):
        args += ["--abcrown-config", c["abcrown_config"]]
    return " ".join(args)


def certify_extra_inputs(wildcards):
    """The alpha-beta-CROWN config, when set, is an input: editing it re-runs certification."""
    path = config.get("certify", {}).get("abcrown_config")
    return [path] if path else []


def attack_args(wildcards):
    a = config.get("attack", {})
    kinds = (
        "pgd,autoattack"
        if wildcards.method in a.get("autoattack_methods", [])
        else "pgd"
    )
    return f"--attack {kinds} --steps {a.get('steps', 200)} --restarts {a.get('restarts', 5)}"


def certify_n(wildcards):
    n = config.get("certify", {}).get("n")
    return f"--n {n}" if n else ""


def version(stage):
    return config.get("versions", {}).get(stage, 1)


def runtime(stage):
    def _runtime(wildcards):
        return RUNTIME_MIN[stage].get(wildcards.dataset, 600)

    return _runtime


def mem_mb(wildcards):
    return MEM_MB.get(wildcards.dataset, 16000)


def all_cell_files(name):
    return [f"results/{d}/{e}/{m}/seed{s}/{name}" for d, e, m, s in CELLS]


def prepared_flag(wildcards):
    return f"results/data/{wildcards.dataset}.prepared"


def cell_dir(wildcards):
    return f"results/{wildcards.dataset}/{wildcards.eps}/{wildcards.method}/seed{wildcards.seed}"
