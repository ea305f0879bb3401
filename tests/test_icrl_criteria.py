"""Criteria of the ICRL games: counts, checkers (positive, negative, near misses), lexicons,
wrong hypotheses (verified edits), and templates that do not satisfy criteria by accident."""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest

from vaxis.data.icrl import (
    CriteriaError,
    EditEngine,
    eligible_paragraphs,
    load_criteria,
    load_paragraphs,
    load_rules,
)
from vaxis.data.icrl.criteria import MATCHERS, Lexicon, default_data_dir, plural
from vaxis.data.icrl.text import fill_template, lower_first_word, sentence_spans


@pytest.fixture(scope="module")
def criteria():
    return load_criteria()


@pytest.fixture(scope="module")
def rules():
    return load_rules()


@pytest.fixture(scope="module")
def paragraphs():
    return load_paragraphs()


# ----------------------------------------------------------------------------- counts and data


def test_counts_and_splits(criteria):
    construction = [c for c in criteria.values() if c.split == "construction"]
    held_out = [c for c in criteria.values() if c.split == "held_out"]
    assert len(criteria) == 75
    assert len(construction) == 50 and len(held_out) == 25
    assert sum(c.kind == "syntactic" for c in construction) == 15
    assert sum(c.kind == "semantic" for c in construction) == 35
    assert {c.kind for c in held_out} == {"syntactic", "semantic"}
    assert not {c.name for c in construction} & {c.name for c in held_out}


def test_paper_construction_criteria_present(criteria):
    paper = """colon digit emoji quotation_marks exclamation first_person parentheses first_sentence_question
    semicolon dash ellipsis ampersand slash percent_sign dollar_sign musical_instrument nautical_term gemstone
    mythological_creature cooking_verb chess_term fabric weather_phenomenon military_rank chemical_element
    dance_style disease legal_term precious_metal extinct_animal colour_word body_part emotion_word furniture
    vehicle insect geometric_shape currency sea_creature architectural_feature herb_or_spice celestial_body
    locomotion_verb sports_gear geological_feature ancient_civilisation container mathematical_term
    theatre_term bird""".split()
    assert sorted(paper) == sorted(n for n, c in criteria.items() if c.split == "construction")


def test_every_criterion_is_described_and_has_wrong_hypotheses(criteria, rules):
    for c in criteria.values():
        assert c.description and not c.description.endswith(".")
        assert len(c.wrong_hypotheses) >= 6, c.name
        assert len(set(c.wrong_hypotheses)) == len(c.wrong_hypotheses)
        for h in c.wrong_hypotheses:
            assert h in rules and h != c.name
            if c.split == "construction":
                assert rules[h].split != "held_out", (c.name, h)
        if c.kind == "semantic":
            assert c.lexicon is not None and len(c.lexicon) >= 20, c.name
        else:
            assert c.checker in MATCHERS


def test_lexicons_are_data_not_code(criteria):
    doc = json.loads((default_data_dir() / "criteria" / "semantic.json").read_text(encoding="utf-8"))
    names = {r["name"] for r in doc["rules"]}
    assert names == {n for n, c in criteria.items() if c.kind == "semantic"}


def test_bad_data_is_reported(tmp_path):
    shutil.copytree(default_data_dir() / "criteria", tmp_path / "criteria")
    path = tmp_path / "criteria" / "semantic.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["rules"][0]["lexicon"] = doc["rules"][0]["lexicon"][:5]
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(CriteriaError, match="at least 20"):
        load_criteria(tmp_path)
    doc["rules"][0]["lexicon"] = ["a harp"] * 25
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(CriteriaError, match="duplicate"):
        load_criteria(tmp_path)


# ----------------------------------------------------------------------------- syntactic checkers

