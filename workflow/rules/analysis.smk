rule analyze_model:
    input:
        unpack(model_analysis_inputs),
    output:
        table="results/{dataset}/{eps}/{model}/{run}/seed{seed}/analysis/{analysis}.parquet",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/analysis_{analysis}.log",
    benchmark:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/benchmarks/analysis_{analysis}.tsv"
    retries: 1
    conda:
        "../envs/ctbench.yaml"
    threads: THREADS["analyze_model"]
    resources:
        runtime=runtime("attack"),
        mem_mb=mem_mb,
        gpu=1,
    params:
        inputs=model_analysis_input_args,
        root=data_root,
        fingerprint=analysis_fingerprint,
    shell:
        "ctbench analyze --threads {threads} {wildcards.analysis} {params.inputs} --settings {input.settings}"
        " --data-root {params.root} --device auto --out {output.table} > {log} 2>&1"


rule model_figure:
    input:
        unpack(model_figure_inputs),
    output:
        png=report(
            "results/analysis/{analysis}.png",
            caption="../report/model_figure.rst",
            category="Per-model analyses",
        ),
        pdf="results/analysis/{analysis}.pdf",
    log:
        "results/logs/figure_{analysis}.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        args=model_figure_args,
    shell:
        "ctbench figure {wildcards.analysis} {input.tables} {params.args} --out results/analysis/{wildcards.analysis}"
        " > {log} 2>&1"


rule certify_verifier:
    input:
        model=rules.select.output.model,
        settings=stage_settings("verifier"),
        extra=certify_extra_inputs,
    output:
        h5="results/{dataset}/{eps}/{model}/{run}/seed{seed}/verifiers/{verifier}.h5",
    log:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/logs/verifier_{verifier}.log",
    benchmark:
        "results/{dataset}/{eps}/{model}/{run}/seed{seed}/benchmarks/verifier_{verifier}.tsv"
    retries: 2
    conda:
        "../envs/ctbench.yaml"
    threads: THREADS["certify_verifier"]
    resources:
        runtime=runtime("certify"),
        mem_mb=mem_mb,
        gpu=1,
    params:
        root=data_root,
        fingerprint=verifier_fingerprint,
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench certify --threads {threads} --model {input.model} --settings {input.settings}"
        " --data-root {params.root} --device auto --out {output.h5} > {log} 2>&1"


rule analyze_grid:
    input:
        unpack(grid_analysis_inputs),
    output:
        csv=report(
            "results/analysis/{grid_analysis}.csv",
            caption="../report/grid_analysis.rst",
            category="Cross-cell analyses",
        ),
        md="results/analysis/{grid_analysis}.md",
        tex="results/analysis/{grid_analysis}.tex",
        png=report(
            "results/analysis/{grid_analysis}.png",
            caption="../report/grid_analysis.rst",
            category="Cross-cell analyses",
        ),
        pdf="results/analysis/{grid_analysis}.pdf",
    log:
        "results/logs/analysis_{grid_analysis}.log",
    conda:
        "../envs/ctbench.yaml"
    params:
        args=grid_analysis_args,
    shell:
        "HDF5_USE_FILE_LOCKING=FALSE ctbench analyze --threads {threads} {wildcards.grid_analysis} {params.args}"
        " --out-dir results/analysis > {log} 2>&1"
