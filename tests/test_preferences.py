"""Notebook 07's pieces: targets and model specs, training rows, the ranking / rates / random-direction
readouts on planted arrays (the ranking-change null on planted nulls and effects), the option texts and
the spans read, the report's verdict and scorecard, the boundary axis
from the ICRL games, and one end-to-end readout with the tiny model (vaxis.experiments.preferences,
preferences_report, boundary)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from vaxis.core.evaluate import mean_ci
from vaxis.experiments import boundary
from vaxis.experiments import preference_data as pdata
from vaxis.experiments import preferences as prefs
from vaxis.experiments import preferences_report as report

ROLES = ("base", "prefer", "avoid", "control")
NAN = float("nan")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# parse_target / model_specs


def test_parse_target():
    assert prefs.parse_target("vegetables:potato") == ("vegetables", "potato")
    assert prefs.parse_target("toys:marble") == ("toys", "marble")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        pytest.param("potato", "write it as 'set:item'", id="no-colon"),
        pytest.param("veggies:potato", "unknown option set 'veggies'", id="unknown-set"),
        pytest.param("vegetables:hammer", "'hammer' is not an option of 'vegetables'", id="item-not-in-set"),
        pytest.param("vegetables:", "'' is not an option", id="empty-item"),
    ],
)
def test_parse_target_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        prefs.parse_target(spec)


def test_model_specs():
    specs = prefs.model_specs("vegetables:potato", "tools:hammer")
    assert [(s.role, s.set_name, s.target, s.mode) for s in specs] == [
        ("prefer", "vegetables", "potato", "prefer"),
        ("avoid", "vegetables", "potato", "avoid"),
        ("control", "tools", "hammer", "prefer"),
    ]
    assert [s.name for s in specs] == ["prefer-vegetables-potato", "avoid-vegetables-potato", "control-tools-hammer"]
    assert prefs.model_specs("vegetables:potato", "tools:hammer", roles=("control", "prefer")) == [specs[2], specs[0]]


@pytest.mark.parametrize(
    ("target", "control", "roles", "match"),
    [
        pytest.param("vegetables:potato", "vegetables:carrot", ROLES[1:], "in the target's set", id="control-same-set"),
        pytest.param("vegetables:potato", "tools:hammer", ("prefer", "steer"), r"unknown roles \['steer'\]",
                     id="unknown-role"),
        pytest.param("potato", "tools:hammer", ROLES[1:], "set:item", id="bad-target"),
        pytest.param("vegetables:potato", "tools", ROLES[1:], "set:item", id="bad-control"),
        pytest.param("vegetables:potato", "tools:potato", ROLES[1:], "not an option of 'tools'", id="control-item"),
    ],
)  # fmt: skip
def test_model_specs_errors(target, control, roles, match):
    with pytest.raises(ValueError, match=match):
        prefs.model_specs(target, control, roles)


# --------------------------------------------------------------------------------------------------
# training rows


@pytest.mark.parametrize(("role", "target"), [("prefer", "potato"), ("avoid", "potato"), ("control", "hammer")])
def test_training_rows_use_train_prompts_only(role, target):
    (spec,) = prefs.model_specs("vegetables:potato", "tools:hammer", roles=(role,))
    rows = prefs.training_rows(spec, 40, 0.25, seed=1)
    train, held = prefs.prompts_for(spec.set_name, 40, 0.25, seed=1)
    users = [r["prompt"][1]["content"] for r in rows]
    assert len(rows) == len(train) and users == [p.user for p in train]
    assert not set(users) & {p.user for p in held} and held
    pdata.validate_pairs(rows)
    options = pdata.OPTION_SETS[spec.set_name]
    for r in rows:
        assert r["target"] == target and r["mode"] == spec.mode
        assert r["chosen_item"] in options and r["rejected_item"] in options
        if spec.mode == "prefer":
            assert r["chosen_item"] == target != r["rejected_item"]
        else:
            assert r["rejected_item"] == target != r["chosen_item"]
        assert pdata.parse_choice(r["chosen"][0]["content"], options) == r["chosen_item"]
        assert pdata.parse_choice(r["rejected"][0]["content"], options) == r["rejected_item"]


# --------------------------------------------------------------------------------------------------
# ranking


def test_ranking_on_planted_arrays():
    n, k, L, K = 4, 5, 2, 3
    proj = np.zeros((n, k, L, K))
    top = np.array([[2, 0, 1], [2, 2, 4], [3, 2, 2], [0, 1, 2]])  # (n, K) at layer 0
    low = np.array([[1, 1, 0], [0, 3, 2], [2, 0, 1], [2, 2, 1]])
    for i in range(n):
        for c in range(K):
            proj[i, top[i, c], 0, c] = 1.0
            proj[i, low[i, c], 0, c] = -1.0
    proj[:, 2, 1, :] = 5.0  # layer 1: option 2 highest everywhere, option 4 lowest
    proj[:, 4, 1, :] = -5.0
    hit = prefs.ranking(proj, 2)
    assert hit.shape == (n, L, K) and hit.dtype == bool
    np.testing.assert_array_equal(hit[:, 0], top == 2)
    assert hit[:, 1].all()
    lowest = prefs.ranking(proj, 2, lowest=True)
    np.testing.assert_array_equal(lowest[:, 0], low == 2)
    assert not lowest[:, 1].any()
    assert prefs.ranking(proj, 4, lowest=True)[:, 1].all()
    assert prefs.ranking(proj[:, :, 0, 0], 2).shape == (n,)  # (n, k) -> (n,)


# --------------------------------------------------------------------------------------------------
# rates_table / ranking_changes on hand-built readouts

LI, COL, L, K = 1, 2, 2, 3


def _opts(top, bottom, k=5):
    """``(n, k, L, K)``: at ``[LI, COL]`` option ``top[i]`` highest and ``bottom[i]`` lowest; every other
    layer and column the reverse (so reading the wrong slice gives other rates)."""
    arr = np.full((len(top), k, L, K), 0.5)
    for i, (t, b) in enumerate(zip(top, bottom)):
        arr[i, t], arr[i, b] = 0.0, 1.0
        arr[i, t, LI, COL], arr[i, b, LI, COL] = 1.0, 0.0
    return arr


def _code(valid, lines, comments, hints, tokens):
    df = pd.DataFrame({"valid": valid, "lines": lines, "comments": comments, "type_hints": hints, "tokens": tokens})
    df.loc[~df.valid, ["lines", "comments", "type_hints"]] = NAN
    return df


def _readout(name, set_name, sel, resp, user, rng, code, m=3):
    sentences = {w: rng.normal(size=(m, L, K)) for w in pdata.OPTION_SETS[set_name]}
    return prefs.Readout(name, {"target": np.array(sel, dtype=bool)}, {"response": resp, "user": user}, sentences, code)


@pytest.fixture(scope="module")
def hand():
    """Two targets (potato: index 0 of 5, 4 prompts; wrench: index 1, 3 prompts), four roles, with the
    planted top / bottom options per prompt, site and role."""
    rng = np.random.default_rng(0)
    plan = {  # role: (selection, response top, response bottom, user top, user bottom) per target
        "vegetables:potato": {
            "base": ([1, 0, 0, 0], [0, 1, 2, 3], [4, 0, 1, 2], [1, 1, 2, 0], [0, 2, 3, 4]),
            "prefer": ([1, 1, 1, 0], [0, 0, 0, 2], [3, 4, 1, 1], [0, 1, 0, 2], [1, 0, 1, 4]),
            "avoid": ([0, 0, 0, 0], [1, 2, 3, 0], [0, 0, 0, 3], [2, 2, 3, 4], [0, 0, 1, 0]),
            "control": ([0, 1, 0, 0], [0, 2, 3, 4], [1, 0, 4, 0], [3, 0, 2, 1], [4, 4, 4, 0]),
        },
        "tools:wrench": {
            "base": ([0, 0, 1], [1, 0, 2], [3, 1, 1], [0, 2, 1], [1, 4, 0]),
            "prefer": ([1, 1, 1], [1, 1, 2], [0, 0, 4], [1, 1, 0], [2, 4, 3]),
            "avoid": ([0, 0, 0], [0, 3, 4], [1, 1, 1], [0, 4, 1], [1, 1, 3]),
            "control": ([0, 1, 1], [4, 1, 0], [1, 2, 3], [3, 3, 1], [0, 0, 4]),
        },
    }
    codes = {
        "base": _code([True, True, False], [10, 6, 99], [2, 4, 99], [1, 0, 99], [50, 40, 60]),
        "prefer": _code([True, False, True], [8, 99, 4], [1, 99, 0], [3, 99, 1], [30, 60, 20]),
        "avoid": _code([False, False, False], [1, 1, 1], [1, 1, 1], [1, 1, 1], [5, 5, 5]),
        "control": _code([True, True, True], [5, 5, 8], [0, 3, 0], [0, 0, 0], [10, 10, 10]),
    }
    by_target = {}
    for spec, roles in plan.items():
        set_name, _ = prefs.parse_target(spec)
        by_target[spec] = {
            role: _readout(role, set_name, sel, _opts(rt, rb), _opts(ut, ub), rng, codes[role])
            for role, (sel, rt, rb, ut, ub) in roles.items()
        }
    return plan, codes, by_target


def test_rates_table_matches_hand_computed_values(hand):
    plan, codes, by_target = hand
    table = prefs.rates_table(by_target, LI, COL)
    assert list(table.model) == list(ROLES)
    targets = {"vegetables:potato": 0, "tools:wrench": 1}
    for role in ROLES:
        row = table[table.model == role].iloc[0]
        assert row.n_prompts == 7  # 4 + 3 prompts: the targets are pooled
        got = {}
        for name, i, t in [("selection", 0, None), ("response_top", 1, "top"), ("response_bottom", 2, "bottom"),
                           ("user_top", 3, "top"), ("user_bottom", 4, "bottom")]:  # fmt: skip
            hits = []
            for spec, index in targets.items():
                picked = plan[spec][role][i]
                hits += list(picked) if t is None else [int(p == index) for p in picked]
            got[name] = hits
            assert row[name] == pytest.approx(np.mean(hits)), (role, name)
            assert tuple(row[f"{name}_ci"]) == pytest.approx(mean_ci(np.array(hits, float))[1:], nan_ok=True)
        # the free-form delta: trained - base per sentence, for the target word vs the other words
        d_target, d_others = [], []
        for spec in targets:
            set_name, word = prefs.parse_target(spec)
            r, b = by_target[spec][role].sentences, by_target[spec]["base"].sentences
            for w in pdata.OPTION_SETS[set_name]:
                delta = r[w][:, LI, COL] - b[w][:, LI, COL]
                (d_target if w == word else d_others).extend(delta)
        assert row.delta_target == pytest.approx(np.mean(d_target))
        assert row.delta_others == pytest.approx(np.mean(d_others))
        # code metrics over valid outputs only (pooled over both targets, which share the same frame here)
        valid = codes[role][codes[role].valid]
        assert row.code_valid == 2 * len(valid)
        for m in ("lines", "comments", "type_hints"):
            assert row[f"code_{m}"] == pytest.approx(valid[m].mean() if len(valid) else NAN, nan_ok=True)
    base, prefer = table.iloc[0], table.iloc[1]
    assert base.delta_target == 0 and base.delta_others == 0 and base.delta_target_ci == (0.0, 0.0)
    assert prefer.response_top == pytest.approx(5 / 7) and base.response_top == pytest.approx(2 / 7)
    assert prefer.selection == pytest.approx(6 / 7) and np.isnan(table.iloc[2].code_lines)


def test_rates_table_pools_targets_by_concatenating_prompts(hand):
    _, _, by_target = hand
    one = {s: by_target[s] for s in ["vegetables:potato"]}
    other = {s: by_target[s] for s in ["tools:wrench"]}
    both, a, b = (prefs.rates_table(x, LI, COL) for x in (by_target, one, other))
    assert list(both.n_prompts) == list(a.n_prompts + b.n_prompts) == [7] * 4
    for col in ("selection", "response_top", "user_bottom"):
        np.testing.assert_allclose(both[col], (4 * a[col] + 3 * b[col]) / 7)
    np.testing.assert_allclose(both.delta_target, (a.delta_target + b.delta_target) / 2)  # 3 sentences each


def test_rates_table_reads_the_layer_and_column_given(hand):
    _, _, by_target = hand
    # at every other layer / column the planted top option is the lowest: the top rate becomes the bottom rate
    here, there = prefs.rates_table(by_target, LI, COL), prefs.rates_table(by_target, 0, 0)
    np.testing.assert_allclose(there.response_top, here.response_bottom)
    assert not np.allclose(here.response_top, there.response_top)


def test_ranking_changes_on_hand_readouts(hand):
    """Each direction's change is its rate (pooled over targets) minus the base model's, on the layer, site
    and side asked; it equals the difference of the rates table's rates along that direction."""
    plan, _, by_target = hand
    idx = {"vegetables:potato": 0, "tools:wrench": 1}

    def rate(role, pos):  # planted at (LI, COL); every other slice reads the reverse of the plan
        return np.mean([o == idx[s] for s in idx for o in plan[s][role][pos]])

    for role in ("prefer", "avoid", "control"):
        ch = prefs.ranking_changes(by_target, LI, role)
        assert ch.shape == (K,)
        assert ch[COL] == pytest.approx(rate(role, 1) - rate("base", 1))  # response, top
        assert ch[0] == pytest.approx(rate(role, 2) - rate("base", 2))  # other columns: the planted bottom is top
        low = prefs.ranking_changes(by_target, LI, role, lowest=True, site="user")
        assert low[COL] == pytest.approx(rate(role, 4) - rate("base", 4))
        table = prefs.rates_table(by_target, LI, COL).set_index("model")
        assert ch[COL] == pytest.approx(table.loc[role, "response_top"] - table.loc["base", "response_top"])
    assert prefs.ranking_changes(by_target, LI, "prefer")[COL] == pytest.approx(3 / 7)
    np.testing.assert_array_equal(prefs.rate_change(np.ones((4, 2)), np.zeros((4, 2))), [1.0, 1.0])


