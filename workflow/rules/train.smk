rule train:
    input:
        data=prepared_flag,
    output:
        candidates="results/{dataset}/{eps}/{method}/seed{seed}/train/candidates.pt",
        history="results/{dataset}/{eps}/{method}/seed{seed}/train/history.csv",
    log:
        "results/{dataset}/{eps}/{method}/seed{seed}/logs/train.log",
    benchmark:
        "results/{dataset}/{eps}/{method}/seed{seed}/benchmarks/train.tsv"
    retries: 2
    conda:
        "../envs/ctbench.yaml"
    resources:
        runtime=runtime("train"),
        mem_mb=mem_mb,
    params:
        config=train_config,
        hparams=config["hparams"],
        eps=eps_str,
        overrides=train_set_args,
        limits=train_limits,
        root=data_root,
        version=version("train"),
        cell=cell_dir,
    shell:
        "ctbench train --dataset {wildcards.dataset} --eps {params.eps} --method {wildcards.method}"
        " --seed {wildcards.seed} --hparams {params.hparams} {params.overrides} {params.limits}"
        " --data-root {params.root} --device auto --no-select --on-config-change restart"
        " --out {params.cell}"
        " > {log} 2>&1"


rule select:
    input:
        candidates=rules.train.output.candidates,
    output:
        model="results/{dataset}/{eps}/{method}/seed{seed}/model.pt",
    log:
        "results/{dataset}/{eps}/{method}/seed{seed}/logs/select.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        version=version("select"),
    shell:
        "ctbench select {input.candidates} --out {output.model} > {log} 2>&1"
