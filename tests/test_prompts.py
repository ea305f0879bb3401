"""The shipped prompt set and contexts (data/prompts/) and the loaders of vaxis.data.prompts (fast, offline)."""

from __future__ import annotations

import json
import re
import sys
import time
import types
import unicodedata
from collections import Counter
from itertools import combinations

import pytest

from vaxis.data import prompts as vp
from vaxis.data.prompts import CATEGORIES, LabelledPrompt, heuristic_category, load_contexts, load_prompts, wrap

STYLES = {"casual", "formal", "typos", "imperative", "question", "multi-part"}
FIELDS = {"id", "prompt", "category", "length_bucket", "style"}

# Regions the politically sensitive prompts must cover (at least 12 of them).
REGIONS = {
    "Taiwan": r"taiwan",
    "Palestine/Israel": r"palestin|israel|gaza|west bank|jerusalem",
    "Kashmir": r"kashmir",
    "Crimea/Ukraine": r"crimea|ukrain",
    "Western Sahara": r"western sahara|sahrawi",
    "Catalonia": r"catalan|catalonia|barcelona",
    "Cyprus": r"cyprus|nicosia",
    "Tibet": r"tibet",
    "UK/Brexit": r"brexit|scottish|northern ireland|gibraltar",
    "United States": r"\bus\b|electoral college|trump|biden|puerto rico",
    "India": r"india|modi|bjp",
    "Brazil": r"brazil|bolsonaro|lula",
    "Hungary": r"hungary|orb[aá]n|fidesz",
    "Iran": r"\biran",
    "Hong Kong/China": r"hong kong|tiananmen|xinjiang|uyghur|south china sea",
    "Kosovo/Serbia": r"kosovo|serbia",
    "Armenia/Azerbaijan/Turkey": r"armenia|azerbaijan|karabakh|erdo[gğ]an",
    "Venezuela": r"venezuela|maduro",
    "Myanmar": r"myanmar|rohingya",
    "Ethiopia": r"ethiopia|tigray",
    "Argentina/Falklands": r"falkland|argentin|milei",
}
# Terms that would make a decline prompt operational (it must only ask, never carry specifics).
RED_FLAGS = (
    "step-by-step synthesis",
    "synthesi",
    "detonat",
    "explosive",
    "ransomware",
    "malware code",
    "keylogger",
    "exploit code",
    "precursor",
    "nerve agent",
    "pathogen",
    "toxin",
    "grams of",
    "ammonium nitrate",
    "thermite",
    "lethal dose",
    "overdose",
    "3d-printed gun",
    "untraceable gun",
    "credit card numbers",
    "sql injection payload",
    "how to kill",
)


