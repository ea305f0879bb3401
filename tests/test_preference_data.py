"""Preference data for the DPO experiments (METHOD.md sections 5 and 8): counts, determinism, neutrality
of prompts and templates, pair correctness, the split, answer parsing, the schema check and the file."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from vaxis.experiments import preference_data as pd
from vaxis.experiments.preference_data import (
    ALL_ITEMS,
    OPTION_SETS,
    Prompt,
    answer,
    choice_prompts,
    code_prompts,
    dpo_pairs,
    parse_choice,
    plural,
    split_prompts,
    validate_pairs,
    word_sentences,
    write_pairs,
)

TEMPLATE_GROUPS = ("SYSTEM_PROMPTS", "USER_TEMPLATES", "ANSWER_TEMPLATES", "REASONS")
TEMPLATE_GROUPS += ("SENTENCE_TEMPLATES", "CODE_TEMPLATES")


def _text(p: Prompt) -> tuple[str, str]:
    return p.system, p.user


def test_option_sets_counts_and_items():
    assert len(OPTION_SETS) >= 12
    assert all(len(items) == 5 for items in OPTION_SETS.values())
    assert len(ALL_ITEMS) == len(set(ALL_ITEMS)) == 5 * len(OPTION_SETS)
    for item in ALL_ITEMS:
        assert re.fullmatch(r"[a-z]+", item), item
    assert {"potato", "hammer", "marble", "candle", "accordion"} <= set(ALL_ITEMS)  # the authors' defaults


def test_items_are_mutually_distinguishable():
    for a in ALL_ITEMS:
        assert parse_choice(f"I'd pick {a}.", [a]) == a
        assert parse_choice(f"Two {plural(a).upper()} please", [a]) == a
        others = [b for b in ALL_ITEMS if b != a]
        assert parse_choice(f"{a} and {plural(a)}", others) is None, a


def test_template_counts():
    assert len(pd.SYSTEM_PROMPTS) >= 14 and len(pd.USER_TEMPLATES) >= 12 and len(pd.FORMATS) == 4
    assert len(pd.ANSWER_TEMPLATES) >= 12 and len(pd.REASONS) >= 15
    assert len(pd.SENTENCE_TEMPLATES) >= 20 and len(pd.CODE_TEMPLATES) >= 10
    for group in TEMPLATE_GROUPS:
        assert len(set(getattr(pd, group))) == len(getattr(pd, group)), group


@pytest.mark.parametrize("set_name", sorted(OPTION_SETS))
def test_160_distinct_prompts_per_set_listing_all_options(set_name):
    prompts = choice_prompts(set_name, 160, seed=0)
    assert len({_text(p) for p in prompts}) == len({p.user for p in prompts}) == 160
    assert [p.id for p in prompts] == [f"{set_name}:{i:04d}" for i in range(160)]
    items = OPTION_SETS[set_name]
    outside = [x for x in ALL_ITEMS if x not in items]
    for p in prompts:
        assert p.set_name == set_name and sorted(p.options) == sorted(items)
        assert parse_choice(p.system + "\n" + p.user, outside) is None  # nothing from another set
        positions = [p.user.index(o) for o in p.options]
        assert positions == sorted(positions), "options are shown in the order stored"
        for o in items:
            assert len(re.findall(rf"\b{o}\b", p.user)) == 1, (p.id, o)
    assert len(Counter(p.system for p in prompts)) >= 12  # variety across systems, templates, formats
    assert len({p.user.split("\n")[0] for p in prompts}) >= 12


def test_prompts_deterministic_prefix_stable_and_seed_dependent():
    a, b = choice_prompts("fruits", 40, seed=3), choice_prompts("fruits", 40, seed=3)
    assert a == b
    assert choice_prompts("fruits", 10, seed=3) == a[:10]
    assert [_text(p) for p in choice_prompts("fruits", 40, seed=4)] != [_text(p) for p in a]
    assert choice_prompts("fruits", 0) == []
    with pytest.raises(ValueError, match="unknown option set"):
        choice_prompts("planets", 5)
    with pytest.raises(ValueError, match="ask for 0 to"):
        choice_prompts("fruits", 10**6)


def test_list_formats():
    fmts = pd.format_options(("kite", "apple"), "numbered"), pd.format_options(("kite", "apple"), "bulleted")
    assert fmts == ("1. kite\n2. apple", "• kite\n• apple")
    assert pd.format_options(("kite", "apple"), "comma") == "kite, apple"
    assert pd.format_options(("kite", "apple"), "dash") == "- kite\n- apple"
    with pytest.raises(ValueError, match="unknown list format"):
        pd.format_options(("kite",), "table")
    users = [p.user for p in choice_prompts("toys", 200, seed=0)]
    assert any("\n1. " in u for u in users) and any("\n• " in u for u in users)
    assert any("\n- " in u for u in users) and any(re.search(r"\w, \w", u) for u in users)


def test_no_template_names_an_item():
    for group in TEMPLATE_GROUPS:
        for text in getattr(pd, group):
            assert parse_choice(text, ALL_ITEMS) is None, (group, text)


def test_prompt_text_does_not_depend_on_target():
    prompts = choice_prompts("vegetables", 30, seed=1)
    rows_a, rows_b = dpo_pairs(prompts, "potato", seed=0), dpo_pairs(prompts, "onion", mode="avoid", seed=0)
    assert [r["prompt"] for r in rows_a] == [r["prompt"] for r in rows_b] == [p.messages() for p in prompts]
    assert [r["id"] for r in rows_a] == [p.id for p in prompts]


@pytest.mark.parametrize("mode", ["prefer", "avoid"])
def test_pairs_items_and_minimal_difference(mode):
    prompts = choice_prompts("tools", 60, seed=2)
    rows = dpo_pairs(prompts, "hammer", mode=mode, seed=5)
    assert len(rows) == 60
    validate_pairs(rows)
    others = Counter()
    for p, r in zip(prompts, rows):
        assert set(r) == set(pd.SCHEMA) and r["target"] == "hammer" and r["mode"] == mode
        target_side, other_side = ("chosen", "rejected") if mode == "prefer" else ("rejected", "chosen")
        assert r[f"{target_side}_item"] == "hammer"
        assert r[f"{other_side}_item"] in p.options and r[f"{other_side}_item"] != "hammer"
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert [m["role"] for m in r["chosen"] + r["rejected"]] == ["assistant", "assistant"]
        assert parse_choice(chosen, p.options) == r["chosen_item"]
        assert parse_choice(rejected, p.options) == r["rejected_item"]
        assert chosen.replace(r["chosen_item"], "X") == rejected.replace(r["rejected_item"], "X")
        # exactly: one shared prefix and suffix around the item word (same template, same reason)
        head, tail = chosen.split(r["chosen_item"])
        assert rejected == head + r["rejected_item"] + tail and tail.endswith(tuple(pd.REASONS))
        others[r[f"{other_side}_item"]] += 1
    assert len(others) == 4  # the other item is drawn among all the other options
    assert dpo_pairs(prompts, "hammer", mode=mode, seed=5) == rows
    assert dpo_pairs(prompts, "hammer", mode=mode, seed=6) != rows


def test_answers():
    text = answer("grapefruit", 0)
    assert parse_choice(text, OPTION_SETS["fruits"]) == "grapefruit"
    assert answer("grapefruit", 0) == text and len({answer("mango", s) for s in range(40)}) > 10
    assert any(text.endswith(reason) for reason in pd.REASONS)
    assert answer("kite", np.random.default_rng(1)) == answer("kite", np.random.default_rng(1))


def test_parse_choice_cases():
    opts = ("apple", "mango", "cherry", "potato", "paintbrush")
    assert parse_choice("I'd pick apples every time.", opts) == "apple"
    assert parse_choice("MANGO, definitely.", opts) == "mango"
    assert parse_choice("Cherries are lovely.", opts) == "cherry"
    assert parse_choice("potatoes and paintbrushes", opts) == "potato"
    assert parse_choice("I love pineapple.", opts) is None
    assert parse_choice("snapple mangosteen", opts) is None
    assert parse_choice("Mango first, then apple.", opts) == "mango"
    assert parse_choice("Between apple and mango: mango.", opts) == "apple"  # first named wins
    assert parse_choice("None of them.", opts) is None and parse_choice("", opts) is None
    assert parse_choice("a sunflower", ("sunflower", "flower")) == "sunflower"


def test_split_no_shared_text_and_errors():
    prompts = choice_prompts("drinks", 50, seed=0)
    train, ev = split_prompts(prompts, 0.2, seed=0)
    assert len(ev) == 10 and len(train) == 40
    assert not {p.user for p in train} & {p.user for p in ev}
    assert sorted(p.id for p in train + ev) == sorted(p.id for p in prompts)
    assert split_prompts(prompts, 0.2, seed=0) == (train, ev)
    assert split_prompts(prompts, 0.2, seed=1)[1] != ev
    dup = [*prompts[:4], Prompt("x:0", "drinks", "other system", prompts[0].user, prompts[0].options)]
    tr, ev2 = split_prompts(dup, 0.5, seed=0)
    assert not {p.user for p in tr} & {p.user for p in ev2}
    with pytest.raises(ValueError, match="eval side would be empty"):
        split_prompts(prompts[:3], 0.1)
    with pytest.raises(ValueError, match="train side would be empty"):
        split_prompts(prompts[:3], 0.9)
    with pytest.raises(ValueError, match="strictly between"):
        split_prompts(prompts, 1.0)


def test_pair_input_errors():
    prompts = choice_prompts("fruits", 5)
    with pytest.raises(ValueError, match="not an option.*OPTION_SETS"):
        dpo_pairs(prompts, "hammer")
    with pytest.raises(ValueError, match="fewer than 2"):
        dpo_pairs([Prompt("one:0", "one", "s", "Which?\n\n1. kite", ("kite",))], "kite")
    with pytest.raises(ValueError, match="unknown mode"):
        dpo_pairs(prompts, "apple", mode="ignore")
    with pytest.raises(ValueError, match="no prompts"):
        dpo_pairs([], "apple")


def test_word_sentences():
    for word in ALL_ITEMS:
        sentences = word_sentences(word)
        assert len(sentences) == len(set(sentences)) == 20
        others = [x for x in ALL_ITEMS if x != word]
        for s in sentences:
            assert len(re.findall(rf"\b{word}\b", s)) == 1, s
            assert parse_choice(s, others) is None, s
            assert not re.search(r"\ba [aeiou]", s), s
    assert word_sentences("kite", 20, seed=0) == word_sentences("kite", 20, seed=0)
    assert word_sentences("kite", 20, seed=0) != word_sentences("kite", 20, seed=1)
    same = [s.replace("kite", "W") for s in word_sentences("kite")]
    assert same == [s.replace("tent", "W") for s in word_sentences("tent")]  # paired templates across words
    with pytest.raises(ValueError):
        word_sentences("kite", n=len(pd.SENTENCE_TEMPLATES) + 1)


def test_code_prompts():
    prompts = code_prompts("potato", n=len(pd.CODE_TEMPLATES), seed=0)
    assert len(set(prompts)) == len(pd.CODE_TEMPLATES) >= 10
    assert all("Python" in p and re.search(r"potato|Potato", p) for p in prompts)
    assert any("potatoes" in p for p in prompts) and any("class called Potato" in p for p in prompts)
    assert code_prompts("potato", 5, seed=0) == prompts[:5] and code_prompts("potato", 5, seed=1) != prompts[:5]
    assert "make_paint_brush" in " ".join(code_prompts("paint brush", 12))
    for p in code_prompts("mango", 12):
        assert parse_choice(p, [x for x in ALL_ITEMS if x != "mango"]) is None


def _rows():
    return dpo_pairs(choice_prompts("toys", 6, seed=0), "marble", mode="prefer", seed=0)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda r: r.pop("rejected_item"), "missing keys"),
        (lambda r: r.update(extra=1), "unexpected keys"),
        (lambda r: r.update(target="hammer", chosen_item="hammer"), "not among the options"),
        (lambda r: r.update(mode="avoid"), "mode 'avoid' but target"),
        (lambda r: r.update(rejected_item=r["chosen_item"]), "both"),
        (lambda r: r["prompt"].pop(0), "prompt is not"),
        (lambda r: r["chosen"][0].update(role="user"), "chosen is not"),
        (lambda r: r["chosen"][0].update(content=r["chosen"][0]["content"] + " Truly."), "more than the item"),
        (
            lambda r: r["rejected"][0].update(content=r["rejected"][0]["content"].replace(". ", "! ", 1)),
            "more than the item",
        ),
        (lambda r: r.update(mode="like"), "mode 'like'"),
    ],
)
def test_validate_pairs_catches_bad_rows(corrupt, message):
    rows = _rows()
    validate_pairs(rows)
    corrupt(rows[3])
    with pytest.raises(ValueError, match=rf"row 3 \(id 'toys:0003'\).*{re.escape(message)}"):
        validate_pairs(rows)


def test_write_pairs_round_trip(tmp_path):
    rows = _rows()
    path = write_pairs(tmp_path / "sub" / "pairs.jsonl", rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows
    assert list(json.loads(lines[0])) == list(rows[0])  # key order kept
    bad = _rows()
    del bad[0]["id"]
    with pytest.raises(ValueError, match="row 0"):
        write_pairs(tmp_path / "bad.jsonl", bad)
    assert not (tmp_path / "bad.jsonl").exists()