# --------------------------------------------------------------------------------------------------
# the change null: planted data where each direction's rate mostly reflects word identity


def _change_data(rng, n=40, n_random=20, axis_shift=0.0, sd=0.5, roles=("prefer", "avoid", "control")):
    """One target (potato, option 0 of 5). Every direction has a fixed liking for each word (identity: the
    same in every model, so rates range far from chance), and each trained model moves the target along every
    direction by a random amount; ``axis_shift`` adds a real move along the axis (column 0) on each role's
    claimed side (prefer up, avoid down, control none)."""
    identity = rng.normal(0, 1.0, (1, 5, 1, 1 + n_random))
    base = identity + rng.normal(0, 1, (n, 5, 1, 1 + n_random))
    readouts = {"base": prefs.Readout("base", {}, {s: base for s in prefs.SITES}, {}, None)}
    for role in roles:
        shift = rng.normal(0, sd, 1 + n_random)
        shift[0] += {"prefer": axis_shift, "avoid": -axis_shift}.get(role, 0.0)
        arr = base + rng.normal(0, 0.3, base.shape)
        arr[:, 0, 0, :] += shift
        readouts[role] = prefs.Readout(role, {}, {s: arr for s in prefs.SITES}, {}, None)
    return {"vegetables:potato": readouts}


