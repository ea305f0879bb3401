"""The paper_ci profile is the paper profile with sizes shrunk by one stated rule, and nothing else."""

from __future__ import annotations

import pytest

from vaxis.run import config
from vaxis.run.config import ci_settings, load_profile


def test_paper_ci_differs_from_paper_exactly_by_the_rule():
    paper, ci = load_profile("paper"), load_profile("paper_ci")
    expected = {**ci_settings(paper), "description": ci["description"]}
    diff = {k: (ci.get(k), expected.get(k)) for k in set(ci) | set(expected) if ci.get(k) != expected.get(k)}
    assert not diff, (
        "paper_ci.toml drifted from paper.toml: rewrite these keys of paper_ci.toml as the rule gives them "
        f"(key: (now, by the rule)): {diff}"
    )
    changed = {k for k in ci if ci[k] != paper.get(k)} - {"description"}
    named = {*config.CI_MODEL, *config.CI_COUNTS, *config.CI_TOKENS, *config.CI_DIRECTIONS, *config.CI_EPOCHS,
             *config.CI_TARGET_LISTS}  # fmt: skip
    assert changed <= named, changed - named


def test_paper_only_values_survive_the_rule():
    ci = load_profile("paper_ci")
    assert ci["chat_template_kwargs"] == {"enable_thinking": False}
    assert ci["wild_prompts_file"] == "arena" and ci["wild_adapters"] == ["all"] and ci["code_dataset"] == "both"
    assert ci["wild_prompts"] == 0 and ci["sft_items"] == 0 and ci["eot_wild_prompts"] == 0
    assert isinstance(ci["n_games"], dict) and ci["keep_construction_activations"] is False
    assert len(ci["dpo_targets"]) == 2 and ci["dpo_targets"][0] == load_profile("paper")["dpo_targets"][0]


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0), (1, 2), (20, 2), (21, 3), (6000, 600), ({"a": 300, "b": 0}, {"a": 30, "b": 0})]
)
def test_shrinking_rule(value, expected):
    paper = {"confidence_problems": value, "n_shuffles": 50, "dpo_epochs": 6.0, "dpo_targets": list(range(25)),
             "slope_layers": [20, 22], "model": "qwen3-8b", "backtracking_max_new_tokens": 6000}  # fmt: skip
    out = ci_settings(paper)
    assert out["confidence_problems"] == expected
    assert out["n_shuffles"] == 10 and out["dpo_epochs"] == 1.0 and out["dpo_targets"] == [0, 20]
    assert out["backtracking_max_new_tokens"] == 300
    assert out["slope_layers"] == [20, 22] and out["model"] == config.CI_MODEL["model"]