SYNTACTIC_CASES = {
    # name: (positives, negatives including near misses)
    "colon": (
        ["The reason is simple: it worked.", "At 10:30 they left."],
        ["No colon here; just a semicolon.", "A dash — not a colon."],
    ),
    "digit": (
        ["It was built in 1884.", "Room 4b."],
        ["It was built in the nineteenth century.", "Three ships, IV kings."],
    ),
    "emoji": (
        ["It was great. 🎉 Then it ended.", "A flag 🇫🇷 here.", "Nice ✨ work"],
        ["A smiley :) is not an emoji.", "Copyright © 2020 and ™."],
    ),
    "quotation_marks": (
        ['Critics call it "a classic" today.', "Called \u201cthe best\u201d by many."],
        ["It's Mary's book.", "A 'single' quote and a lone \" mark."],
    ),
    "exclamation": (
        ["What a story! It ended.", "It ended!"],
        ["Is it? Yes.", "The value of x != y here.", "Nothing to shout about."],
    ),
    "first_person": (
        [
            "I find it striking.",
            "Some of us learned it.",
            "Our view changed.",
            "When I first read it, I smiled.",
            "My view is clear.",
        ],
        [
            "The bus stopped in the US.",
            "World War I ended in 1918.",
            "Elizabeth I was queen.",
            "The myth of the hour.",
            "Take the I-95 north.",
            "Meanwhile, the Mercury programme.",
        ],
    ),
    "parentheses": (
        ["It is (at least in part) true.", "Smith (born 1950) wrote it."],
        ["A list item 1) and an emoticon :)", "Square [brackets] only."],
    ),
    "first_sentence_question": (
        ["Why does it matter? It does.", "Did you know that Arthur C. Clarke wrote it? He did."],
        ["It matters. Why does it matter?", "Dr. Smith asked nothing. Really?"],
    ),
    "semicolon": (
        ["Many admired it; others did not."],
        ["Many admired it: others did not.", "No punctuation here."],
    ),
    "dash": (
        ["It lasted \u2014 longer than expected.", "From 1884\u20131886.", "It lasted - sort of."],
        ["A well-known, long-standing fact.", "Twenty-one"],
    ),
    "ellipsis": (
        ["And yet... it went on.", "And yet\u2026 it went on."],
        ["The end. The start.", "Two dots.. only."],
    ),
    "ampersand": (["Tom & Jerry."], ["Tom and Jerry."]),
    "slash": (["and/or", "1/2 of it"], ["a backslash \\ here", "a pipe | here"]),
    "percent_sign": (["About 40% of it."], ["About forty percent of it."]),
    "dollar_sign": (["It cost $5."], ["It cost five dollars.", "It cost 5 euros."]),
    "hashtag": (["A post #history here."], ["Number 5 only."]),
    "at_sign": (["By @historybuff today."], ["At the shop, not an at sign."]),
    "asterisk": (["It was *huge* then.", "A footnote*"], ["No stars here."]),
    "square_brackets": (["It [the subject] changed.", "True. [citation needed]"], ["Round (brackets) only."]),
    "equals_sign": (["Its legacy = influence."], ["Its legacy equals influence."]),
    "plus_sign": (["Art + science."], ["Art and science.", "Art \u00b1 science."]),
    "all_caps_word": (
        ["This is VERY important.", "The NASA mission."],
        ["This is Very important.", "An A or I or US."],
    ),
    "degree_sign": (["At 20\u00b0C."], ["At 20 degrees.", "At 20 oC."]),
}


def test_every_syntactic_criterion_has_cases(criteria):
    assert {n for n, c in criteria.items() if c.kind == "syntactic"} == set(SYNTACTIC_CASES)


@pytest.mark.parametrize("name", sorted(SYNTACTIC_CASES))
def test_syntactic_checker(criteria, name):
    positives, negatives = SYNTACTIC_CASES[name]
    c = criteria[name]
    for text in positives:
        assert c.check(text), (name, text)
        for s, e in c.matches(text):
            assert 0 <= s < e <= len(text)
    for text in negatives:
        assert not c.check(text), (name, text, c.matches(text))


def test_first_person_spans_and_first_question_span(criteria):
    text = "When I first read it, my view changed."
    spans = criteria["first_person"].matches(text)
    assert [text[s:e] for s, e in spans] == ["I", "my"]
    text = "Did you know that x is y? More text."
    assert [text[s:e] for s, e in criteria["first_sentence_question"].matches(text)] == ["?"]


