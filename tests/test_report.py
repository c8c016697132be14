"""The report renders n, intervals, smoke marks, captions and findings from hand-made evaluate outputs,
reading files only (no torch, no method or suite code)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kepitfalls.atomic import write_json, write_jsonl
from kepitfalls.metrics.records import MEAN, binary, by_metric, row, statistic
from kepitfalls.report.render import render_all
from kepitfalls.report.settings import load_report_params

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
METHODS = ["ROME", "MEMIT", "FT", "KN"]
#: NS per case: ROME and MEMIT keep neighbours, FT breaks them (12 records: enough to separate).
NS = {"ROME": [100.0] * 10 + [50.0, 100.0], "MEMIT": [100.0] * 11 + [50.0], "FT": [0.0] * 10 + [50.0, 0.0], "KN": [50.0] * 12}


def _write_group(root: Path, method: str, suite: str, rows: list[dict], model: str = "smollm2-135m") -> None:
    metrics = {name: statistic(r) for name, r in by_metric(rows).items()}
    metrics.update({f"{name}_n": float(len(r)) for name, r in by_metric(rows).items()})
    write_json(root / method / f"{suite}.json", metrics)
    write_jsonl(root / method / f"{suite}.records.jsonl", rows)
    write_json(root / method / f"{suite}.protocol.json", {
        "suite": suite, "protocol": f"The {suite} protocol.", "config": {"benchmark": "bench", "subset_size": 12, "seed": 0},
        "model": model, "model_dtype": None, "stats_corpus": {"name": "wikitext2", "tokens": 131072},
        "method": {"name": method, "description": "KN's variant sentence." if method == "KN" else None},
        "kinds": {name: r[0]["kind"] for name, r in by_metric(rows).items()},
    })


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / "metrics"
    for method in METHODS:
        counterfact = [row(str(i), "NS", MEAN, v, [v, v]) for i, v in enumerate(NS[method])]
        counterfact += [binary(str(i), "ES", method != "KN" or i % 2 == 0) for i in range(12)]
        _write_group(root, method, "counterfact", counterfact)
        # two DN records only: a smoke cell; one OA record: no spread at all
        dn = [row(f"DN/{i}", "DN", MEAN, 50.0 + 10 * i * (method == "MEMIT")) for i in range(2)]
        _write_group(root, method, "locality", dn + [row("OA/0", "OA", MEAN, 50.0 + 10 * (method == "MEMIT"))])
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["report"].update({"min_n": 10, "methods": METHODS, "suites": ["counterfact", "locality"]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _render(project: Path) -> Path:
    out = project / "reports"
    render_all(project / "metrics", REFERENCE, load_report_params(project / "params.yaml"), out)
    return out


def test_markdown_cells_carry_interval_n_and_smoke_marks(project: Path) -> None:
    text = (_render(project) / "table4.md").read_text()
    assert "| FT |" in text and "4.17 [" in text and "n=12 |" in text  # NS of FT: bootstrap interval, n=12, no smoke
    assert "n=2†" in text  # DN rests on 2 records
    assert "not implemented (32.96)" in text  # MEND's DN: the survey's number, nothing of ours
    assert "This run: model smollm2-135m" in text and "statistics corpus wikitext2, 131,072 tokens" in text
    assert "DN: ROME−MEMIT -5.00: separates at n ≈ 3" in text  # the size that would separate the smoke column
    pairs = len(METHODS) * (len(METHODS) - 1) // 2
    assert f"OA: {pairs} pairs on one shared record each, no spread to scale from" in text  # never "separated at n = 1"
    assert "no observed difference: ROME−FT" in text  # DN: the two records agree for every pair without MEMIT
    assert "KN: KN's variant sentence." in text


def test_counterfact_es_uses_clopper_pearson(project: Path) -> None:
    rows = list(csv.DictReader(io.StringIO((_render(project) / "counterfact.csv").read_text())))
    kn = next(r for r in rows if r["method"] == "KN")
    assert float(kn["ES"]) == 50.0 and int(kn["ES n"]) == 12
    assert (float(kn["ES ci_low"]), float(kn["ES ci_high"])) == pytest.approx((21.09, 78.91), abs=0.01)
    assert kn["Score"] == "" and kn["Score note"] == "no Score"


def test_csv_number_columns_hold_numbers_only(project: Path) -> None:
    for name in ("table3", "table4", "counterfact"):
        for r in csv.DictReader(io.StringIO((_render(project) / f"{name}.csv").read_text())):
            for key, value in r.items():
                if key.endswith((" ci_low", " ci_high", " n", " smoke")) and value:
                    float(value)


def test_latex_has_arrows_footnotes_and_caption(project: Path) -> None:
    text = (_render(project) / "table4.tex").read_text()
    assert "$\\uparrow$" in text and "$\\downarrow$" in text and "$^\\dagger$" in text
    assert "$^{1}$ The locality protocol." in text and "\\caption{Table 4: locality. This run: model smollm2-135m" in text


def test_findings_verdicts(project: Path) -> None:
    out = _render(project)
    results = {r["id"]: r for r in csv.DictReader(io.StringIO((out / "findings.csv").read_text()))}
    assert results["NS-ROME-FT"]["verdict"] == "supported" and int(results["NS-ROME-FT"]["n"]) == 12
    assert results["DN-MEMIT-ROME"]["verdict"].startswith("undecided at n = 2")
    assert results["RR-ROME-FT"]["verdict"].startswith("not tested")
    assert "| NS-MEMIT-FT |" in (out / "findings.md").read_text()
    assert "\\label{tab:findings}" in (out / "findings.tex").read_text()


def test_rendering_is_deterministic(project: Path) -> None:
    first = {p.name: p.read_bytes() for p in _render(project).iterdir()}
    assert first == {p.name: p.read_bytes() for p in _render(project).iterdir()}


def test_a_protocol_of_another_model_is_an_error(project: Path) -> None:
    _write_group(project / "metrics", "FT", "locality", [row("DN/0", "DN", MEAN, 1.0)], model="gpt-j-6b")
    with pytest.raises(ValueError, match=r"FT/locality.protocol.json: measured on 'gpt-j-6b'"):
        _render(project)


def test_an_unknown_method_in_report_methods_is_an_error(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["report"]["methods"] = [*METHODS, "NOPE"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"report\.methods: NOPE: no evaluated cells"):
        _render(project)


def test_report_imports_no_model_method_or_suite_code(project: Path) -> None:
    script = (
        "import sys; from pathlib import Path\n"
        "from kepitfalls.report.render import render_all\n"
        "from kepitfalls.report.settings import load_report_params\n"
        f"p = Path({str(project)!r})\n"
        f"render_all(p / 'metrics', Path({str(REFERENCE)!r}), load_report_params(p / 'params.yaml'), p / 'reports')\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m == 'transformers' or m.startswith(('kepitfalls.methods', 'kepitfalls.suites', 'torch.'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


def test_a_finding_needs_min_n_shared_records_to_be_decided() -> None:
    from kepitfalls.report.findings import Claim, verdict
    from kepitfalls.stats.intervals import Interval

    claim = Claim(id="x", claim="a above b", source="s", quoted=False, suite="locality", metric="DN", a="MEMIT",
                  relation="above", b="ROME")
    assert verdict(claim, Interval(40.0, 40.0, 40.0, 1), min_n=10).startswith("undecided at n = 1 (below report.min_n")
    assert verdict(claim, Interval(40.0, 20.0, 60.0, 10), min_n=10) == "supported"
    assert verdict(claim, Interval(-40.0, -60.0, -20.0, 12), min_n=10) == "contradicted"


def test_a_method_the_survey_has_no_row_for_gets_a_dash(project: Path) -> None:
    """KN (and GRACE) are not rows of the survey's Tables 3 and 4: their survey cell is "—", never empty or made up."""
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((_render(project) / "table4.csv").read_text()))}
    assert rows["KN"]["DN (survey)"] == "—" and rows["ROME"]["DN (survey)"] not in ("", "—")
    assert "| KN |" in (_render(project) / "table4.md").read_text() and "n=2† (—)" in (_render(project) / "table4.md").read_text()
