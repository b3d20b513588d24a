# ctbench: the CTBench benchmark as a Snakemake DAG (paper Table 1 and App. D.1).
#
#   snakemake --profile workflow/profiles/slurm results/table1.csv          # the full grid on SLURM
#   snakemake --cores all --configfile config/demo.yaml                      # the embedded demo, CPU
#
# Results path grammar (every wildcard is constrained to the configured values):
#
#   results/data/{dataset}.prepared                       the dataset is staged and MD5-verified
#   results/{dataset}/{eps}/{method}/seed{seed}/
#       train/checkpoint.pt      resumable training state (model, optimizer, scheduler, SWA, RNG, epoch)
#       train/history.csv        per-epoch metrics
#       train/candidates.pt      the selection candidates (best-by-metric / SWA / last) of the finished run
#       model.pt                 the selected or SWA-averaged model + resolved config + provenance
#       certify.h5               per-sample certificate vectors (docs/certificates.md)
#       attack.h5                per-sample adversarial results
#       metrics.json, summary.parquet   the cell's summary (nat / cert / adv accuracy, counts per stage, time)
#       logs/*.log, benchmarks/*.tsv
#   results/table1.csv|.md        paper Table 1 layout, literature values alongside
#   results/seeds.csv             mean and std over seeds (paper Tables 13-17)
#
# {eps} is a path token: "0.1", "2_255" (= 2/255). Every rule calls the ctbench CLI; params carry
# exactly the cell's slice of the configuration, so editing one cell re-runs only that cell.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


wildcard_constraints:
    dataset=regex_alternatives(DATASETS),
    eps=regex_alternatives(EPS_STR),
    method=regex_alternatives(METHODS),
    seed=regex_alternatives(SEEDS),


localrules:
    all,
    prepare_data,
    summarize,
    report,


rule all:
    default_target: True
    input:
        "results/table1.csv",
        "results/seeds.csv",
