rule certify:
    input:
        model=rules.select.output.model,
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
        eps=eps_str,
        settings=certify_args,
        root=data_root,
        fingerprint=fingerprint("certify"),
        expect=expect("select"),
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench certify --threads {threads} --model {input.model} --eps {params.eps} {params.settings}"
        " --data-root {params.root} --device auto --fingerprint {params.fingerprint} {params.expect}"
        " --out {output.h5} > {log} 2>&1"


rule attack:
    input:
        model=rules.select.output.model,
        certificates=rules.certify.output.h5,
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
        eps=eps_str,
        settings=attack_args,
        root=data_root,
        fingerprint=fingerprint("attack"),
        expect=expect("select", "certify"),
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench attack --threads {threads} --model {input.model} --eps {params.eps} {params.settings}"
        " --certificates {input.certificates} --data-root {params.root} --device auto"
        " --fingerprint {params.fingerprint} {params.expect} --out {output.h5} > {log} 2>&1"


rule summarize:
    input:
        certify=rules.certify.output.h5,
        attack=rules.attack.output.h5,
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
        expect=expect("certify", "attack"),
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench summarize --certify {input.certify} --attack {input.attack}"
        " --fingerprint {params.fingerprint} {params.expect}"
        " --out {output.table} --metrics {output.metrics} > {log} 2>&1"
