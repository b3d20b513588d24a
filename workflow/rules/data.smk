rule prepare_data:
    output:
        "results/data/{dataset}.prepared",
    log:
        "results/logs/prepare_data/{dataset}.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        source=data_source_args,
    shell:
        "ctbench data prepare {wildcards.dataset} {params.source} > {output} 2> {log}"
