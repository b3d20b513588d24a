"""benchmarks/reduced_scale.py: `keep` copies only a finished cell's small files; `rows` reads them back into
the README table's row (counts per stage, cert ∧ attacked, times) — checked on a hand-made cell."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reduced_scale", ROOT / "benchmarks" / "reduced_scale.py")
rs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rs)


def _cell(results: Path, eps: str, method: str, metrics: dict) -> Path:
    cell = results / "mnist" / eps / "cnn_small" / method / "seed0"
    (cell / "train").mkdir(parents=True)
    (cell / "benchmarks").mkdir()
    (cell / "metrics.json").write_text(json.dumps(metrics))
    (cell / "config.yaml").write_text(f"method: {method}\n")
    (cell / "train" / "history.csv").write_text("epoch,time_s\n1,1.0\n")
    (cell / "train" / "attempts.csv").write_text("attempt,start_epoch,end_epoch,wall_s\n1,0,4,60\n2,4,18,540\n")
    (cell / "train" / "checkpoint.pt").write_bytes(b"not kept")
    (cell / "model.pt").write_bytes(b"not kept")
    for stage, s in (("train", 650.0), ("certify", 90.0), ("attack", 30.0)):
        (cell / "benchmarks" / f"{stage}.tsv").write_text(f"s\th:m:s\tcpu_time\n{s}\t0:00:00\t{s * 0.9}\n")
    return cell


METRICS = {
    "n": 1000, "nat_acc": 0.98, "cert_acc": 0.90, "adv_acc": 0.93, "ibp_acc": 0.85,
    "cert_acc_upto_IBP": 0.85, "cert_acc_upto_CROWN-IBP": 0.87, "cert_acc_upto_CROWN": 0.885,
    "cert_acc_upto_alpha-CROWN": 0.89, "decided_by_BaB": 12, "count_timeout": 7, "certified_but_attacked": 0,
}


def test_keep_copies_small_files_only_and_rows_read_them(tmp_path):
    results = tmp_path / "results"
    _cell(results, "0.3", "crown_ibp", METRICS)
    unfinished = results / "mnist" / "0.1" / "cnn_small" / "taps" / "seed0"
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text("method: taps\n")
    (results / "table1.md").write_text("| table |\n")
    out = tmp_path / "kept"
    assert rs.main(["keep", str(results), str(out)]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["0.3/crown_ibp/benchmarks/attack.tsv", "0.3/crown_ibp/benchmarks/certify.tsv",
                     "0.3/crown_ibp/benchmarks/train.tsv", "0.3/crown_ibp/config.yaml", "0.3/crown_ibp/metrics.json",
                     "0.3/crown_ibp/train/attempts.csv", "0.3/crown_ibp/train/history.csv", "table1.md"]
    table = rs.rows(out).splitlines()
    assert len(table) == 3
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:6] == ["0.3", "CROWN-IBP", "98.0", "90.0", "93.0", "85.0"]
    # 0.87-0.85, 0.885-0.87, 0.89-0.885 of 1000, then BaB certifies the rest up to cert_acc 0.90
    assert cells[6] == "20 / 15 / 5 / 10 (CROWN-IBP / CROWN / alpha-CROWN / BaB)"
    assert cells[7:9] == ["7", "0"]
    assert cells[9] == "10.0 min (9.8 min)"  # 60 + 540 s over both attempts; CPU of the tsv
    assert cells[10] == "2.0 min"  # certify 90 s + attack 30 s
    assert cells[11] == "98.48 / 93.9 / 94.29"  # config/literature.yaml, mnist_0.3 crown_ibp


def test_rows_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert rs.main(["rows", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_the_kept_runs_are_the_readme_tables():
    """Every kept run under benchmarks/runs/ (issue 26): its rows, re-read from the kept files, stand verbatim in
    benchmarks/README.md, and no certified sample was broken by the attack (cert ∧ attacked = 0)."""
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    runs = sorted(p for p in (ROOT / "benchmarks" / "runs").iterdir() if p.is_dir())
    assert runs, "no kept run under benchmarks/runs/"
    for run in runs:
        data_rows = rs.rows(run).splitlines()[2:]
        assert data_rows, f"{run.name}: no finished cell kept"
        for line in data_rows:
            assert line in readme, f"{run.name}: row not in benchmarks/README.md: {line}"
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[rs.HEADER.index("cert ∧ attacked")] == "0", f"{run.name}: {line}"