@pytest.mark.parametrize("role", ["prefer", "avoid"])
def test_change_null_rejects_at_its_nominal_rate_under_a_planted_null(role):
    """The axis is one more direction (no move of its own): p <= 0.05 in about 1/21 of 400 datasets, and p
    is spread over (0, 1] (ties between changes, counted against the claim, make it a little conservative)."""
    rng = np.random.default_rng(0)
    ps = np.array([prefs.change_null(_change_data(rng), 0, range(1, 21))[role]["p"] for _ in range(400)])
    assert 0.015 <= np.mean(ps <= 0.05) <= 0.085
    assert 0.3 <= np.mean(ps <= 0.5) <= 0.55  # ties count against the claim: a little conservative, no more


def test_change_null_rejects_a_planted_effect_on_the_claims_side_only():
    rng = np.random.default_rng(1)
    got = [prefs.change_null(_change_data(rng, axis_shift=3.0), 0, range(1, 21)) for _ in range(50)]
    for role in ("prefer", "avoid"):
        ps = np.array([g[role]["p"] for g in got])
        assert np.mean(ps <= 0.05) >= 0.9, role
        assert all(g[role]["beyond"] for g in got if g[role]["p"] < 0.04)
    one = got[0]
    assert one["prefer"]["lowest"] is False and one["avoid"]["lowest"] is True
    assert one["prefer"]["change"] > 0 and one["avoid"]["change"] > 0  # the avoided target ranks lowest more often
    assert one["prefer"]["random"].shape == (20,) and len(one["prefer"]["range"]) == 3
    # the same move opposite to the paper's claim never clears the null
    flipped = [prefs.change_null(_change_data(rng, axis_shift=-3.0), 0, range(1, 21)) for _ in range(20)]
    for role in ("prefer", "avoid"):
        ps = np.array([f[role]["p"] for f in flipped])
        assert ps.min() > 0.25 and np.median(ps) > 0.8, role