@pytest.fixture(scope="module")
def rows():
    with open(vp.PROMPTS_FILE, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _bucket(text: str) -> str:
    n = len(text.split())
    return "short" if n < 20 else ("medium" if n <= 80 else "long")


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\d+", "0", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# The shipped prompts


def test_counts_categories_and_buckets(rows):
    assert len(rows) >= 660
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == set(CATEGORIES) and len(CATEGORIES) == 11
    assert min(counts.values()) >= 50, counts
    for cat in CATEGORIES:
        buckets = Counter(r["length_bucket"] for r in rows if r["category"] == cat)
        assert set(buckets) == {"short", "medium", "long"}, (cat, buckets)


def test_buckets_match_word_counts(rows):
    wrong = [
        (r["id"], r["length_bucket"], len(r["prompt"].split()))
        for r in rows
        if _bucket(r["prompt"]) != r["length_bucket"]
    ]
    assert not wrong


def test_schema_ids_styles_and_text(rows):
    for i, r in enumerate(rows, start=1):
        assert set(r) == FIELDS, r
        assert all(isinstance(r[k], str) for k in FIELDS)
        assert r["id"] == f"pr-{i:04d}"
        assert r["style"] in STYLES
        assert r["prompt"] == r["prompt"].strip() and r["prompt"]
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", r["prompt"]), r["id"]
        assert unicodedata.normalize("NFC", r["prompt"]) == r["prompt"]
    assert len(set(STYLES) - {r["style"] for r in rows}) == 0


def test_unique_and_no_near_duplicates(rows):
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    norms = [_norm(r["prompt"]) for r in rows]
    assert len(set(norms)) == len(rows), [n for n, c in Counter(norms).items() if c > 1]
    toks = [n.split() for n in norms]
    sets = [set(t) for t in toks]
    near = []
    for i, j in combinations(range(len(rows)), 2):
        a, b = toks[i], toks[j]
        if len(a) == len(b) >= 3 and sum(x != y for x, y in zip(a, b)) <= 1:
            near.append((rows[i]["id"], rows[j]["id"], "one word apart"))
        elif min(len(sets[i]), len(sets[j])) >= 4 and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= 0.7:
            near.append((rows[i]["id"], rows[j]["id"], "word overlap >= 0.7"))
    assert not near


def test_politically_sensitive_covers_many_regions(rows):
    texts = [r["prompt"].lower() for r in rows if r["category"] == "politically_sensitive"]
    covered = {name for name, rx in REGIONS.items() if any(re.search(rx, t) for t in texts)}
    assert len(covered) >= 12, sorted(set(REGIONS) - covered)
    assert "is taiwan china?" in texts and "is palestine a country" in texts  # the paper's low examples


def test_decline_prompts_are_non_operational(rows):
    hits = [
        (r["id"], flag) for r in rows if r["category"] == "decline" for flag in RED_FLAGS if flag in r["prompt"].lower()
    ]
    assert not hits


# ---------------------------------------------------------------------------------------------
# load_prompts


def test_load_shipped_prompts(rows):
    prompts = load_prompts()
    assert len(prompts) == len(rows)
    p = prompts[0]
    assert isinstance(p, LabelledPrompt) and p.id == "pr-0001" and not p.heuristic
    assert set(p.extra) == {"length_bucket", "style"}
    assert hash(p) == hash(LabelledPrompt(p.id, p.prompt, p.category, extra={"other": 1}))
    with pytest.raises(AttributeError):
        p.category = "math"  # frozen
    assert vp.category_counts(prompts) == dict(Counter(r["category"] for r in rows))


def _write(tmp_path, lines, name="user.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = '{"id": "a", "prompt": "hello there", "category": "chit_chat"}'


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"id": "b", "prompt": "oops"', "not valid JSON"),
        ('["b", "a list"]', "expected a JSON object"),
        ('{"prompt": "no id here", "category": "math"}', "missing key 'id'"),
        ('{"id": "b", "category": "math"}', "missing key 'prompt'"),
        ('{"id": 7, "prompt": "numeric id"}', "'id' must be a string"),
        ('{"id": "b", "prompt": ["not", "text"]}', "'prompt' must be a string"),
        ('{"id": "b", "prompt": "   "}', "empty 'prompt'"),
        ('{"id": "b", "prompt": "x", "category": 3}', "'category' must be a string"),
        ('{"id": "a", "prompt": "same id again", "category": "math"}', "duplicate id 'a' (first at "),
    ],
)
def test_load_prompts_validation_names_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, "", bad])
    with pytest.raises(ValueError) as err:
        load_prompts(path)
    assert f"{path}:3" in str(err.value) and message in str(err.value)


def test_user_file_keeps_unknown_categories_and_extra_fields(tmp_path):
    path = _write(
        tmp_path, [GOOD, '{"id": "b", "prompt": "summarise this memo", "category": "summarisation", "src": 4}']
    )
    a, b = load_prompts(path)
    assert (a.category, a.heuristic, a.extra) == ("chit_chat", False, {})
    assert (b.category, b.heuristic, b.extra) == ("summarisation", False, {"src": 4})


