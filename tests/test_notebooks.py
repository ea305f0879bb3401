"""The notebooks run headless under papermill in the smoke profile, through the runner CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import vaxis
from vaxis.run.runner import notebooks, parse_value


def test_every_notebook_has_a_parameters_cell_first():
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        for name in ("profile", "model", "quantization", "run_dir", "seed"):
            assert f"{name} =" in code[0].source, f"{path.name} lacks parameter {name}"
        assert all(not c.get("outputs") for c in code), f"{path.name} is committed with outputs"


def test_no_notebook_writes_tex():
    """The report renders markdown without MathJax (no script, no CDN), so TeX would show raw there: symbols are
    written in HTML (<i>v</i><sub>L</sub>)."""
    import re

    tex = re.compile(r"\$[^$\s][^$]*\$|\\\(|\\\[")
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        found = [m.group(0) for c in nb.cells if c.cell_type == "markdown" for m in tex.finditer(c.source)]
        assert not found, f"{path.name}: TeX in markdown, which the report shows raw: {found[:3]}"


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("None") is None
    assert parse_value("true") is True and parse_value("smollm2-135m") == "smollm2-135m"
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value('{"enable_thinking": false}') == {"enable_thinking": False}
    assert parse_value("{'enable_thinking': True}") == {"enable_thinking": True}


def test_relative_path_parameters_become_absolute(tmp_path):
    from vaxis.run.runner import absolute_paths

    (tmp_path / "runs" / "demo" / "controlled_axis").mkdir(parents=True)
    params = {"axis_path": "runs/demo/controlled_axis", "prompts_file": "shipped", "seed": 1, "other": "runs"}
    out = absolute_paths(params, cwd=tmp_path)
    assert out["axis_path"] == str((tmp_path / "runs/demo/controlled_axis").resolve())
    assert out["prompts_file"] == "shipped" and out["seed"] == 1 and out["other"] == "runs"


def test_unknown_notebook_and_profile(tmp_path):
    with pytest.raises(SystemExit, match="no notebook numbered"):
        notebooks(["99"])
    out = subprocess.run(
        [sys.executable, "-m", "vaxis", "run", "--profile", "nope", "--run-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "unknown profile" in out.stderr


@pytest.mark.slow
def test_smoke_run_of_all_notebooks(tmp_path):
    """`python -m vaxis run --profile smoke` executes every notebook and writes their outputs. Seed 0, the
    notebooks' default, so that the nbval run of `make test` (after this one) reads the same passes and adapters
    from the cache instead of computing them a second time."""
    out = subprocess.run(
        [sys.executable, "-m", "vaxis", "run", "--profile", "smoke", "--run-dir", str(tmp_path), "-p", "seed", "0"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    names = [p.name for p in notebooks()]
    for name in names:
        assert (tmp_path / name).exists()
        assert f"{name[:-6]} done in" in out.stdout
        executed = nbformat.read(tmp_path / name, as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "seed = 0" in injected[0].source
    assert (tmp_path / "games.jsonl").exists() and (tmp_path / "extraction" / "meta.json").exists()
    # `--estimate` planned this run: per notebook as many extraction, generation and training passes, tokens within 5%
    # (before the rerun of 03 below replaces its timings; the run folder's value_axis names the main layer)
    from vaxis.run.estimate import compare, estimate, load_timings

    planned = estimate("smoke", parameters={"seed": 0}, gpu="cpu", run_dir=tmp_path)
    assert compare(planned, load_timings(tmp_path)) == []
    card = json.loads((tmp_path / "scorecard.json").read_text())
    headline = card["fig2.heldout_auroc_token_replication"]
    assert "tiny-qwen3" in headline["context"]  # every number names its model
    assert len(headline["ci"]) == 2 and "criteria" in headline["n"] and "shuffled-label" in headline["null"]
    assert "ci" in card["sec7.placebo_ratio"] and any(k.startswith("controls.matched.") for k in card)
    for key in ("fig3.verbalized_auroc", "fig3.framing_flip", "fig4.yes_rate_correct", "sec7.steer_length"):
        assert "tiny-qwen3" in card[key]["context"], key  # notebook 04 wrote its rows
    assert (tmp_path / "figures" / "confidence_steering.png").stat().st_size > 0
    assert "tiny-qwen3" in card["fig6.event_locked_0"]["context"]  # notebook 05 wrote its rows
    assert (tmp_path / "figures" / "backtracking_bands.png").stat().st_size > 0
    for key in ("sec4.code_d_shuffled", "sec4.code_share_logical", "fig4.code_comments"):
        assert "tiny-qwen3" in card[key]["context"], key  # notebook 06 wrote its rows
        assert card[key]["n"] and card[key]["null"], key
    for name in ("code_after_bug.png", "code_verbosity.png", "code_slopes.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0
    for key in ("sec5.selection", "sec5.ranking_prefer", "sec5.where_user", "sec6.sft_gsm8k", "sec6.sft_arc"):
        assert "tiny-qwen3" in card[key]["context"], key  # notebooks 07 and 08 wrote their rows
        assert card[key]["n"] and card[key]["null"], key
    for name in ("dpo_loss.png", "dpo_rates.png", "sft_loss.png", "sft_deltas.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0
    for key in (
        "sec6.wild_info_top",
        "sec6.wild_political_bottom",
        "sec6.eval_awareness_d",
        "sec6.eval_awareness_base_d",
    ):
        assert "tiny-qwen3" in card[key]["context"], key  # notebook 09 wrote its rows
        assert card[key]["n"] and card[key]["null"], key
    for name in ("wild_quartiles.png", "wild_eval_awareness.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0
    assert "tiny-qwen3" in card["sec7.prefill_conflict"]["context"]  # notebook 10 wrote its rows
    assert any(k.startswith("sec7.verdict.") and "position_matched" in k for k in card)
    assert (tmp_path / "figures" / "end_of_turn_cosine.png").stat().st_size > 0
    value = vaxis.Axis.load(tmp_path / "value_axis")
    for name in ("end_of_turn_axis", "controlled_axis", "position_matched_axis"):  # any of them is an axis_path
        other = vaxis.Axis.load(tmp_path / name)
        assert (other.layers, other.hidden_size, other.model) == (value.layers, value.hidden_size, value.model)
    # notebook 03 reads any saved axis beside the fitted one (axis_path), as 04-09 do
    again = subprocess.run(
        [sys.executable, "-m", "vaxis", "run", "--profile", "smoke", "--run-dir", str(tmp_path), "--only", "03",
         "-p", "axis_path", str(tmp_path / "controlled_axis")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "end-of-turn direction projected out" in (tmp_path / "03_fit_axis.ipynb").read_text()
    finished = [p for p in (tmp_path / "adapters").iterdir() if (p / "vaxis_adapter.json").exists()]
    # 3 DPO + 3 SFT + 2 evaluation-awareness adapters, no leftovers
    assert len(finished) == 8 and not list((tmp_path / "adapters").glob(".*tmp*"))
    assert vaxis.Axis.load(tmp_path / "boundary_axis").main_layer in vaxis.Axis.load(tmp_path / "value_axis").layers
    axis = vaxis.Axis.load(tmp_path / "value_axis")
    assert axis.hidden_size == 64 and axis.n_blocks == 3 and axis.main_layer in axis.layers
    assert (tmp_path / "figures" / "auroc_by_layer.png").stat().st_size > 0
    assert (tmp_path / "figures" / "null_distribution.png").stat().st_size > 0
    assert not list((vaxis.run.config.REPO_ROOT / "figures").glob("smoke_*"))  # nothing published unasked
    # notebook 09 alone on a user's own prompts file (30 prompts in 3 categories unlike the shipped ones, each longer
    # than the evaluation-awareness organism's limit): the quartiles read the file, and the organism draws its
    # prompts from the shipped set, with a note, instead of failing (issue 19)
    topics = ("gardening", "recipes", "travel")
    mine = tmp_path / "my_prompts.jsonl"
    mine.write_text("".join(json.dumps({"id": f"u{i}", "category": topics[i % 3], "prompt": f"Tell me about "
                    f"{topics[i % 3]}, case {i}. " + "Explain every detail, step by step. " * 12}) + "\n" for i in range(30)))  # fmt: skip
    alone = subprocess.run(
        [sys.executable, "-m", "vaxis", "run", "--profile", "smoke", "--run-dir", str(tmp_path), "--only", "09",
         "-p", "prompts_file", str(mine)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    executed = (tmp_path / "09_in_the_wild.ipynb").read_text()
    assert f"30 prompts from {mine}" in executed and "draws them from the shipped prompts" in executed
    # the report of this smoke run (issue 22): every notebook has a page the index links, every link resolves inside
    # the report, and no local path (the run folder, the repository, the home folder) is left in any file
    from test_run_report import site_problems

    from vaxis.run.report import build_report

    index = build_report(tmp_path)
    pages = {name[:-6] + ".html" for name in names}
    assert pages <= {p.name for p in index.parent.glob("*.html")}
    linked = index.read_text(encoding="utf-8")
    assert all(f'href="{page}"' in linked for page in pages), sorted(pages)
    home = str(Path.home())
    assert site_problems(index.parent, [str(tmp_path), str(vaxis.run.config.REPO_ROOT), home]) == []


def test_every_notebook_names_the_vaxis_kernel():
    """Every committed notebook opens (JupyterLab) and runs (papermill, nbval) on the `vaxis` kernel that
    `make install` / `make lab` register in .venv."""
    from vaxis.run.runner import KERNEL_NAME, NOTEBOOK_DIR

    paths = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    assert paths
    for path in paths:
        spec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
        assert spec.get("name") == KERNEL_NAME, f"{path.name}: kernelspec {spec.get('name')!r}, not {KERNEL_NAME!r}"
        assert spec.get("language") == "python" and spec.get("display_name"), f"{path.name}: kernelspec {spec}"