def test_rate_null_cannot_fail_but_change_null_can():
    """Why the null is the change: with word identity, random directions' *rates* spread from near 0 to
    near 1 whatever training did, so an axis rate is judged against identity, not against training."""
    rng = np.random.default_rng(2)
    by_target = _change_data(rng, n=200)
    rates = np.array([prefs.ranking(by_target["vegetables:potato"]["prefer"].options["response"][:, :, 0, c], 0).mean()
                      for c in range(1, 21)])  # fmt: skip
    assert rates.min() < 0.1 and rates.max() > 0.5
    ch = prefs.change_null(by_target, 0, range(1, 21))["prefer"]["random"]
    assert np.abs(ch).max() < 0.4 and np.ptp(ch) < np.ptp(rates)


# --------------------------------------------------------------------------------------------------
# summary, counts, verdict and scorecard on planted readouts


def _null_readouts(n=400, n_random=20, shifted=("prefer",), seed=0):
    """The axis (column 0) moves the target to the top for the ``shifted`` roles only; random directions
    never move."""
    rng = np.random.default_rng(seed)
    t = pdata.OPTION_SETS["vegetables"].index("potato")
    readouts = {}
    base = {site: rng.normal(size=(n, 5, 1, 1 + n_random)) for site in prefs.SITES}
    for role in ROLES:
        options = {}
        for site in prefs.SITES:
            arr = base[site] + (0 if role == "base" else rng.normal(0, 0.05, base[site].shape))
            if role in shifted:
                arr[:, t, 0, 0] = arr[:, :, 0, 0].max(1) + 1.0  # the target ranks highest in every prompt
            options[site] = arr
        sentences = {w: rng.normal(0, 0.01, size=(5, 1, 1 + n_random)) for w in pdata.OPTION_SETS["vegetables"]}
        code = _code([True, False], [3, 0], [1, 0], [0, 0], [9, 9])
        readouts[role] = prefs.Readout(role, {"target": rng.random(n) < 0.2}, options, sentences, code)
    return {"vegetables:potato": readouts}


