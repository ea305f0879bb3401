"""The ICRL game generator: structure, verification of every attempt, determinism, schema."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest

from vaxis.data.icrl import (
    SCHEMA_VERSION,
    GameSchemaError,
    format_histogram,
    games_hash,
    generate_games,
    load_criteria,
    load_games,
    load_paragraphs,
    load_rules,
    summary_stats,
    validate_game_record,
    write_games,
)
from vaxis.data.icrl.player import LLMPlayer, new_match, parse_answer

N_DEMO = 150


@pytest.fixture(scope="module")
def paragraphs():
    return load_paragraphs()


@pytest.fixture(scope="module")
def demo(paragraphs):
    return generate_games(N_DEMO, seed=0, paragraphs=paragraphs)


def test_demo_covers_all_criteria(demo):
    """The demo run covers all 75 criteria, twice each, in both splits, dropping nothing.
    (How long it takes is measured in benchmarks/, not asserted here.)"""
    games, report = demo
    assert report["generated"] == N_DEMO and report["dropped"] == 0
    assert len({g.criterion for g in games}) == 75
    assert {g.split for g in games} == {"construction", "held_out"}
    assert report["by_split"] == dict(sorted(Counter(g.split for g in games).items()))
    assert all(v == 2 for v in report["by_criterion"].values())
    for key in ("regenerated", "regeneration_reasons", "edit_checks", "dropped_games", "eligible_paragraphs"):
        assert key in report


def test_game_structure(demo):
    games, _ = demo
    discoveries, n_paragraphs, attempts = Counter(), Counter(), Counter()
    for g in games:
        validate_game_record(g.to_dict())
        assert 3 <= len(g.paragraphs) <= 8
        assert 1 <= g.discovery_index <= 5 and g.discovery_index <= len(g.paragraphs) - 2
        assert g.messages[0]["role"] == "system" and g.messages[-1]["role"] == "user"
        per_par = Counter(a.paragraph_index for a in g.attempts)
        assert max(per_par.values()) <= 5 and sorted(per_par) == list(range(len(g.paragraphs)))
        for a in g.attempts:
            content = g.messages[a.message_index]["content"]
            assert content.startswith("<thinking>") and content.index("</thinking>") < a.rewrite_span[0]
            assert a.phase == (
                "explore"
                if a.paragraph_index < g.discovery_index
                else "discovery"
                if a.paragraph_index == g.discovery_index
                else "exploit"
            )
        target = g.target
        assert target.paragraph_index == g.discovery_index + 1 and target.attempt_index == 0 and target.success
        # feedback turns
        for a in g.attempts:
            reply = g.messages[a.message_index + 1]["content"]
            assert reply.startswith("+1" if a.success else "-1")
        discoveries[g.discovery_index] += 1
        n_paragraphs[len(g.paragraphs)] += 1
        attempts.update(per_par.values())
    assert set(discoveries) == {1, 2, 3, 4, 5}
    assert len(n_paragraphs) >= 5 and len(attempts) == 5


def test_every_attempt_is_verified(demo, paragraphs):
    games, _ = demo
    rules = load_rules()
    by_id = {p["id"]: p["text"] for p in paragraphs}
    for g in games:
        c = rules[g.criterion]
        for p in g.paragraphs:
            assert not c.check(by_id[p["id"]]), "the original paragraph must not satisfy the criterion"
        for i, a in enumerate(g.attempts):
            rewrite = g.rewrite(i)
            original = by_id[g.paragraphs[a.paragraph_index]["id"]]
            assert rewrite != original
            ts, te = a.targeted_span
            assert rewrite[ts:te] == a.targeted_text
            if a.success:
                assert c.check(rewrite)
                assert [tuple(s) for s in a.reward_spans] == c.matches(rewrite)
            else:
                assert not c.check(rewrite), (g.game_id, i)
                h = rules[a.hypothesis]
                assert a.hypothesis in c.wrong_hypotheses
                assert any(s < te and ts < e for s, e in h.matches(rewrite)), (g.game_id, i, a.hypothesis)
            # rewrites keep most of the original paragraph
            orig, new = (
                Counter(re.findall(r"\w+", original.lower())),
                Counter(re.findall(r"\w+", rewrite.lower())),
            )
            assert sum((orig & new).values()) >= 0.95 * sum(orig.values())


def test_thinking_states_hypotheses_and_discovery(demo):
    games, _ = demo
    rules = load_rules()
    openings = Counter()
    for g in games:
        for i, a in enumerate(g.attempts):
            content = g.messages[a.message_index]["content"]
            thinking = content[len("<thinking>") : content.index("</thinking>")]
            desc = rules[a.hypothesis].description
            assert desc in thinking, (g.game_id, i)
            if a.phase == "explore":
                assert g.criterion_description not in thinking or g.criterion_description in desc
            openings[thinking[:25]] += 1
    assert len(openings) >= 40, "thinking phrasings should vary"


def test_reward_positions_are_spread(demo):
    games, _ = demo
    stats = summary_stats(games)
    hist = stats["reward_relative_position"]
    assert sum(hist["counts"]) == len(games)
    assert max(hist["counts"]) < 0.3 * len(games), format_histogram(hist)
    assert sum(hist["counts"][:3]) > 0.15 * len(games) and sum(hist["counts"][-3:]) > 0.15 * len(games)
    assert 0.3 < stats["reward_relative_position"]["mean"] < 0.7
    assert len(stats["target_operators"]) >= 5


def test_same_seed_same_bytes(demo, paragraphs, tmp_path):
    games, _ = demo
    again, _ = generate_games(N_DEMO, seed=0, paragraphs=paragraphs)
    a = write_games(tmp_path / "a.jsonl", games).read_bytes()
    b = write_games(tmp_path / "b.jsonl", again).read_bytes()
    assert a == b
    assert games_hash(games) == games_hash(again) == hashlib.sha256(a).hexdigest()
    other, _ = generate_games(10, seed=1, paragraphs=paragraphs)
    assert write_games(tmp_path / "c.jsonl", other).read_bytes() != b"".join(a.splitlines(True)[:10])


def test_smaller_run_is_a_subset(demo, paragraphs):
    games, _ = demo
    small, _ = generate_games(75, seed=0, paragraphs=paragraphs)
    assert [g.to_dict() for g in small] == [g.to_dict() for g in games[:75]]


def test_splits_and_criteria_selection(paragraphs):
    games, report = generate_games(6, seed=3, splits=("held_out",), paragraphs=paragraphs)
    assert {g.split for g in games} == {"held_out"}
    games, _ = generate_games(4, seed=3, criteria=["colon", "bird"], paragraphs=paragraphs)
    assert [g.criterion for g in games] == ["bird", "colon", "bird", "colon"]
    with pytest.raises(ValueError, match="unknown criteria"):
        generate_games(1, criteria=["no_such_criterion"], paragraphs=paragraphs)


def test_user_paragraph_file(tmp_path, paragraphs):
    text = "\n\n".join(p["text"] for p in paragraphs[:30])
    path = tmp_path / "mine.txt"
    path.write_text(text, encoding="utf-8")
    mine = load_paragraphs(path)
    assert len(mine) == 30 and mine[0]["id"] == "p1"
    games, report = generate_games(2, seed=0, criteria=["semicolon", "bird"], paragraphs=path)
    assert report["generated"] == 2


def test_write_load_roundtrip_and_atomic(demo, tmp_path):
    games, _ = demo
    path = write_games(tmp_path / "games.jsonl", games[:20])
    assert not list(tmp_path.glob(".*tmp*"))
    loaded = load_games(path)
    assert [g.to_dict() for g in loaded] == [g.to_dict() for g in games[:20]]
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first["schema_version"] == SCHEMA_VERSION
    assert list(first)[:4] == ["schema_version", "game_id", "criterion", "criterion_kind"]


def _corrupt(tmp_path, games, line: int, mutate) -> str:
    records = [g.to_dict() for g in games[:10]]
    mutate(records[line - 1])
    path = tmp_path / "games.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(GameSchemaError) as info:
        load_games(path)
    return str(info.value)


def test_load_reports_line_and_field(demo, tmp_path):
    games, _ = demo

    def bad_rewrite_span(r):
        r["attempts"][3]["rewrite_span"] = [5, 10**6]

    msg = _corrupt(tmp_path, games, 7, bad_rewrite_span)
    assert msg.startswith("games.jsonl line 7: field 'attempts[3].rewrite_span'"), msg

    def bad_role(r):
        r["messages"][2]["role"] = "user"

    assert "line 2: field 'messages[2].role'" in _corrupt(tmp_path, games, 2, bad_role)

    def missing(r):
        del r["discovery_index"]

    assert "line 4: field 'discovery_index': missing" in _corrupt(tmp_path, games, 4, missing)

    def wrong_version(r):
        r["schema_version"] = "vaxis.icrl.games/0"

    assert "field 'schema_version'" in _corrupt(tmp_path, games, 1, wrong_version)

    def reward_on_failure(r):
        k = next(i for i, a in enumerate(r["attempts"]) if not a["success"])
        r["attempts"][k]["reward_spans"] = [[0, 3]]

    assert "reward_spans" in _corrupt(tmp_path, games, 5, reward_on_failure)

    def bad_target(r):
        r["target_attempt"] = 0

    assert "field 'target_attempt'" in _corrupt(tmp_path, games, 3, bad_target)

    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(games[0].to_dict()) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(GameSchemaError, match="broken.jsonl line 2: not valid JSON"):
        load_games(path)


# ----------------------------------------------------------------------------- LLM player (fake clients)


class FakeClient:
    """Writes what a cooperative model would: the paragraph plus a sentence with a word of the rule."""

    def __init__(self):
        self.rules = {r.description: r for r in load_rules().values()}
        self.calls = 0

    def __call__(self, messages):
        self.calls += 1
        user = messages[-1]["content"]
        paragraph = user.split("Original paragraph:\n\n", 1)[1].split("\n\nSituation:", 1)[0]
        description = re.search(r"rewrite the paragraph so that it (.+?)\. Then", user).group(1)
        rule = self.rules[description]
        if rule.lexicon is not None:
            entry = rule.lexicon.entries[self.calls % len(rule.lexicon.entries)]
            word = entry.forms[0] if rule.lexicon.inflect == "verb" else entry.np
            addition = f"Some writers connect it with the word {word} in passing."
        else:
            addition = {
                "colon": "The point is simple: it matters.",
                "semicolon": "Some liked it; others did not.",
            }.get(rule.name, "Nothing to add here.")
        thinking = f"<thinking>I think the paragraph {description}.</thinking>"
        return f"{thinking}\n<rewrite>{paragraph} {addition}</rewrite>"


def test_llm_player_with_fake_client(paragraphs):
    client = FakeClient()
    player = LLMPlayer(client, name="fake")
    games, report = generate_games(2, seed=0, criteria=["bird", "colon"], paragraphs=paragraphs, player=player)
    assert report["generated"] == 2 and report["generator"] == "llm:fake"
    rules = load_rules()
    authors = Counter(a.author for g in games for a in g.attempts)
    assert authors["llm"] > 0
    for g in games:
        assert g.generator == "llm:fake"
        validate_game_record(g.to_dict())
        c = rules[g.criterion]
        for i, a in enumerate(g.attempts):
            assert c.check(g.rewrite(i)) == a.success


def test_llm_player_falls_back_to_templates(paragraphs):
    def broken(messages):
        raise ConnectionError("no network")

    player = LLMPlayer(broken, name="broken")
    games, report = generate_games(1, seed=0, criteria=["bird"], paragraphs=paragraphs, player=player)
    assert report["generated"] == 1
    assert {a.author for a in games[0].attempts} == {"template"}
    assert player.stats["client_error:ConnectionError"] > 0


def test_llm_helpers():
    assert parse_answer("<thinking> a\nb </thinking>\n<rewrite> x  y </rewrite>") == ("a b", "x y")
    assert parse_answer("no tags") is None
    bird = load_criteria()["bird"]
    assert new_match(bird, "A crow sat.", "A crow sat. A crow and a swan flew.") == (14, 18)
    assert new_match(bird, "A crow sat.", "A crow sat.") is None


def test_regeneration_and_drops_are_counted(paragraphs):
    bird = load_criteria()["bird"]
    pool = [p for p in paragraphs if not bird.check(p["text"])]
    games, report = generate_games(6, seed=0, criteria=["bird"], paragraphs=pool[:5])
    # a game drawn with more than 5 paragraphs cannot be built from 5: it is regenerated (new sub-seed)
    assert report["regenerated"] > 0 and report["regeneration_reasons"]
    assert report["generated"] + report["dropped"] == 6
    assert all(len(g.paragraphs) <= 5 for g in games)
    games, report = generate_games(2, seed=0, criteria=["bird"], paragraphs=pool[:2], max_regenerations=3)
    assert report["generated"] == 0 and report["dropped"] == 2
    assert report["dropped_games"][0]["game_id"] == "bird-000" and report["dropped_games"][0]["reasons"]


def test_bytes_do_not_depend_on_hash_randomisation():
    import subprocess
    import sys

    code = "from vaxis.data.icrl import generate_games, games_hash; print(games_hash(generate_games(20, seed=5)[0]))"
    hashes = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**__import__("os").environ, "PYTHONHASHSEED": str(h)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for h in (1, 2)
    }
    assert len(hashes) == 1