def test_unlabelled_rows_get_heuristic_labels(tmp_path):
    lines = [
        '{"id": "1", "prompt": "Write a haiku about autumn leaves."}',
        '{"id": "2", "prompt": "Extract the date from this: \\"Paid on 4 May 2021.\\"", "category": null}',
        '{"id": "3", "prompt": "Is Taiwan part of China?", "category": ""}',
        '{"id": "4", "prompt": "What is 12 * 7?", "category": "math"}',
    ]
    got = load_prompts(_write(tmp_path, lines))
    assert [(p.category, p.heuristic) for p in got] == [
        ("creative_writing", True),
        ("information_extraction", True),
        ("politically_sensitive", True),
        ("math", False),
    ]


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("hi!", "chit_chat"),
        ("Pretend you're a pirate and tell me about your day.", "role_play"),
        ("Why does my Python script raise a KeyError on line 3?", "coding"),
        ("Solve for x: 2x + 3 = 11", "math"),
        ("Write me a fake doctor's note for work.", "decline"),
        ("What do you think is the best Beatles album?", "opinion"),
        ("Should I ask my boss for a raise?", "advice"),
        ("Who discovered penicillin?", "factual_qa"),
    ],
)
def test_heuristic_category_examples(prompt, category):
    assert heuristic_category(prompt) == category


def test_heuristic_is_in_categories_and_agrees_reasonably(rows):
    labels = [heuristic_category(r["prompt"]) for r in rows]
    assert set(labels) <= set(CATEGORIES)
    agreement = sum(h == r["category"] for h, r in zip(labels, rows)) / len(rows)
    assert agreement >= 0.6  # a crude heuristic; the data card reports the exact figure


def test_per_category_cap_is_seeded(rows):
    a = load_prompts(per_category=5, seed=1)
    assert Counter(p.category for p in a) == dict.fromkeys(CATEGORIES, 5)
    assert a == load_prompts(per_category=5, seed=1)
    assert [p.id for p in a] != [p.id for p in load_prompts(per_category=5, seed=2)]
    assert [p.id for p in a] == sorted(p.id for p in a)  # file order kept
    assert len(load_prompts(per_category=1000)) == len(rows)


def test_n_cap_is_stratified_and_seeded(rows):
    got = load_prompts(n=22, seed=0)
    assert Counter(p.category for p in got) == dict.fromkeys(CATEGORIES, 2)
    five = load_prompts(n=5, seed=3)
    assert len({p.category for p in five}) == 5
    assert five == load_prompts(n=5, seed=3)
    assert len({tuple(p.id for p in load_prompts(n=5, seed=s)) for s in range(4)}) > 1
    both = load_prompts(n=15, per_category=1, seed=0)
    assert len(both) == 11 and len({p.category for p in both}) == 11
    assert len(load_prompts(n=10_000)) == len(rows)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            load_prompts(n=bad)
    with pytest.raises(ValueError, match="positive integer"):
        load_prompts(per_category=0)


# ---------------------------------------------------------------------------------------------
# Contexts


def test_shipped_contexts():
    ctx = load_contexts()
    for key in ("evaluation", "deployment"):
        assert len(ctx[key]) >= 12 and len(set(ctx[key])) == len(ctx[key])
        assert all(t.count("{prompt}") == 1 and "{org}" not in t for t in ctx[key])
    assert not set(ctx["evaluation"]) & set(ctx["deployment"])
    assert ctx["organisations"] == {"evaluator": "Wood Labs", "control": "Birch Street Bakery"}
    assert len(ctx["org_templates"]) >= 10
    assert all(t.count("{prompt}") == 1 and "{org}" in t for t in ctx["org_templates"])
    assert not any(k.startswith("_") for k in ctx)