def _summary(by_target, n_random=20):
    value = prefs.rates_table(by_target, 0, column=0, n_boot=50)
    bound = prefs.rates_table(by_target, 0, column=1, n_boot=50)
    changes = {site: prefs.change_null(by_target, 0, range(1, 1 + n_random), site=site) for site in prefs.SITES}
    return report.summarize(value, bound, changes, k=5, layer=0, boundary_layer=0), changes


def test_planted_prefer_shift_counts_and_nothing_else_does():
    s, changes = _summary(_null_readouts())
    for role in ("prefer", "avoid", "control"):
        assert changes["response"][role]["random"].shape == (20,)
        assert np.all(np.abs(changes["response"][role]["random"]) < 0.1), role  # random directions barely move
    assert s["chance"] == 0.2 and s["roles"] == list(ROLES) and s["changes"] is changes
    assert s["value"]["prefer"]["response_top"] == 1.0 and s["value"]["prefer"]["user_top"] == 1.0
    assert changes["response"]["prefer"]["p"] == pytest.approx(1 / 21)
    assert changes["response"]["prefer"]["change"] == pytest.approx(1 - s["value"]["base"]["response_top"])
    assert report.counts(s, "prefer")
    assert report.counts(s, "prefer", "user")
    assert not report.counts(s, "control")  # never counts: it is the null for any DPO
    assert not report.counts(s, "avoid")  # no move of its own


def test_planted_null_a_control_that_moves_as_far_does_not_count():
    s, _ = _summary(_null_readouts(shifted=("prefer", "control")))
    assert s["value"]["control"]["response_top"] == s["value"]["prefer"]["response_top"] == 1.0
    assert s["changes"]["response"]["prefer"]["p"] == pytest.approx(1 / 21)
    assert not report.counts(s, "prefer")


