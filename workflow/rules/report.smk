rule manifest:
    output:
        cells="results/manifest/{part}.json",
    log:
        "results/logs/manifest_{part}.log",
    params:
        digest=manifest_digest,
    run:
        write_manifest(wildcards.part, output.cells)


rule report:
    input:
        manifest="results/manifest/table1.json",
        cells=cell_files(TABLE1_CELLS, "metrics.json"),
        literature=config["literature"],
        redo=redo("report", "results"),
    output:
        table1=report(
            "results/table1.csv", caption="../report/table1.rst", category="Tables"
        ),
        table1_md="results/table1.md",
        table1_tex="results/table1.tex",
        seeds=report(
            "results/seeds.csv", caption="../report/seeds_table.rst", category="Tables"
        ),
    log:
        "results/logs/report.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        hparams=config["hparams"],
    shell:
        "ctbench report {input.cells} --manifest {input.manifest} --literature {input.literature}"
        " --hparams {params.hparams} --tables table1 --out results > {log} 2>&1"


rule ablations:
    input:
        manifest="results/manifest/ablations.json",
        cells=cell_files(ABLATION_CELLS + TABLE1_CELLS, "metrics.json"),
        literature=config["literature"],
        redo=redo("ablations", "results"),
    output:
        ablations=report(
            "results/ablations.csv",
            caption="../report/ablations.rst",
            category="Tables",
        ),
        ablations_md="results/ablations.md",
    log:
        "results/logs/ablations.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        hparams=config["hparams"],
    shell:
        "ctbench report {input.cells} --manifest {input.manifest} --literature {input.literature}"
        " --hparams {params.hparams} --tables ablations --out results > {log} 2>&1"
