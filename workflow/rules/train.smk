rule cell_config:
    output:
        cell="results/{dataset}/{eps}/{model}/{run}/seed{seed}/cell.json",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/cell_config.log",
    params:
        fingerprint=fingerprint("train"),
    run:
        write_cell_file(wildcards, output.cell)


rule train:
    input:
        cell=rules.cell_config.output.cell,
        data=prepared_flag,
    output:
        candidates="results/{dataset}/{eps}/{model}/{run}/seed{seed}/train/candidates.pt",
        history="results/{dataset}/{eps}/{model}/{run}/seed{seed}/train/history.csv",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/train.log",
    benchmark:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/benchmarks/train.tsv"
    retries: 2
    conda:
        "../envs/ctbench.yaml"
    threads: THREADS["train"]
    resources:
        runtime=runtime("train"),
        mem_mb=mem_mb,
        gpu=1,
    params:
        fingerprint=fingerprint("train"),
        root=data_root,
        cell=cell_dir,
    shell:
        "ctbench train --cell {input.cell} --threads {threads} --data-root {params.root} --device auto"
        " --no-select --on-config-change restart --out {params.cell} > {log} 2>&1"


rule select:
    input:
        candidates=rules.train.output.candidates,
        settings=stage_settings("select"),
    output:
        model="results/{dataset}/{eps}/{model}/{run}/seed{seed}/model.pt",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/select.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        fingerprint=fingerprint("select"),
    shell:
        "ctbench select {input.candidates} --threads {threads} --settings {input.settings}"
        " --out {output.model} > {log} 2>&1"