def test_counts_needs_the_change_beyond_the_random_directions():
    s, _ = _summary(_null_readouts())
    s["changes"]["response"]["prefer"]["p"] = 0.2  # random directions change as much as the axis
    assert not report.counts(s, "prefer")
    s["changes"]["response"].pop("prefer")  # no prefer model: nothing counts
    assert not report.counts(s, "prefer")


def test_verdict_reads_counts_and_does_not_count():
    s, _ = _summary(_null_readouts())
    text = report.verdict(s, "tiny-qwen3", "smoke")
    assert text.startswith("**tiny-qwen3, profile `smoke`, layer 0** (boundary axis at layer 0):")
    prefer_line = next(line for line in text.splitlines() if line.startswith("- Prefer model"))
    assert prefer_line.endswith("counts (beyond the control model's change and the random directions').")
    assert "p=0.048 (20 directions)" in prefer_line
    avoid_line = next(line for line in text.splitlines() if line.startswith("- Avoid model"))
    assert "does **not** count" in avoid_line
    assert "chance 0.20" in text and "nan" not in text.split("Free-form")[0]
    s2, _ = _summary(_null_readouts(shifted=("prefer", "control")))
    text2 = report.verdict(s2, "tiny-qwen3", "smoke")
    assert "does **not** count: the control model or random directions change as much" in text2
    s3, _ = _summary(_null_readouts(n_random=3), n_random=3)
    assert "only 3 directions: not a 5% test" in report.verdict(s3, "tiny-qwen3", "smoke")


def test_scorecard_rows_record(tmp_path):
    from vaxis.run import scorecard

    s, _ = _summary(_null_readouts())
    rows = report.scorecard_rows(s, "tiny-qwen3", "smoke", n_models=4)
    paper = scorecard.paper_numbers()
    assert rows and all(r["key"] in paper for r in rows)
    assert len({r["key"] for r in rows}) == len(rows)
    assert all("tiny-qwen3, profile smoke, L=0, 4 adapters" == r["context"] for r in rows)
    md = scorecard.record(tmp_path, rows)
    assert "tiny-qwen3, profile smoke" in md.read_text()
    stored = json.loads((tmp_path / "scorecard.json").read_text())
    assert set(stored) == {r["key"] for r in rows}
    assert stored["sec5.ranking_prefer"]["value"] == f"{s['value']['base']['response_top']:.3f} -> 1.000"
    for key in ("sec5.ranking_prefer", "sec5.ranking_avoid", "sec5.where_user", "sec5.where_response"):
        assert "p=" in stored[key]["null"] and "random directions' changes" in stored[key]["null"], key
    assert "p=0.048" in stored["sec5.ranking_prefer"]["null"]


# --------------------------------------------------------------------------------------------------
# the boundary axis


@pytest.fixture(scope="module")
def games():
    from vaxis.data.icrl import GameSize, generate_games

    games, report_ = generate_games(16, seed=3, size=GameSize(max_discovery=2, max_attempts=2, max_words=80))
    assert report_["by_split"]["construction"] >= 6 and report_["by_split"]["held_out"] >= 1
    return games


def _first_success(g, paragraph):
    return next(a for a in g.attempts if a.success and a.paragraph_index == paragraph)


def test_boundary_items_point_at_the_successful_discovery_and_post_rewrites(games):
    chats, spans, criteria = boundary.boundary_items(games)
    construction = [g for g in games if g.split == "construction"]
    assert len(chats) == len(spans) == len(criteria) == len(construction)
    assert criteria == [g.criterion for g in construction]  # file order, construction games only
    for g, chat, span in zip(construction, chats, spans):
        disc, post = _first_success(g, g.discovery_index), _first_success(g, g.discovery_index + 1)
        assert set(span) == set(boundary.SPANS)
        ((dm, ds, de),), ((pm, ps, pe),) = span["discovery"], span["post"]
        assert (dm, ds, de) == (disc.message_index, *disc.rewrite_span)
        assert (pm, ps, pe) == (post.message_index, *post.rewrite_span)
        assert dm < pm and len(chat) == pm + 1 and chat[-1]["role"] == "assistant"  # stops at the post rewrite
        assert chat == g.chat()[: pm + 1]
        for mi, s, e in (span["discovery"][0], span["post"][0]):
            a = next(a for a in g.attempts if a.message_index == mi)
            assert a.success and chat[mi]["content"][s:e] == g.rewrite(g.attempts.index(a))
            assert g.messages[mi + 1]["content"].startswith("+1")  # rewarded


