# The one entry point: the workflow lives in workflow/Snakefile (snakemake finds this file first).
include: "workflow/Snakefile"