# ----------------------------------------------------------------------------- lexicons


def test_lexicon_matching_rules():
    lex = Lexicon(["a violin", "a bus", "mercury", "Mars", "scarlet", "scarlet fever", "a louse|lice"])
    find = lambda t: [t[s:e] for s, e in lex.matches(t)]  # noqa: E731
    assert find("She played a violin and two violins.") == ["violin", "violins"]
    assert find("The minibus and the omnibus.") == []  # word boundaries
    assert find("A bus-stop.") == ["bus"]  # a hyphen is a boundary
    assert find("Violin music is old.") == ["Violin"]  # capitalised at a sentence start
    assert find("The Violin Concerto.") == []  # capitalised mid-sentence: a name
    assert find("A VIOLIN.") == []  # all caps never matches a lower-case form
    assert find("Mercury is a metal.") == ["Mercury"]
    assert find("The planet Mercury.") == []
    assert find("On Mars.") == ["Mars"] and find("The mars bar.") == []
    assert find("He had scarlet fever.") == ["scarlet fever"]  # longest wins
    assert find("Head lice.") == ["lice"]
    assert find("The violin\nplayed.") == ["violin"]


def test_plural():
    assert [plural(w) for w in ["violin", "box", "city", "day", "church", "black hole"]] == [
        "violins",
        "boxes",
        "cities",
        "days",
        "churches",
        "black holes",
    ]


SEMANTIC_NEAR_MISSES = {
    "musical_instrument": ("She bought a harp.", "The harpsichordist harped on."),
    "gemstone": ("A ruby ring.", "The Ruby programming language."),
    "chemical_element": ("Traces of mercury.", "The god Mercury."),
    "celestial_body": ("The planet Mercury.", "Traces of mercury."),
    "precious_metal": ("A gold coin.", "A golden age."),
    "vehicle": ("They took the bus.", "Some of us were busy."),
    "insect": ("A bee flew.", "The Bee Gees sang."),
    "colour_word": ("A red door.", "The door was redone."),
    "cooking_verb": ("They baked bread.", "The bakery opened."),
    "locomotion_verb": ("They walked home.", "They reached the walkway."),
    "bird": ("A robin sang.", "Robin Hood sang."),
    "disease": ("He had scarlet fever.", "Scarlett wore it."),
    "ancient_civilisation": ("The Sumerians wrote.", "The summer was warm."),
    "currency": ("It cost a euro.", "It was European."),
    "body_part": ("He hurt his knee.", "She knelt down."),
    "emotion_word": ("Full of joy.", "They joined us."),
    "mammal": ("A horse ran.", "Horseradish grew."),
    "fruit": ("An apple fell.", "Appleton is a town."),
    "taste_word": ("A sweet taste.", "The sweetener."),
    "game": ("They played chess.", "A chest of drawers."),
}


@pytest.mark.parametrize("name", sorted(SEMANTIC_NEAR_MISSES))
def test_semantic_near_misses(criteria, name):
    positive, negative = SEMANTIC_NEAR_MISSES[name]
    assert criteria[name].check(positive), (name, positive)
    assert not criteria[name].check(negative), (name, negative, criteria[name].matches(negative))


def test_every_lexicon_entry_matches_in_context(rules):
    for rule in rules.values():
        if rule.lexicon is None:
            continue
        for entry in rule.lexicon.entries:
            for form in entry.forms:
                text = f"They say that {form} was there."
                spans = rule.matches(text)
                assert any(text[s:e] == form for s, e in spans), (rule.name, form)
                glued = f"They say that x{form}x was there."
                assert not any(s < 15 + len(form) and e > 14 for s, e in rule.matches(glued)), (
                    rule.name,
                    form,
                )


def test_check_equals_bool_of_matches(rules, paragraphs):
    for p in paragraphs[::10]:
        for rule in rules.values():
            spans = rule.matches(p["text"])
            assert rule.check(p["text"]) == bool(spans)
            assert spans == sorted(spans)
            assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))


