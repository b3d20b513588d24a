# ctbench: the CTBench benchmark as a Snakemake DAG (paper Table 1, App. B and D).
#
#   snakemake --profile slurm results/table1.csv                     # the full grid on SLURM
#   snakemake --cores all --configfile config/demo.yaml              # the embedded demo, CPU
#
# Results path grammar (every wildcard is constrained to the configured values):
#
#   results/data/{dataset}.prepared                     the dataset is staged and MD5-verified
#   results/manifest/{all,table1,ablations}.json        cells with their fingerprints (ctbench report checks them)
#   results/{dataset}/{eps}/{model}/{run}/seed{seed}/   one cell; run = method or method+variant
#       cell.json                the resolved training config (what the train job trains) + fingerprint
#       settings/{stage}.json    what each later job runs (select, certify, attack, summarize, analysis_<name>,
#                                verifier_<stage>): resolved settings + fingerprint, written when the workflow
#                                starts; the job checks it (ctbench.stagefile)
#       train/checkpoint.pt      resumable training state (model, optimizer, scheduler, SWA, RNG, epoch)
#       train/history.csv        per-epoch metrics
#       train/candidates.pt      the selection candidates (best-by-metric / SWA / last) of the finished run
#       model.pt                 the selected or SWA-averaged model + resolved config + provenance
#       certify.h5               per-sample certificate vectors (docs/certificates.md)
#       attack.h5                per-sample adversarial results
#       metrics.json, summary.parquet   the cell's summary (nat / cert / adv accuracy, counts per stage, time)
#       logs/*.log, benchmarks/*.tsv
#   results/table1.csv|.md|.tex   paper Table 1 layout, literature values alongside (base cells)
#   results/seeds.csv             mean and std over seeds (paper Tables 13-17)
#   results/ablations.csv|.md     variants and extra cells beside their base cells (Tables 3, 18, Fig. 7);
#                                 `snakemake results/table1.csv` trains only Table 1's cells
#
# {eps} is a path token: "0.1", "2_255" (= 2/255). Every rule calls the ctbench CLI. Every stage of a
# cell carries its fingerprint (ctbench.fingerprint) as a param and inside its output, so a changed
# cell re-runs from the first changed stage on, whether or not the files in between still exist.
import sys

from ctbench.grid import load_yaml as _check_yaml
from ctbench.errors import CTBenchError as _CTBenchError

# config/config.yaml is the grid unless --configfile names another: a given file is a complete grid and
# is not merged over the paper grid (it would inherit its ablations). --config key=value still applies.
if not workflow.overwrite_configfiles:
    # broken YAML: file:line:column, not Snakemake's bare message
    try:
        _check_yaml("config/config.yaml")
    except _CTBenchError as _e:
        sys.exit(f"ctbench: error: {_e}")
    workflow.configfile("config/config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/analysis.smk"


wildcard_constraints:
    dataset=regex_alternatives(c.dataset for c in CELLS),
    eps=regex_alternatives(c.eps for c in CELLS),
    model=regex_alternatives(c.model for c in CELLS),
    run=regex_alternatives(c.run for c in CELLS),
    seed=regex_alternatives(c.seed for c in CELLS),
    part=regex_alternatives(MANIFEST_PARTS),
    analysis=regex_alternatives(ALL_MODEL_ANALYSES),
    grid_analysis=regex_alternatives(ALL_GRID_ANALYSES),
    verifier=regex_alternatives(VERIFIERS or ["none"]),


localrules:
    all,
    prepare_data,
    cell_config,
    manifest,
    summarize,
    report,
    ablations,
    model_figure,
    analyze_grid,


onstart:
    check_slurm_resources(workflow)


onsuccess:
    print_where_to_look(workflow)


rule all:
    default_target: True
    input:
        final_targets(),
