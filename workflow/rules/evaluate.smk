rule certify:
    input:
        model=rules.select.output.model,
        settings=stage_settings("certify"),
        extra=certify_extra_inputs,
        redo=redo("certify"),
    output:
        h5="results/{dataset}/{eps}/{model}/{run}/seed{seed}/certify.h5",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/certify.log",
    benchmark:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/benchmarks/certify.tsv"
    retries: 2
    conda:
        "../envs/ctbench.yaml"
    threads: THREADS["certify"]
    resources:
        runtime=runtime("certify"),
        mem_mb=mem_mb,
        gpu=1,
    params:
        root=data_root,
        fingerprint=fingerprint("certify"),
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench certify --threads {threads} --model {input.model} --settings {input.settings}"
        " --data-root {params.root} --device auto --out {output.h5} > {log} 2>&1"


rule attack:
    input:
        model=rules.select.output.model,
        certificates=rules.certify.output.h5,
        settings=stage_settings("attack"),
        redo=redo("attack"),
    output:
        h5="results/{dataset}/{eps}/{model}/{run}/seed{seed}/attack.h5",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/attack.log",
    benchmark:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/benchmarks/attack.tsv"
    retries: 2
    conda:
        "../envs/ctbench.yaml"
    threads: THREADS["attack"]
    resources:
        runtime=runtime("attack"),
        mem_mb=mem_mb,
        gpu=1,
    params:
        root=data_root,
        fingerprint=fingerprint("attack"),
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench attack --threads {threads} --model {input.model} --settings {input.settings}"
        " --certificates {input.certificates} --data-root {params.root} --device auto --out {output.h5} > {log} 2>&1"


rule summarize:
    input:
        certify=rules.certify.output.h5,
        attack=rules.attack.output.h5,
        settings=stage_settings("summarize"),
        redo=redo("summarize"),
    output:
        metrics="results/{dataset}/{eps}/{model}/{run}/seed{seed}/metrics.json",
        table="results/{dataset}/{eps}/{model}/{run}/seed{seed}/summary.parquet",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/summarize.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        fingerprint=fingerprint("summarize"),
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench summarize --certify {input.certify} --attack {input.attack}"
        " --settings {input.settings} --out {output.table} --metrics {output.metrics} > {log} 2>&1"