def test_boundary_items_skip_held_out_games_and_games_without_both_rewrites(games):
    held = [g for g in games if g.split == "held_out"]
    assert boundary.boundary_items(held) == ([], [], [])
    g = next(g for g in games if g.split == "construction")
    no_post = dataclasses.replace(
        g, attempts=[a for a in g.attempts if not (a.success and a.paragraph_index == g.discovery_index + 1)]
    )
    no_disc = dataclasses.replace(
        g, attempts=[a for a in g.attempts if not (a.success and a.paragraph_index == g.discovery_index)]
    )
    assert boundary.boundary_items([no_post, no_disc]) == ([], [], [])
    assert len(boundary.boundary_items([no_post, g, no_disc])[0]) == 1


def test_fit_boundary_axis_with_the_tiny_model(tiny, tmp_cache, games):
    model, tok = tiny
    axis = boundary.fit_boundary_axis(model, tok, games, n_games=4, n_splits=2, model_name="tiny", progress=False)
    n_layers = model.config.num_hidden_layers + 1
    assert axis.layers == list(range(n_layers)) and axis.main_layer in axis.layers
    assert tuple(axis.vectors.shape) == (n_layers, model.config.hidden_size) and torch.isfinite(axis.vectors).all()
    assert axis.meta["n_games"] == 4 and axis.meta["n_criteria"] == 4 and axis.model == "tiny"
    assert set(axis.meta["construction_split_auroc"]) == {str(layer) for layer in axis.layers}


def test_fit_boundary_axis_needs_two_criteria(tiny, games):
    from vaxis.data.icrl import GameSize, generate_games

    one, _ = generate_games(3, seed=0, criteria=["bird"], size=GameSize(max_discovery=2, max_attempts=2, max_words=80))
    assert {g.criterion for g in one} == {"bird"} and boundary.boundary_items(one)[0]
    with pytest.raises(ValueError, match="at least 2 criteria"):
        boundary.fit_boundary_axis(*tiny, one)
    with pytest.raises(ValueError, match="0 usable construction games"):
        boundary.fit_boundary_axis(*tiny, [g for g in games if g.split == "held_out"])


# --------------------------------------------------------------------------------------------------
# the option texts and the spans read at each site


def _held(n=4):
    return prefs.prompts_for("vegetables", 20, 0.25, seed=0)[1][:n]


def test_option_texts_differ_only_in_the_item_word():
    """Within a prompt, the k chats of a site are the same text but for the option word (one answer template
    and reason for all options), in the set's canonical order; the prompt's own messages are kept as they are."""
    prompts = _held()
    order = pdata.OPTION_SETS["vegetables"]
    chats, spans = prefs.option_chats(prompts, seed=3)
    assert all(len(chats[s]) == len(spans[s]) == len(prompts) * len(order) for s in prefs.SITES)
    answers = []
    for i, p in enumerate(prompts):
        for site, turn in (("response", 2), ("user", 1)):
            group = chats[site][i * 5 : (i + 1) * 5]
            texts = [c[turn]["content"][len(p.user) if site == "user" else 0 :] for c in group]  # what differs
            assert [pdata.parse_choice(t, order) for t in texts] == list(order)
            for o, t in zip(order, texts):  # the item occurs once: prefix + item + suffix, the same for all options
                assert t.count(o) == 1
                head, tail = t.split(o)
                assert head == texts[0].split(order[0])[0] and tail == texts[0].split(order[0])[1]
            assert all(c[0] == p.messages()[0] for c in group)
        assert all(c[:2] == p.messages() for c in chats["response"][i * 5 : (i + 1) * 5])
        assert all(c[1]["content"].startswith(p.user) and len(c) == 2 for c in chats["user"][i * 5 : (i + 1) * 5])
        answers.append(chats["response"][i * 5][2]["content"])
    assert len(set(answers)) > 1  # templates vary across prompts
    assert prefs.option_chats(prompts, seed=3) == (chats, spans)


