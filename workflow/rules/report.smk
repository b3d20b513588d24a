rule report:
    input:
        cells=all_cell_files("metrics.json"),
        literature=config["literature"],
    output:
        table1="results/table1.csv",
        table1_md="results/table1.md",
        table1_tex="results/table1.tex",
        seeds="results/seeds.csv",
    log:
        "results/logs/report.log",
    conda:
        "../envs/ctbench.yaml"
    shell:
        "ctbench report {input.cells} --literature {input.literature} --out results > {log} 2>&1"
