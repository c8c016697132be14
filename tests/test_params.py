"""params.yaml against its schema: what a typo, a stray key or an impossible value does (stops the stage)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from dvc.repo import Repo

from kepitfalls import stage_matrix
from kepitfalls.deltas.store import delta_key
from kepitfalls.params import PROJECT_ROOT, ParamsError, load_params

RAW = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text(encoding="utf-8"))


def _load_changed(tmp_path: Path, change: Callable[[dict[str, Any]], None]):
    raw = copy.deepcopy(RAW)
    change(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_params(path)


def test_project_params_validate() -> None:
    params = load_params()
    assert params.model == RAW["model"]
    assert params.hparams("ROME").layer == RAW["methods"]["ROME"][RAW["model"]]["layer"]
    assert params.suite("counterfact").subset_size == RAW["suites"]["counterfact"]["subset_size"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["suites"]["counterfact"].update({"subset-size": 1}),
         r"suites\.counterfact\.subset-size: unknown key \(expected one of: .*subset_size"),
        (lambda p: p["methods"]["ROME"]["gpt-j-6b"].update({"v_lr_typo": 0.5}), r"methods\.ROME\.gpt-j-6b\.v_lr_typo: unknown key"),
        (lambda p: p["methods"]["MEMIT"]["smollm2-135m"].pop("mom2_update_weight"),
         r"methods\.MEMIT\.smollm2-135m\.mom2_update_weight: missing key"),
        (lambda p: p["stats"]["corpus"].pop("seed"), r"stats\.corpus\.seed: missing key"),
        (lambda p: p["suites"]["mquake"].update({"subset_size": -1}), r"suites\.mquake\.subset_size: .*greater than 0, got -1"),
        (lambda p: p["methods"]["KN"]["gpt2-xl"].update({"p": 1.5}), r"methods\.KN\.gpt2-xl\.p: .*less than or equal to 1"),
        (lambda p: p["methods"]["ROME"]["smollm2-135m"].update({"layer": 30}),
         r"methods\.ROME\.smollm2-135m\.layer: layer 30 does not exist in smollm2-135m: expected 0\.\.29"),
        (lambda p: p["methods"]["ROME"]["smollm2-135m"].update({"v_loss_layer": -31}),
         r"methods\.ROME\.smollm2-135m\.v_loss_layer: layer -31 does not exist"),
        (lambda p: p["methods"]["MEMIT"]["gpt-j-6b"].update({"layers": [26, 27, 28]}),
         r"methods\.MEMIT\.gpt-j-6b\.layers: layer 28 does not exist in gpt-j-6b"),
        (lambda p: p["methods"]["MEMIT"]["gpt-j-6b"].update({"layers": [4, 3]}), r"methods\.MEMIT\.gpt-j-6b\.layers: .*ascending"),
        (lambda p: p["stats"].update({"layers": [3, 4]}), r"stats\.layers: missing \[5\], which methods\.ROME\.smollm2-135m reads"),
        (lambda p: p["report"].update({"methods": ["NOPE"]}), r"report\.methods\.0: .*'ROME'.*got 'NOPE'"),
        (lambda p: p["report"].update({"suites": ["counterfact", "nope"]}), r"report\.suites\.1: .*'counterfact'.*got 'nope'"),
        (lambda p: p["suites"].pop("round"), r"report\.suites: round has no suites\.round block"),
        (lambda p: p["methods"]["FT"].pop("smollm2-135m"), r"methods\.FT\.smollm2-135m: missing"),
        (lambda p: p["templates"]["MEMIT"].update({"recipe": [[10, 4]]}), r"templates\.MEMIT: recipe entry \[10, 4\] yields no template"),
        (lambda p: p.update({"model": "gpt-5"}), r"model: .*unknown model 'gpt-5': not a named model .*a hub id \(org/name\)"),
        (lambda p: p.update({"model": "EleutherAI/gpt-j-6b"}), r"methods\.ROME\.EleutherAI/gpt-j-6b: missing"),
    ],
)
def test_invalid_params_stop_naming_the_key(tmp_path: Path, change: Callable[[dict[str, Any]], None], message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        _load_changed(tmp_path, change)


def test_a_suite_left_out_of_the_report_may_be_left_out_of_params(tmp_path: Path) -> None:
    def only_counterfact(p: dict[str, Any]) -> None:
        p["suites"] = {"counterfact": p["suites"]["counterfact"]}
        p["report"]["suites"] = ["counterfact"]

    params = _load_changed(tmp_path, only_counterfact)
    with pytest.raises(KeyError, match="no suites.round block"):
        params.suite("round")


def test_stage_matrix_lists_agree_or_stop_naming_both_keys() -> None:
    stage_matrix.check(RAW)  # the project's own lists agree
    raw = copy.deepcopy(RAW)
    raw["report"]["methods"] = ["ROME", "MEMIT", "FT"]
    raw["general"]["methods"] = ["ROME", "MEMIT", "FT", "KN"]
    with pytest.raises(ParamsError, match=r"general\.methods \['KN'\] must also be in report\.methods: .*prepare@"):
        stage_matrix.check(raw)


def test_params_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        load_params().hparams("ROME").layer = 6  # type: ignore[misc]


def _rome_key(params) -> str:
    return delta_key("model", "ROME", params.hparams("ROME").model_dump(mode="json"), [{"prompt": "{} is"}])


def test_delta_keys_depend_on_the_validated_values_only(tmp_path: Path) -> None:
    assert _rome_key(load_params()) == _rome_key(load_params())
    # The same values written differently (an int for a float, keys reordered) give the same key ...
    reordered = _load_changed(tmp_path, lambda p: p["methods"]["ROME"].update(
        {RAW["model"]: dict(reversed([*p["methods"]["ROME"][RAW["model"]].items(), ("v_lr", 1 / 2)]))}))
    assert _rome_key(reordered) == _rome_key(load_params())
    # ... another value another one.
    changed = _load_changed(tmp_path, lambda p: p["methods"]["ROME"][RAW["model"]].update({"v_lr": 0.25}))
    assert _rome_key(changed) != _rome_key(load_params())


def test_each_cell_depends_on_its_own_models_hyper_parameters_only() -> None:
    """Editing GPT-J's ROME block must not re-run the SmolLM2 ROME cells: no cell depends on a whole method block."""
    repo = Repo(str(PROJECT_ROOT))
    try:
        cells = [s for s in repo.index.stages if s.name.split("@")[0] == "cell"]
        assert len(cells) == len(RAW["report"]["methods"]) * len(RAW["report"]["suites"])
        for stage in cells:
            method = stage.name.split("@")[1].split("-")[0]
            # params reach the stages as artifacts/params/<key>.json (kepitfalls.param_files), never as DVC params
            assert not [dep for dep in stage.deps if hasattr(dep, "params")], stage.name
            keys = {Path(dep.def_path).name for dep in stage.deps if dep.def_path.startswith("artifacts/params/")}
            assert {k for k in keys if k.startswith("methods.")} == {f"methods.{method}.{RAW['model']}.json"}, stage.name
    finally:
        repo.close()