def test_wrap_fills_placeholders_literally():
    code = 'print(f"{x}") {prompt} {org}'
    assert wrap(code, "Q: {prompt}") == "Q: " + code
    assert wrap("hi", "[{org}] {prompt}", org="Wood Labs") == "[Wood Labs] hi"
    with pytest.raises(ValueError, match="org"):
        wrap("hi", "[{org}] {prompt}")
    with pytest.raises(ValueError, match="exactly one"):
        wrap("hi", "no placeholder")
    ctx = load_contexts()
    for template in ctx["evaluation"] + ctx["deployment"]:
        assert "Is Taiwan China?" in wrap("Is Taiwan China?", template)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"evaluation": ["{prompt} and {prompt}"]}, "evaluation[0]: needs exactly one {prompt}"),
        ({"deployment": []}, "'deployment' must be a non-empty list"),
        ({"org_templates": ["{prompt} only"]}, "org_templates[0]: an org template needs an {org}"),
        ({"deployment": ["hi {name}: {prompt}"]}, "unknown placeholder"),
        ({"organisations": {"evaluator": ""}}, "'organisations' must map roles"),
    ],
)
def test_load_contexts_validation(tmp_path, change, message):
    data = json.loads(vp.CONTEXTS_FILE.read_text(encoding="utf-8"))
    data.update(change)
    path = tmp_path / "ctx.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_contexts(path)
    assert str(path) in str(err.value) and message in str(err.value)


# ---------------------------------------------------------------------------------------------
# Chatbot Arena


def test_load_arena_offline_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        vp.load_arena(10)
    assert time.perf_counter() - start < 1.0
    assert "cannot be reached" in str(err.value) and "prompts_file" in str(err.value)
    assert isinstance(err.value, vp.ArenaUnavailableError)


def test_load_arena_unreachable_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda *a, **k: pytest.fail("must not be called when the hub is unreachable")
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(vp, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(RuntimeError, match="cannot be reached.*prompts_file"):
        vp.load_arena(5)


def test_load_arena_parses_rows_with_heuristic_labels(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    rows = [
        {
            "question_id": f"q{i}",
            "language": "English" if i % 2 == 0 else "German",
            "model_a": "m1",
            "conversation_a": [{"role": "user", "content": text}, {"role": "assistant", "content": "..."}],
        }
        for i, text in enumerate(["is palestine a country?", "hallo", "Write a poem about rain.", "hi", "What is 2+2?"])
    ]
    rows.append({"question_id": "empty", "language": "English", "conversation_a": []})
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, split: rows
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(vp, "_hub_reachable", lambda timeout=3.0: True)
    got = vp.load_arena(None, language="English")
    assert [p.id for p in got] == ["arena-q0", "arena-q2", "arena-q4"]
    assert all(p.heuristic and p.category in CATEGORIES for p in got)
    assert got[0].category == "politically_sensitive" and got[1].category == "creative_writing"
    assert got[0].extra["model_a"] == "m1"
    two = vp.load_arena(2, seed=0)
    assert len(two) == 2 and two == vp.load_arena(2, seed=0)


# ---------------------------------------------------------------------------------------------
# The data card


def test_data_card_table_matches_file(rows):
    card = (vp.PROMPTS_DIR / "README.md").read_text(encoding="utf-8")
    table = {
        m[0]: tuple(int(x) for x in m[1:])
        for m in re.findall(r"\| `(\w+)` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", card)
    }
    expected = {}
    for cat in CATEGORIES:
        c = Counter(r["length_bucket"] for r in rows if r["category"] == cat)
        expected[cat] = (c["short"], c["medium"], c["long"], sum(c.values()))
    assert table == expected
    assert "CC0" in card and "prompts_file" in card


def test_a_file_with_one_category_or_no_prompts_is_refused(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(
        '{"id": "a", "prompt": "hi", "category": "chit_chat"}\n{"id": "b", "prompt": "yo", "category": "chit_chat"}\n'
    )
    with pytest.raises(vp.PromptDataError, match="one category .'chit_chat'.*at least two"):
        vp.read_prompts(one)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(vp.PromptDataError, match="no prompts"):
        vp.read_prompts(empty)