def test_every_criterion_has_enough_eligible_paragraphs(criteria, paragraphs):
    for c in criteria.values():
        assert len(eligible_paragraphs(c, paragraphs)) >= 100, c.name


# ----------------------------------------------------------------------------- edits and hypotheses


def test_wrong_hypothesis_edits_are_verified(criteria, rules, paragraphs):
    """Every wrong hypothesis of every criterion has an edit that satisfies the hypothesis
    and NOT the true criterion, on real paragraphs."""
    engine = EditEngine()
    for c in criteria.values():
        pool = eligible_paragraphs(c, paragraphs)[:40]
        for h in c.wrong_hypotheses:
            rng = random.Random(f"{c.name}:{h}")
            ok = 0
            for _ in range(60):
                p = rng.choice(pool)
                edit = engine.propose(rules[h], p["text"], rng, title=p["title"])
                if edit is None or c.check(edit.rewrite):
                    continue
                ks, ke = edit.key_span
                assert any(s < ke and ks < e for s, e in rules[h].matches(edit.rewrite)), (
                    c.name,
                    h,
                    edit.key_text,
                )
                ok += 1
                if ok == 3:
                    break
            assert ok == 3, f"{c.name}: no verified edit for wrong hypothesis {h}"


def test_success_edits_satisfy_their_criterion(criteria, paragraphs):
    engine = EditEngine()
    for c in criteria.values():
        pool = eligible_paragraphs(c, paragraphs)[:20]
        rng = random.Random(c.name)
        hits = 0
        for _ in range(40):
            p = rng.choice(pool)
            edit = engine.propose(c, p["text"], rng, title=p["title"])
            if edit is None:
                continue
            ks, ke = edit.key_span
            assert any(s < ke and ks < e for s, e in c.matches(edit.rewrite)), (
                c.name,
                edit.key_text,
                edit.operator,
            )
            # the rewrite keeps the original: every original word is still there (modulo case)
            orig = re.findall(r"\w+", p["text"].lower())
            new = re.findall(r"\w+", edit.rewrite.lower())
            assert len(set(orig) - set(new)) <= 1, (c.name, edit.operator)
            hits += 1
        assert hits >= 20, c.name


def test_frame_templates_do_not_satisfy_criteria(criteria):
    """A lexicon template with its slot filled by a neutral word satisfies no criterion: only the
    inserted word can satisfy one."""
    frames = json.loads((default_data_dir() / "criteria" / "frames.json").read_text(encoding="utf-8"))["frames"]
    neutral = {k: "zorp" for k in ("x", "X", "w", "W", "v", "vs", "ved", "ving", "Ving")}
    for fname, frame in frames.items():
        for key in ("sentences", "clauses", "prefixes"):
            for template in frame.get(key, []):
                text, _ = fill_template(template, neutral)
                text = "Zorp is here" + text + " zorp." if key != "sentences" else text
                hits = [n for n, c in criteria.items() if c.check(text)]
                assert hits in ([], ["hyphenated_word"]), (fname, template, hits)


def test_text_helpers():
    text = "Arthur C. Clarke wrote it in the U.S. in 1968. It sold well! Did it? Yes... and no. The end."
    sents = [text[s:e] for s, e in sentence_spans(text)]
    assert sents == [
        "Arthur C. Clarke wrote it in the U.S. in 1968.",
        "It sold well!",
        "Did it?",
        "Yes... and no.",
        "The end.",
    ]
    vocab = {"embroidery", "new"}
    assert lower_first_word("The Hague is", vocab) == "the Hague is"
    assert lower_first_word("Embroidery is an art", vocab) == "embroidery is an art"
    assert lower_first_word("New York is big", vocab) == "New York is big"
    assert lower_first_word("Venus is bright", vocab) == "Venus is bright"
    assert fill_template("[[[citation needed]]]", {}) == ("[citation needed]", (0, 17))
    assert fill_template("See {x}.", {"x": "a violin"}, {"x": (2, 8)}) == ("See a violin.", (6, 12))