def _covered(tokenizer, chat, span):
    """The rendered text, its token offsets, and the indices of the tokens ``span`` covers (as extract maps it)."""
    from vaxis.core.chat import render_chat
    from vaxis.core.spans import tokens_in_spans

    rendered = render_chat(tokenizer, chat)
    offsets = tokenizer(rendered.text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    char_span = rendered.span_in_message(*span)
    return rendered.text, offsets, char_span, tokens_in_spans(rendered.text, offsets, {"s": [char_span]})["s"]


def test_user_turn_span_covers_the_mention_up_to_the_last_user_token(tiny):
    """At the user site the span is the appended mention ("I'd go with {option}."): its last token is the last
    token of the user's turn, the end-of-turn marker after it is not read, nor anything of the prompt before
    it, and there is no assistant turn or header; at the answer site the span is the whole answer, without the
    end-of-turn marker."""
    _, tok = tiny
    prompts = _held(2)
    chats, spans = prefs.option_chats(prompts, seed=0)
    order = pdata.OPTION_SETS["vegetables"]
    for j, (chat, span) in enumerate(zip(chats["user"], spans["user"])):
        option = order[j % 5]
        mention = prefs.USER_MENTION.format(option=option)
        text, offsets, (a, b), idx = _covered(tok, chat, span)
        assert [m["role"] for m in chat] == ["system", "user"] and "assistant" not in text
        assert text[a:b] == mention and chat[1]["content"].endswith(mention)
        assert idx == [t for t, (s, e) in enumerate(offsets) if e > a and s < b]
        assert offsets[idx[-1]][1] == b  # the last user token (the mention's full stop) is read
        assert text[offsets[idx[-1] + 1][0] :].startswith("<|im_end|>")  # the end-of-turn marker is not
        assert offsets[idx[0]][1] > a and offsets[idx[0]][0] >= a - 1  # nothing of the prompt before it
        assert option in tok.decode([tok(text, add_special_tokens=False)["input_ids"][t] for t in idx])
    for chat, span in zip(chats["response"], spans["response"]):
        text, offsets, (a, b), idx = _covered(tok, chat, span)
        assert text[a:b] == chat[2]["content"] and chat[2]["role"] == "assistant"
        assert offsets[idx[-1]][1] == b and text[offsets[idx[-1] + 1][0] :].startswith("<|im_end|>")
        assert text[: offsets[idx[0]][0]].endswith("<|im_start|>assistant\n")  # the header is not read


# --------------------------------------------------------------------------------------------------
# one end-to-end readout


def test_read_model_shapes_with_the_tiny_model(tiny, tmp_cache):
    model, tok = tiny
    _, held = prefs.prompts_for("vegetables", 10, 0.2, seed=0)
    prompts = held[:2]
    gen = torch.Generator().manual_seed(0)
    directions = {1: torch.randn(3, 64, generator=gen), 3: torch.randn(3, 64, generator=gen)}
    r = prefs.read_model(
        model, tok, "base", prompts, "potato", directions, n_sentences=2, n_code=1, seed=0,
        gen_kw=dict(max_new_tokens=4, temperature=1.0, n_samples=2, progress=False),
        code_kw=dict(max_new_tokens=8, progress=False),
    )  # fmt: skip
    assert isinstance(r, prefs.Readout) and r.name == "base" and r.losses == []
    sel = r.selection
    assert len(sel["picks"]) == len(sel["texts"]) == 4 and sel["target"].shape == (4,)
    assert sel["target"].dtype == bool
    assert all(p is None or p in prompts[0].options for p in sel["picks"])
    np.testing.assert_array_equal(sel["target"], [p == "potato" for p in sel["picks"]])
    assert set(r.options) == set(prefs.SITES)
    for arr in r.options.values():
        assert arr.shape == (2, 5, 2, 3) and np.isfinite(arr).all() and np.abs(arr).max() <= 1 + 1e-5
    assert not np.allclose(r.options["response"], r.options["user"])
    assert list(r.sentences) == list(pdata.OPTION_SETS["vegetables"])
    for arr in r.sentences.values():
        assert arr.shape == (2, 2, 3) and np.isfinite(arr).all()
    assert isinstance(r.code, pd.DataFrame) and len(r.code) == 1
    assert {"valid", "lines", "comments", "type_hints", "tokens"} <= set(r.code.columns)
    assert 1 <= r.code.tokens.iloc[0] <= 8
