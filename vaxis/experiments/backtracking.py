"""Backtracking in math rollouts (METHOD.md section 4, "Backtracking"; paper Figs 5-6).

A rollout *backtracks* when the model writes one of the paper's phrases: Wait, Actually, Hmm, Hold on,
But wait, Let me reconsider / recheck / rethink / try again, I made a mistake, I think I was wrong, On
second thought, and "No, " (``patterns="paper"``), or, as an alternative, one of the ~60 patterns of the
authors' correlation code (``patterns="authors_broad"``, :data:`AUTHORS_BROAD`). This module finds those
events as character spans, and holds the small numpy helpers the notebook needs for the two figures: mean
projection per band of tokens, and the event-locked mean projection over events with a full window (with
matched control positions from rollouts that never backtrack). Problem-level statistics and the steering
sweep live in :mod:`vaxis.experiments.backtracking_stats`.

Matching rules (decided here, tested in ``tests/test_backtracking.py``):

* **Case-insensitive, as the paper.** So "wait" in the middle of a sentence ("we wait for the bus")
  counts: a known false-positive source, kept because it is the paper's rule. The same holds for
  "actually" used as an adverb ("which is actually 5"), which is also mostly a self-correction.
* **Word-bounded** on both sides: "Waiter", "I'm waiting", "factually", "wait_time" do not match.
* **"Hmm" needs two or more m's**: "Hmm", "Hmmm", "HMMMM" match (one event, the whole word); "Hm" and
  "Hmmph" do not.
* **"No, "** is the word "no" followed directly by a comma and then whitespace or the end of the text;
  the span covers "No," (comma included, trailing space not). By default it counts anywhere, as the
  paper's case-insensitive rule does, so "there is no, um" counts (another known false-positive
  source); ``sentence_initial_no=True`` keeps only a "no," at the start of the text, of a line, or
  after ``.!?:;`` (optionally behind an opening quote, bracket, or a markdown ``*``/``_``/``>``/``-``),
  for a stricter count.
* **Inside quotations it counts**: the model writing the word is the event, whatever the framing.
* **Longest phrase at a position wins, and events never overlap**: "But wait" is one event (not "But
  wait" + "wait"); "Let me try again" is one event. Adjacent phrases are separate events: "No, wait"
  is two ("no," then "wait"), "Hmm, actually" is two.
* Words in multi-word phrases may be separated by any whitespace (a line break included); "re-check",
  "re-think", "re-consider" with a hyphen also match.

:attr:`Event.phrase` is the canonical (lower-case) phrase, ``text[start:end]`` the exact matched text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Canonical phrase -> regex (case-insensitive; words joined by ``\s+``). Order does not matter:
#: the alternation is built longest-pattern-first so the longest phrase at a position wins.
PHRASES: dict[str, str] = {
    "wait": r"wait",
    "actually": r"actually",
    "hmm": r"hm{2,}",
    "hold on": r"hold\s+on",
    "but wait": r"but\s+wait",
    "let me reconsider": r"let\s+me\s+re-?consider",
    "let me recheck": r"let\s+me\s+re-?check",
    "let me rethink": r"let\s+me\s+re-?think",
    "let me try again": r"let\s+me\s+try\s+again",
    "i made a mistake": r"i\s+made\s+a\s+mistake",
    "i think i was wrong": r"i\s+think\s+i\s+was\s+wrong",
    "on second thought": r"on\s+second\s+thought",
    "no,": r"no,(?=\s|$)",
}

#: The authors' broad list (``BT_PATTERNS_COUNT`` in ``experiments/tasks/backtracking_correlation.py`` of
#: nickjiang2378/value-axis, commit 44ad182), verbatim, matched case-insensitively: the list their correlation
#: code (Figs 5-6) counts and locks to; their steering code (Fig 4) counts the 13 phrases above. Kept verbatim,
#: quirks included: ``\bno,\b`` needs a word character right after the comma (so "No, " does not match it), and
#: ``\bNo —\b`` never matches a spaced dash.
AUTHORS_BROAD: tuple[str, ...] = (
    r"\bWait\b", r"\bwait,", r"\bwait —", r"\bwait –",
    r"\bActually\b", r"\bactually,",
    r"\bhold on\b", r"\bHold on\b",
    r"\bno,\b", r"\bNo,\b", r"\bNo —\b", r"\bNo –\b",
    r"\bmistake\b", r"\berror\b", r"\bwrong\b", r"\bincorrect\b",
    r"\bthat's not (right|correct)\b", r"\bthat can't be\b",
    r"\bthat doesn't work\b", r"\bthat doesn't seem\b",
    r"\bthis is wrong\b", r"\bthis can't be right\b",
    r"\btry again\b", r"\bstart over\b", r"\bfrom scratch\b",
    r"\blet's try\b", r"\bLet's try\b", r"\blet me try\b", r"\bLet me try\b",
    r"\blet's redo\b", r"\blet me redo\b",
    r"\blet's reconsider\b", r"\blet me reconsider\b",
    r"\blet's rethink\b", r"\blet me rethink\b",
    r"\blet's recalculate\b", r"\blet me recalculate\b",
    r"\blet's recompute\b", r"\blet me recompute\b",
    r"\bre-examine\b", r"\brecheck\b", r"\bre-check\b", r"\brevisit\b",
    r"\breconsider\b", r"\brethink\b", r"\bretry\b",
    r"\brecalculate\b", r"\brecompute\b",
    r"\bI realize\b", r"\bI see my\b", r"\bI see the\b",
    r"\bon second thought\b", r"\bcorrection\b",
    r"\bgoing back\b", r"\bback to\b", r"\breturn to\b",
    r"\bscratch that\b", r"\bnevermind\b",
    r"\bbut this is a contradiction\b",
    r"\bthis contradicts\b", r"\bcontradiction\b",
)  # fmt: skip
_BROAD = [re.compile(p, re.IGNORECASE) for p in AUTHORS_BROAD]

#: The pattern sets :func:`find_backtracking` offers: ``"paper"`` (the 13 phrases of :data:`PHRASES`, the
#: paper's text and the authors' steering code) and ``"authors_broad"`` (:data:`AUTHORS_BROAD`).
PATTERN_SETS = ("paper", "authors_broad")

_ORDER = sorted(PHRASES, key=lambda p: (-len(p), p))
_PATTERN = re.compile(
    r"(?<!\w)(?:" + "|".join(f"(?P<p{i}>{PHRASES[p]})" for i, p in enumerate(_ORDER)) + r")(?!\w)",
    re.IGNORECASE,
)
_OPENERS = "\"'“‘*_([>-"


def _sentence_start(text: str, pos: int) -> bool:
    """Whether ``pos`` starts a sentence: text or line start, or after ``.!?:;`` (behind openers)."""
    i = pos
    while i > 0 and (text[i - 1] in _OPENERS or text[i - 1] in " \t"):
        i -= 1
    return i == 0 or text[i - 1] in "\r\n.!?:;"


@dataclass(frozen=True)
class Event:
    """One backtracking phrase: ``text[start:end]`` (character offsets) is the matched text."""

    start: int
    end: int
    phrase: str


def _broad_events(text: str) -> list[Event]:
    r""":data:`AUTHORS_BROAD` matches, merged by the same rule as the paper's phrases: at a position the
    longest match wins and events never overlap (the authors' code keeps one copy per matching pattern, so
    "Wait," counts twice there, once for ``\bWait\b`` and once for ``\bwait,``)."""
    spans = sorted({(m.start(), m.end()) for rx in _BROAD for m in rx.finditer(text)}, key=lambda x: (x[0], -x[1]))
    events, end = [], -1
    for a, b in spans:
        if a >= end:
            events.append(Event(a, b, " ".join(text[a:b].lower().split())))
            end = b
    return events


def find_backtracking(text: str, *, sentence_initial_no: bool = False, patterns: str = "paper") -> list[Event]:
    """All backtracking events in ``text``, in order, non-overlapping (longest phrase at a position).

    ``patterns``: ``"paper"`` (the 13 phrases) or ``"authors_broad"`` (the authors' correlation list,
    :data:`AUTHORS_BROAD`). ``sentence_initial_no`` counts "no," only at the start of a sentence or line
    (see the module doc).
    """
    if patterns not in PATTERN_SETS:
        raise ValueError(f"patterns must be one of {PATTERN_SETS}, not {patterns!r}")
    if patterns == "authors_broad":
        found = _broad_events(text)
    else:
        found = [Event(m.start(), m.end(), _ORDER[int(m.lastgroup[1:])]) for m in _PATTERN.finditer(text)]
    return [e for e in found if not (e.phrase == "no," and sentence_initial_no and not _sentence_start(text, e.start))]


def has_backtracking(text: str, *, sentence_initial_no: bool = False, patterns: str = "paper") -> bool:
    """Whether ``text`` contains at least one backtracking event."""
    return bool(find_backtracking(text, sentence_initial_no=sentence_initial_no, patterns=patterns))


def first_event(text: str, *, sentence_initial_no: bool = False, patterns: str = "paper") -> Event | None:
    """The first backtracking event in ``text``, or None."""
    events = find_backtracking(text, sentence_initial_no=sentence_initial_no, patterns=patterns)
    return events[0] if events else None


def event_token_indices(events: Sequence[Event], token_starts: np.ndarray) -> list[int]:
    """Token index of each event: the token whose span contains the event's first character.

    ``token_starts`` is the sorted character start of each token (e.g. ``offset_mapping[:, 0]`` of a
    fast tokenizer on the same text). A leading-space token (" Wait") contains the event's start
    only if its span starts before it, which is what the tokenizer's offsets say.
    """
    starts = np.asarray(token_starts)
    return [max(int(np.searchsorted(starts, e.start, side="right")) - 1, 0) for e in events]


def bands(values: np.ndarray, token_index: np.ndarray, band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of one rollout's per-token projections per band of ``band`` tokens (paper: 500).

    ``values[i]`` is the projection at token ``token_index[i]`` (e.g. index within the response).
    Returns ``(starts, means, counts)`` over bands 0..last, dense: ``starts[k] = k * band``, ``means[k]``
    the NaN-ignoring mean of the values whose token index falls in ``[k*band, (k+1)*band)``, NaN
    where the band has no finite value, and ``counts[k]`` the number of finite values averaged.
    """
    if band <= 0:
        raise ValueError(f"band must be positive, got {band}")
    values = np.asarray(values, dtype=float).ravel()
    token_index = np.asarray(token_index).ravel()
    if values.shape != token_index.shape:
        raise ValueError(f"values {values.shape} and token_index {token_index.shape} differ in shape")
    if values.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0, dtype=int)
    if token_index.min() < 0:
        raise ValueError("token indices must be non-negative")
    which = token_index.astype(int) // band
    n = int(which.max()) + 1
    ok = np.isfinite(values)
    sums = np.bincount(which[ok], weights=values[ok], minlength=n)
    counts = np.bincount(which[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.arange(n) * band, means, counts


def full_windows(event_tokens: Sequence[Sequence[int]], lengths: Sequence[int], window: int):
    """The events whose whole window ``t-window .. t+window`` lies inside their rollout (as the authors keep
    them: a partial window changes which events contribute at each offset, and along a positional ramp that
    alone bends the curve). Returns ``(kept, n_dropped)``: per rollout the kept token indices (in the given
    order), and how many events were dropped for a partial window."""
    if window < 0:
        raise ValueError(f"window must be non-negative, got {window}")
    if len(event_tokens) != len(lengths):
        raise ValueError(f"{len(event_tokens)} event lists but {len(lengths)} lengths")
    kept, dropped = [], 0
    for tokens, n in zip(event_tokens, lengths):
        ok = [int(t) for t in tokens if int(t) - window >= 0 and int(t) + window < int(n)]
        kept.append(ok)
        dropped += len(tokens) - len(ok)
    return kept, dropped


def event_windows(projections: Sequence[np.ndarray], event_tokens: Sequence[Sequence[int]], window: int):
    """Every event's values at offsets ``-window..+window``: ``(windows, rollout)``, an ``(n_events,
    2*window+1)`` array (NaN outside the rollout or where the value is NaN) and each row's rollout index."""
    if len(projections) != len(event_tokens):
        raise ValueError(f"{len(projections)} rollouts but {len(event_tokens)} event lists")
    offsets = np.arange(-window, window + 1)
    rows, owner = [], []
    for r, (proj, events) in enumerate(zip(projections, event_tokens)):
        proj = np.asarray(proj, dtype=float).ravel()
        for t in events:
            pos = int(t) + offsets
            inside = (pos >= 0) & (pos < proj.size)
            vals = np.full(offsets.size, np.nan)
            vals[inside] = proj[pos[inside]]
            rows.append(vals)
            owner.append(r)
    return np.array(rows).reshape(len(rows), offsets.size), np.array(owner, dtype=int)


def _window_mean(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(windows)
    counts = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, np.where(ok, windows, 0.0).sum(0) / np.maximum(counts, 1), np.nan)
    return mean, counts


def event_locked(
    projections: Sequence[np.ndarray], event_tokens: Sequence[Sequence[int]], window: int, full_window: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean projection at offsets ``-window..+window`` around each event token (paper Fig 6).

    ``projections[r]`` is rollout r's per-token projection; ``event_tokens[r]`` its event token
    indices (empty for none). Every event weighs the same. ``full_window`` (default, the authors' rule)
    keeps only events with the whole window inside the rollout (:func:`full_windows`); without it, positions
    outside the rollout are skipped, so ``counts`` falls at the edges. NaN values are skipped either way.
    Returns ``(offsets, mean, counts)``; ``mean`` is NaN where ``counts`` is 0.
    """
    if window < 0:
        raise ValueError(f"window must be non-negative, got {window}")
    if full_window:
        event_tokens = full_windows(event_tokens, [np.asarray(p).size for p in projections], window)[0]
    windows, _ = event_windows(projections, event_tokens, window)
    return (np.arange(-window, window + 1), *_window_mean(windows))


def matched_controls(
    event_tokens: Sequence[Sequence[int]], control_lengths: Sequence[int], seed: int = 0, window: int = 0
) -> tuple[list[list[int]], int]:
    """Control positions for the event-locked curve: one per event, at the same token index.

    For each event token t (over all backtracking rollouts, in order) draws, with a seeded
    generator, a rollout among the non-backtracking ones long enough to hold token t and its window
    (``control_lengths[c] > t + window``) and takes its position t. Returns ``(positions, n_unmatched)``:
    ``positions[c]`` lists the (sorted) positions drawn in control rollout c, ready for
    ``event_locked(control_projections, positions, window)``; ``n_unmatched`` counts events no
    control rollout was long enough for (dropped).
    """
    rng = np.random.default_rng(seed)
    lengths = np.asarray(control_lengths, dtype=int)
    positions: list[list[int]] = [[] for _ in range(lengths.size)]
    unmatched = 0
    for events in event_tokens:
        for t in events:
            candidates = np.flatnonzero(lengths > int(t) + window)
            if candidates.size == 0:
                unmatched += 1
                continue
            positions[int(rng.choice(candidates))].append(int(t))
    return [sorted(p) for p in positions], unmatched


# ------------------------------------------------------------------------------------ notebook 05 steps

PLACEBO = re.compile(r"(?:(?<=^)|(?<=[\n.!?]\s)|(?<=\n))(So|Then|Next)\b")


def placebo_events(text: str, avoid: Sequence[Event] = ()) -> list[Event]:
    """Sentence-initial "So", "Then", "Next": ordinary discourse words that are not backtracking, the
    placebo for the event-locked curve (occurrences overlapping a backtracking event are skipped)."""
    out = []
    for m in PLACEBO.finditer(text):
        if not any(e.start < m.end() and m.start() < e.end for e in avoid):
            out.append(Event(m.start(), m.end(), m.group(1).lower()))
    return out


def rollout_projections(model, tokenizer, gens, directions: dict, **extract_kwargs):
    """Per-token ``cos(h_t, u_k)`` over each rollout's generated text at every layer of ``directions``
    (``{layer: (K, d)}``), through :func:`vaxis.extract` (reduced on the device; never every layer's
    activations of every token at once). Returns ``(projections, token_starts)``: per rollout an
    ``(n_tokens, n_layers, K)`` array (empty for an empty rollout) and each token's character start
    relative to the rollout text."""
    from ..core.extract import extract

    keep = [i for i, g in enumerate(gens) if g.text.strip()]
    projections = [np.zeros((0, len(directions), 0))] * len(gens)
    starts = [np.zeros(0, dtype=int)] * len(gens)
    if not keep:
        return projections, starts
    texts = [gens[i].prompt + gens[i].prefill + gens[i].text for i in keep]
    offsets = [len(gens[i].prompt) + len(gens[i].prefill) for i in keep]
    spans = [{"rollout": [(o, len(t))]} for o, t in zip(offsets, texts)]
    stats = extract(model, tokenizer, texts, spans, layers=sorted(directions), directions=directions, **extract_kwargs)
    for j, i in enumerate(keep):
        enc = tokenizer(texts[j], return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
        toks = stats.token_indices["rollout"][j].numpy()
        projections[i] = stats.projections["rollout"][j].numpy()
        starts[i] = np.array([enc[t][0] - offsets[j] for t in toks], dtype=int)
    return projections, starts


def event_curves(projections, starts, texts, li: int, window: int, seed: int = 0, *, patterns: str = "paper",
                 full_window: bool = True) -> dict:  # fmt: skip
    """Event-locked mean projection (column 0, layer index ``li``) around backtracking events (``patterns``, see
    :func:`find_backtracking`), beside two controls on the same plot: the same offsets at matched token indices
    of rollouts without any event (each long enough for the whole window), and around placebo words ("So",
    "Then", "Next"). Events on the same token count once; ``full_window`` (default, as the authors) keeps only
    events and placebo words with the whole window inside the rollout. ``{name: (offsets, mean, counts)}`` plus
    ``"windows"`` (``{name: (windows, rollout index)}``, :func:`event_windows`), ``"n_events"`` (events used),
    ``"n_placebo"``, ``"unmatched"`` (events without a long-enough control) and ``"dropped"`` (``{"events",
    "placebo words"}``: how many a partial window dropped)."""
    events = [find_backtracking(t, patterns=patterns) for t in texts]
    series = [p[:, li, 0] if len(p) else np.zeros(0) for p in projections]
    lengths = [len(x) for x in series]
    tokens = [sorted(set(event_token_indices(e, s))) if len(s) else [] for e, s in zip(events, starts)]
    placebo = [sorted(set(event_token_indices(placebo_events(t, e), s))) if len(s) else []
               for t, e, s in zip(texts, events, starts)]  # fmt: skip
    w = window if full_window else -1
    dropped = {"events": 0, "placebo words": 0}
    if full_window:
        tokens, dropped["events"] = full_windows(tokens, lengths, window)
        placebo, dropped["placebo words"] = full_windows(placebo, lengths, window)
    clean = [i for i, e in enumerate(events) if not e and lengths[i]]
    positions, unmatched = matched_controls(tokens, [lengths[i] for i in clean], seed, window=max(w, 0))
    control = [[] for _ in series]
    for c, i in enumerate(clean):
        control[i] = positions[c]
    out, windows = {}, {}
    for name, toks in (("backtracking", tokens), ("matched index, no backtracking", control),
                       ("placebo words", placebo)):  # fmt: skip
        windows[name] = event_windows(series, toks, window)
        out[name] = (np.arange(-window, window + 1), *_window_mean(windows[name][0]))
    out.update(windows=windows, n_events=sum(map(len, tokens)), n_placebo=sum(map(len, placebo)),
               unmatched=unmatched, dropped=dropped)  # fmt: skip
    return out


def check_backtracking_keys(p, cfg) -> None:
    """The profile keys notebooks 05 and 10 both read: GSM8K problems (enough ship), sampled rollouts, the window
    around events. ``p``: a :class:`vaxis.run.checks.Problems`."""
    from ..data.mathdata import load_problems

    n = cfg["backtracking_problems"]
    if p.integer("backtracking_problems", n, 1):
        p.enough("backtracking_problems", n, len(load_problems("gsm8k")), "GSM8K problems ship")
    p.integer("backtracking_samples", cfg["backtracking_samples"], 1)
    p.integer("backtracking_max_new_tokens", cfg["backtracking_max_new_tokens"], 1)
    p.integer("backtracking_window", cfg["backtracking_window"], 1)


def check_parameters(cfg, *, axis_path=None, strengths=(-16.8, -8.4, 0.0, 8.4, 16.8), n_boot=200,
                     patterns="paper", **common) -> list[str]:  # fmt: skip
    """Notebook 05's parameters, before the model is loaded (:mod:`vaxis.run.checks`): ``strengths`` (with 0),
    ``n_boot``, ``patterns`` (:data:`PATTERN_SETS`), the axis, :func:`check_backtracking_keys`, the band, and the steering sweep (problems among those
    read, random strengths among ``strengths``). Raises :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..run.checks import Problems

    p = Problems.for_notebook(5, cfg, **common)
    strengths = p.numbers("strengths", strengths, zero=True)
    p.integer("n_boot", n_boot, 1)
    p.choice("patterns", patterns, PATTERN_SETS)
    p.axis(axis_path)
    check_backtracking_keys(p, cfg)
    p.integer("backtracking_band", cfg["backtracking_band"], 1)
    n, steer = cfg["backtracking_problems"], cfg["backtracking_steer_problems"]
    if p.integer("backtracking_steer_problems", steer, 1) and p.whole(n):
        p.enough("backtracking_steer_problems", steer, n, "problems are read (backtracking_problems)")
    p.integer("backtracking_steer_tokens", cfg["backtracking_steer_tokens"], 1)
    p.integer("backtracking_random_directions", cfg["backtracking_random_directions"], 0)
    key = "backtracking_random_strengths"
    p.subset(key, p.numbers(key, cfg[key]), strengths, "the steering strengths")
    return p.done()
