"""Target spans of ICRL games through real chat templates: before / reward / after token sets
derived structurally, on the tiny tokenizer and on the embedded SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from vaxis.core.spans import token_anchor, tokens_in_spans
from vaxis.core.tiny import tiny_tokenizer
from vaxis.data.icrl import (
    TargetSpanError,
    generate_games,
    load_paragraphs,
    placebo_spans,
    render_game,
    summary_stats,
    target_spans,
    target_spans_many,
)

N_GAMES = 75  # one game per criterion


def load_smollm2_tokenizer():
    """The embedded real model's tokenizer (SmolLM2-135M-Instruct, installed by `make install`)."""
    from vaxis.core.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def games():
    games, report = generate_games(N_GAMES, seed=0, paragraphs=load_paragraphs())
    assert report["generated"] == N_GAMES
    return games


@pytest.fixture(scope="module", params=["tiny", "smollm2"])
def tokenizer(request):
    return tiny_tokenizer() if request.param == "tiny" else load_smollm2_tokenizer()


@pytest.fixture(scope="module")
def spans(games, tokenizer):
    return target_spans_many(games, tokenizer, placebos=True)


def test_all_games_kept(spans, games):
    kept, excluded, _ = spans
    assert excluded == [], excluded[:3]
    assert len(kept) == len(games)


def test_target_spans_are_structural_and_clean(spans, games, tokenizer):
    kept, _, _ = spans
    by_id = {g.game_id: g for g in games}
    for ts in kept:
        game = by_id[ts.game_id]
        rendered = render_game(game, tokenizer)
        assert rendered.text == ts.text
        chat = rendered.chat
        a = game.target
        msg_s, msg_e = chat.message_spans[a.message_index]
        rw_s, rw_e = chat.span_in_message(a.message_index, *a.rewrite_span)
        content = game.messages[a.message_index]["content"]
        think_end = msg_s + content.index("</thinking>") + len("</thinking>")
        user_spans = [chat.message_spans[i] for i, m in enumerate(game.messages) if m["role"] == "user"]
        assert think_end <= rw_s < rw_e == msg_e == ts.end_char
        assert ts.rewrite_span == (rw_s, rw_e) and ts.assistant_spans[-1] == (msg_s, msg_e)
        assert len(ts.assistant_spans) == a.message_index // 2

        # at least 3 tokens each side; order before < reward < after
        assert len(ts.before) >= 3 and len(ts.after) >= 3 and ts.reward
        assert max(ts.before) < min(ts.reward) and max(ts.reward) < min(ts.after)
        assert ts.end_token == max(ts.after) + 1

        # every before/after token lies inside the assistant's rewrite: not in a user turn, not in thinking
        for t in ts.before + ts.after:
            s, e = ts.offsets[t]
            anchor = token_anchor(ts.text, s, e)
            assert rw_s <= anchor < rw_e
            assert ts.text[s:e].strip() == ts.text[max(s, rw_s) : min(e, rw_e)].strip()
            assert not any(us <= anchor < ue for us, ue in user_spans)

        # the reward tokens decode to the reward words, which satisfy the criterion
        words = [ts.text[s:e] for s, e in ts.char_spans["reward"]]
        assert words == [game.rewrite(game.target_attempt)[s:e] for s, e in a.reward_spans]
        assert tuple(words) == ts.center_text
        decoded = tokenizer.decode([ts.input_ids[t] for t in ts.reward], clean_up_tokenization_spaces=False)
        assert "".join(decoded.split()) == "".join("".join(words).split())

        # the token sets come from the one span rule of vaxis.core.spans, on the whole text
        full = tokens_in_spans(ts.text, ts.offsets, ts.char_spans)
        assert {k: tuple(v) for k, v in full.items()} == dict(ts.token_indices)

        # the user's copy of the paragraph (the reference code's bug) is never used
        user_copy_start = chat.message_spans[a.message_index - 1][0]
        assert ts.char_spans["before"][0][0] > user_copy_start
        assert not any(us <= ts.char_spans["before"][0][0] < ue for us, ue in user_spans)


def test_input_ids_match_the_rendered_text(spans, tokenizer):
    kept, _, _ = spans
    ts = kept[0]
    again = tokenizer(ts.text, add_special_tokens=False)["input_ids"]
    assert list(ts.input_ids) == again


def test_placebo_spans(spans, games, tokenizer):
    kept, _, (placebos, excluded) = spans
    targets = {ts.game_id: ts for ts in kept}
    n_failed = sum(len(g.failed_attempts) for g in games)
    assert len(placebos) + len(excluded) == n_failed
    assert len(placebos) >= 0.95 * n_failed
    by_id = {g.game_id: g for g in games}
    for ps in placebos:
        game = by_id[ps.game_id]
        a = game.attempts[ps.attempt]
        assert ps.kind == "placebo" and ps.center == "target" and not a.success
        assert ps.center_text == (a.targeted_text,)
        assert len(ps.before) >= 3 and len(ps.after) >= 3
        assert max(ps.before) < min(ps.reward) <= max(ps.reward) < min(ps.after)
        assert ps.text == targets[ps.game_id].text and ps.end_char < targets[ps.game_id].end_char


def test_placebo_shares_the_target_rendering(games, tokenizer):
    game = games[0]
    rendered = render_game(game, tokenizer)
    target = target_spans(game, tokenizer, rendered=rendered)
    placebos, _ = placebo_spans(game, tokenizer, rendered=rendered)
    assert placebos and all(p.text == target.text and p.input_ids is target.input_ids for p in placebos)
    assert all(p.end_token <= target.end_token for p in placebos)


def test_exclusion_is_reported(games, tokenizer):
    with pytest.raises(TargetSpanError) as info:
        target_spans(games[0], tokenizer, min_tokens=10**6)
    assert info.value.reason == "too_few_before_tokens" and info.value.game_id == games[0].game_id
    kept, excluded = target_spans_many(games[:3], tokenizer, min_tokens=10**6)
    assert kept == [] and [e["reason"] for e in excluded] == ["too_few_before_tokens"] * 3


def test_summary_stats_with_tokenizer(games, tokenizer):
    stats = summary_stats(games[:20], tokenizer)
    assert stats["kept"] + stats["excluded"] == 20
    assert stats["tokens_before"]["min"] >= 3 and stats["tokens_after"]["min"] >= 3
    assert sum(stats["reward_relative_position_tokens"]["counts"]) == stats["kept"]
