"""Every notebook checks all of its parameters and the data they select before it loads a model (vaxis.run.checks), and
`python -m vaxis run --dry-run` runs the same checks; notebook 09's evaluation-awareness organism draws its prompts
from the shipped set when a user's prompts file is too small."""

from __future__ import annotations

import ast
import json

import nbformat
import papermill as pm
import pytest
import torch

import vaxis
from vaxis.data import icrl
from vaxis.data.prompts import PROMPTS_FILE, read_prompts
from vaxis.experiments import evalaware as ea
from vaxis.run.checks import CHECKS, RESOLVED, ParameterError, check_notebook, dry_run_check, resolve_overrides
from vaxis.run.config import available_profiles, resolve
from vaxis.run.runner import notebooks, run

NOTEBOOKS = {int(p.name[:2]): p for p in notebooks()}
PROFILES = available_profiles()  # smoke, demo, paper, and those that inherit paper


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder holding what notebooks 01-03 leave for the later ones: games (the smoke profile's), an
    extraction's meta.json and a value axis (random, 4 residual indices)."""
    folder = tmp_path_factory.mktemp("run")
    games, _ = icrl.generate_dataset(80, seed=0, size=icrl.GameSize(max_discovery=2, max_attempts=2, max_words=80))
    icrl.write_games(folder / "games.jsonl", games)
    (folder / "extraction").mkdir()
    (folder / "extraction" / "meta.json").write_text(json.dumps({"layers": [0, 1, 2, 3]}))
    vaxis.Axis(vectors=torch.randn(4, 8), layers=[0, 1, 2, 3], mean_norms=torch.ones(4), main_layer=2, model="tiny",
               hidden_size=8, n_blocks=3).save(folder / "value_axis")  # fmt: skip
    return folder


def problems(number: int, cfg, **params) -> ParameterError:
    with pytest.raises(ParameterError) as err:
        check_notebook(number, cfg, quiet=True, **params)
    return err.value


def setup_cell(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    return next(c.source for c in cells if "vaxis.resolve_config(" in c.source)


@pytest.mark.parametrize("number", sorted(NOTEBOOKS))
def test_every_notebook_checks_all_its_parameters_right_after_resolving_them(number):
    """The setup cell's statement after resolve_config is the check, before any model or axis is loaded, and it
    is given every parameter of the parameters cell that resolve_config does not take."""
    path = NOTEBOOKS[number]
    assert number in CHECKS
    body = ast.parse(setup_cell(path)).body
    texts = [ast.unparse(s) for s in body]
    at = next(i for i, t in enumerate(texts) if "resolve_config(" in t)
    call = body[at + 1].value
    assert ast.unparse(call.func) == "vaxis.check_notebook" and call.args[0].value == number
    assert not any("load_model(" in t or "Axis.load(" in t for t in texts[: at + 1])
    own = {k for k in pm.inspect_notebook(str(path)) if k not in RESOLVED and k not in resolve_overrides(path)}
    assert {k.arg for k in call.keywords} == own, path.name


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("number", sorted(NOTEBOOKS))
def test_checks_pass_on_the_shipped_profiles(number, profile, run_dir):
    """Each profile's own values, with every notebook parameter at its default (as --dry-run reads them), and the
    outputs of notebooks 01-03 present."""
    found, notes = dry_run_check(NOTEBOOKS[number], profile, {"profile": profile, "run_dir": str(run_dir)})
    assert found == []
    assert all(isinstance(n, str) for n in notes)


BAD = [  # notebook, profile, profile keys, notebook parameters, what the message must say
    (7, "paper", {"dpo_code_prompts": 20}, {}, ["dpo_code_prompts=20", "from 1 to 12", "there are 12"]),
    (7, "demo", {"dpo_sentences": 30, "dpo_eval_prompts": 20}, {}, ["dpo_sentences=30", "only 16 prompts"]),
    (7, "demo", {"dpo_control": "vegetables:carrot"}, {"roles": ["prefer", "judge"]}, ["another set", "roles="]),
    (4, "demo", {"confidence_dataset": "gsm9k"}, {}, ["confidence_dataset='gsm9k' is not known", "gsm8k"]),
    (4, "demo", {"steer_random_strengths": [-20.0]}, {"strengths": [-8.4, 8.4]}, ["include 0", "[-20.0]"]),
    (4, "demo", {"steer_problems": 40}, {}, ["steer_problems=40", "only 32 problems are read"]),
    (8, "paper", {"sft_eval_fraction": 1.5}, {}, ["sft_eval_fraction=1.5", "fraction in (0, 1)"]),
    (8, "demo", {"sft_datasets": ["gsm8k", "mmlu"], "sft_items": 5000}, {}, ["'mmlu'", "only 1319 gsm8k"]),
    (5, "paper", {"backtracking_problems": 5000}, {}, ["backtracking_problems=5000", "only 1319 GSM8K"]),
    (6, "demo", {"code_dataset": "both", "code_problems": 700}, {}, ["code_problems=700", "only 664"]),
    (6, "demo", {"code_dataset": "apps"}, {}, ["code_dataset='apps' is not known"]),
    (1, "demo", {"n_games": {"construction": 10}}, {}, ["n_games['held_out']=0"]),
    (1, "demo", {"game_size": {"max_words": 10}}, {}, ["max_words=10"]),
    (2, "smoke", {"n_shuffles": 0}, {"n_test_criteria": 50}, ["n_test_criteria=50", "n_shuffles=0"]),
    (3, "smoke", {"main_layer": 7}, {"weighting": "games"}, ["weighting='games' is not known", "main_layer=7"]),
    (9, "smoke", {"wild_prompts_file": "missing.jsonl"}, {}, ["wild_prompts_file='missing.jsonl'", "not found"]),
    (9, "smoke", {"aware_eval_prompts": 1, "wild_prompts": 2}, {"eval_awareness": True}, ["aware_eval_prompts=1"]),
    (10, "demo", {"eot_verbal_problems": 40, "eot_fraction": 0.7}, {}, ["eot_verbal_problems=40", "eot_fraction"]),
    (10, "smoke", {"eot_dpo_prompts": 10, "eot_paragraphs": 5000}, {}, ["eot_dpo_prompts=10", "only 1200"]),
    (10, "paper", {"eot_wild_prompts": 2}, {}, ["eot_wild_prompts=2"]),
]


@pytest.mark.parametrize(
    "number, profile, keys, params, says", BAD, ids=[f"{b[0]:02d}-{b[1]}-{i}" for i, b in enumerate(BAD)]
)
def test_a_planted_bad_value_fails_with_a_clear_message(number, profile, keys, params, says, run_dir):
    cfg = resolve(profile, run_dir=run_dir, **keys)
    message = str(problems(number, cfg, **params))
    for fragment in says:
        assert fragment in message, message
    assert f"notebook {number:02d} ({profile} profile)" in message and "--dry-run" in message


def test_one_error_lists_every_problem_and_is_a_value_error(run_dir):
    cfg = resolve("paper", run_dir=run_dir, dpo_code_prompts=20, dpo_eval_fraction=1.5, dpo_learning_rate=-1.0)
    err = problems(7, cfg, n_boot=0, axis_path=run_dir / "nowhere")
    assert isinstance(err, ValueError) and len(err.problems) == 5, err.problems
    assert "5 problem(s)" in str(err) and "dpo_learning_rate=-1.0" in str(err) and "n_boot=0" in str(err)


def test_outputs_of_earlier_notebooks_must_exist_unless_those_run_first(tmp_path):
    cfg = resolve("smoke", run_dir=tmp_path)
    message = str(problems(10, cfg))
    for missing in ("value_axis.json", "extraction/meta.json", "games.jsonl"):
        assert missing in message
    assert "run notebook 03 first" in message and "run notebook 01 first" in message
    assert "run notebook 01 first" in str(problems(2, cfg))
    check_notebook(10, cfg, quiet=True, planned={1, 2, 3, 4, 5, 6, 7, 8, 9})  # a dry run of the whole pipeline


def test_relative_paths_are_read_from_the_notebooks_folder(run_dir):
    cfg = resolve("smoke", run_dir=run_dir)
    check_notebook(4, cfg, quiet=True, axis_path="value_axis", cwd=run_dir)
    assert f"a relative path is read from {run_dir}" in str(problems(3, cfg, axis_path="nope", cwd=run_dir))
    assert "axis_path='nope'" in str(problems(3, cfg, axis_path="nope", cwd=run_dir))


def test_caps_are_notes_not_errors(run_dir, capsys):
    notes = check_notebook(8, resolve("paper", run_dir=run_dir))
    assert any("sft_accuracy_items=264" in n and "234 held-out arc" in n for n in notes)
    assert "note: sft_accuracy_items=264" in capsys.readouterr().out


def test_eot_wild_prompts_zero_means_every_prompt_as_in_notebook_09():
    """Notebook 10 reads the in-the-wild prompts with eot_wild_prompts, 0 meaning all (paper.toml), as notebook 09
    reads wild_prompts: the count it hands to load_prompts is None for 0."""
    cells = nbformat.read(NOTEBOOKS[10], as_version=4).cells
    source = next(c.source for c in cells if c.cell_type == "code" and "load_prompts(" in c.source)
    call = next(
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and ast.unparse(n.func).endswith("load_prompts")
    )
    count = compile(ast.Expression(call.args[1]), "<notebook 10>", "eval")
    assert eval(count, {"cfg": {"eot_wild_prompts": 0}}) is None
    assert eval(count, {"cfg": {"eot_wild_prompts": 22}}) == 22


def small_prompts_file(path, n=30, words=6):
    """``n`` prompts in 3 categories unlike the shipped ones, in the documented schema."""
    cats = ("gardening", "recipes", "travel")
    rows = [{"id": f"u{i}", "prompt": f"Question {i} about {cats[i % 3]}: " + " ".join(["why"] * words),
             "category": cats[i % 3]} for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def n_words(text: str) -> int:
    return len(text.split())


def test_evaluation_awareness_draws_from_the_shipped_prompts_when_the_users_file_is_small(tmp_path):
    path = small_prompts_file(tmp_path / "mine.jsonl")
    shipped = {p.prompt for p in read_prompts(PROMPTS_FILE)}
    train, held, note = ea.organism_prompts(str(path), n_words, 40, 48, 24, seed=0)
    assert (len(train), len(held)) == (48, 24) and not set(train) & set(held)
    assert set(train) | set(held) <= shipped
    assert "mine.jsonl has 30 of the 48 training + 24 held-out prompts" in note and "shipped prompts" in note
    # the shipped set itself (and "arena", which falls back to it) gives the same prompts with no note
    assert ea.organism_prompts("shipped", n_words, 40, 48, 24, seed=0) == (train, held, None)
    # a user file with enough short prompts is used as it is
    big = small_prompts_file(tmp_path / "big.jsonl", n=90)
    train, held, note = ea.organism_prompts(str(big), n_words, 40, 48, 24, seed=0)
    assert note is None and (len(train), len(held)) == (48, 24) and all(p.startswith("Question") for p in train + held)


def test_evaluation_awareness_scales_down_when_even_the_shipped_prompts_are_too_few(tmp_path):
    short = sum(n_words(p.prompt) <= 6 for p in read_prompts(PROMPTS_FILE))
    assert 3 <= short < 400 + 200
    train, held, note = ea.organism_prompts(str(small_prompts_file(tmp_path / "mine.jsonl")), n_words, 6, 400, 200)
    assert len(train) + len(held) <= short and len(held) >= 2 and len(train) >= 1
    assert abs(len(train) / len(held) - 2) < 0.2  # the counts shrink in proportion
    assert f"so the organism trains on {len(train)} and holds out {len(held)}" in note
    with pytest.raises(ValueError, match="raise aware_max_length"):
        ea.organism_prompts("shipped", n_words, 0, 4, 6)


def test_notebook_09_check_accepts_a_small_prompts_file_and_says_where_the_organism_draws_from(tmp_path, run_dir):
    path = small_prompts_file(tmp_path / "mine.jsonl")
    notes = check_notebook(9, resolve("demo", run_dir=run_dir, wild_prompts_file=str(path)), quiet=True)
    assert any("prompts_file has 30 prompts" in n and "draws them from the shipped prompts" in n for n in notes)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "hi"}\n{"prompt": "no id"}\n')
    assert "missing key 'id'" in str(problems(9, resolve("demo", run_dir=run_dir, wild_prompts_file=str(bad))))


def test_dry_run_of_the_paper_profile_runs_every_check(tmp_path, capsys):
    assert run("paper", run_dir=tmp_path, dry_run_only=True) == []
    out = capsys.readouterr().out
    assert all(f"[dry run] {p.stem}: ok" in out for p in NOTEBOOKS.values()), out
    with pytest.raises(SystemExit) as err:
        run("paper", only=["04"], run_dir=tmp_path, parameters={"dataset": "gsm9k"}, dry_run_only=True)
    assert "confidence_dataset='gsm9k' is not known" in str(err.value)
    assert "run notebook 03 first" in str(err.value)  # alone, notebook 04 needs the axis of an earlier run
