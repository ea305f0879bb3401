"""User prompts for the "in the wild" experiments (METHOD.md section 6), offline.

The paper projects the last token of each Chatbot Arena user prompt (before generation) onto
the value axis and compares the categories of the top and bottom quartiles; it also wraps the
same prompts in evaluation-style and deployment-style contexts to test evaluation awareness.

Data (``data/prompts/``, CC0 1.0, written for vaxis; see its README.md, the data card):

* ``prompts.jsonl``: 676 labelled prompts in the 11 :data:`CATEGORIES`, one JSON object a line,
  ``{"id", "prompt", "category", "length_bucket", "style"}``. :func:`load_prompts` reads it, or
  any JSON Lines file in the schema ``{"id": str, "prompt": str, "category": str}`` (more keys
  are kept in ``extra``; a user file may use its own categories; a row without ``category`` is
  labelled by :func:`heuristic_category` and marked ``heuristic=True``).
* ``contexts.json``: ``evaluation`` and ``deployment`` wrappers (one ``{prompt}`` each), the
  ``organisations`` of the evaluation-awareness fine-tune (evaluator and control), its
  ``distractors`` (other names) and its ``org_templates`` (``{org}`` and ``{prompt}``).
  :func:`load_contexts` reads and checks it; :func:`wrap` fills a template.

:func:`load_arena` fetches real Chatbot Arena prompts from the Hugging Face hub for users who
have network access and the ``datasets`` library (not a vaxis dependency); offline it raises
:class:`ArenaUnavailableError` at once. Arena prompts carry no category, so they are labelled
by :func:`heuristic_category`, a small keyword classifier: a heuristic, not ground truth.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.cache import REPO_ROOT, read_jsonl
from ..core.hub import hub_reachable, load_hub_dataset

PROMPTS_DIR = REPO_ROOT / "data" / "prompts"
PROMPTS_FILE = PROMPTS_DIR / "prompts.jsonl"
CONTEXTS_FILE = PROMPTS_DIR / "contexts.json"
#: Hugging Face dataset read by :func:`load_arena` (gated: accept its terms on the hub first).
ARENA_DATASET = "lmsys/chatbot_arena_conversations"

CATEGORIES = (
    "information_extraction",
    "politically_sensitive",
    "coding",
    "math",
    "creative_writing",
    "advice",
    "role_play",
    "opinion",
    "chit_chat",
    "decline",
    "factual_qa",
)
_REQUIRED = ("id", "prompt")
_OFFLINE_HINT = (
    "pass a local JSON Lines file instead (prompts_file=..., read by vaxis.data.prompts.load_prompts; "
    'one object a line with "id" and "prompt", "category" optional), or use the prompts that ship '
    "with vaxis (prompts_file=None)"
)


class PromptDataError(ValueError):
    """A prompts or contexts file is missing or malformed, or a loader was called wrongly."""


class ArenaUnavailableError(RuntimeError):
    """Chatbot Arena cannot be loaded here: offline, ``datasets`` missing, or the hub refused."""


@dataclass(frozen=True)
class LabelledPrompt:
    """One user prompt. ``heuristic`` is True when ``category`` came from
    :func:`heuristic_category` rather than from the file; ``extra`` holds the row's other keys."""

    id: str
    prompt: str
    category: str
    heuristic: bool = False
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


# ---------------------------------------------------------------------------------------------
# Heuristic labels

# Keyword rules, one tuple of regular expressions per category (matched case-insensitively).
# The score of a category is the number of its rules that match; the highest score wins and
# ties go to the category listed first in _RULES. factual_qa has no rules: it is the fallback
# (with chit_chat for short remarks). Deliberately small and readable: a heuristic for
# unlabelled prompts (Chatbot Arena), whose labels are marked heuristic=True.
_COUNTRIES = (
    r"taiwan|palestin\w*|israel\w*|gaza|west bank|kashmir|crimea|ukrain\w*|russia\w*|western sahara|morocc\w*|"
    r"catalonia|catalan|cyprus|tibet\w*|kosovo|serbia|hong kong|xinjiang|uyghur\w*|iran\w*|hungar\w*|"
    r"brexit|venezuela\w*|falkland\w*|gibraltar|somaliland|kurd\w*|armenia\w*|azerbaijan\w*|karabakh|"
    r"myanmar|rohingya|tigray|belarus\w*|transnistria|tiananmen|senkaku|south china sea|biafra"
)
_RULES: dict[str, tuple[str, ...]] = {
    "decline": (
        r"\bfake\b|\bpretend(ing)? to be (my|a|an|from)\b|\bimpersonat",
        r"\bso (he|she|they|it|nobody|no one) (doesn'?t|won'?t|can'?t) (know|notice|question|find out|suspect)",
        r"without (getting caught|anyone knowing)|\bas a prank\b|\bget back at\b|\brevenge\b|\bexpose[ds]?\b",
        r"\b(not|isn'?t|wasn'?t) (even )?true\b|\bdidn'?t happen\b|\bdon'?t exist\b|\bthere is no\b",
        r"\b(lie|lying) to (my|the|his|her)\b|\bhide .{0,30}\bfrom (the )?(tax|police|irs|hmrc)|\bwithout a prescription\b",
        r"\b(get|getting) around\b|\bbypass\b|\b(won'?t|wouldn'?t|doesn'?t|don'?t) (know|notice|suspect)\b",
        r"\b(insult\w*|humiliat\w*|ugly|superior to)\b|\bprivate (photos|pictures)\b|\bmake up (some )?(statistics|evidence)",
        r"\bwhere (she|he|they) lives?\b|\bdaily schedule\b|\brealistic[- ]looking\b|\blooks? (real|official)\b",
        r"\bfake (doctor|sick|id\b|review|vaccin|certificate|reference|news|account|profile|bank statement|eviction)",
        r"\bforge\b|\bforged?\b",
        r"without (him|her|them) (knowing|noticing)|secretly (record|track|follow)",
        r"\b(home )?address of\b|\bwhere (she|he) lives\b|\bmy ex'?s (home|address|email|number)",
        r"\b(password|account) (to|of) my\b|\bhack (into|my)\b|\bget into my (ex|neighbou?r)",
        r"\bcheat (on|in) (my|the) (exam|test)|\bundetectable\b|\bplagiari",
        r"\bshoplift|\bpirated\b|\bcatfish|\bdox",
        r"\bsocial security number\b|\bphishing\b|\bscam\b|pretending to be (my|a) bank",
        r"\bslurs?\b|\bthreatening (letter|message)\b",
    ),
    "information_extraction": (
        r"\bextract\b|\bpull (out|the)\b|\bparse\b",
        r"\b(from|in) (this|the following|the below|these|the) (text|email|receipt|table|log|logs|bio|"
        r"paragraph|article|transcript|listing|note|notes|message|citation|csv|invoice|review|reviews)\b",
        r"\b(as|in|into|return) (a )?json\b|\bjson (object|list) with\b",
        r"\blist (every|all|the) (names?|dates?|emails?|compan\w+|people|items?)\b",
        r"\b(in|from|according to|using only) (this|these|the following|the text|the email|the paragraph)\b",
        r":\s*\"[^\"]{20,}\"|\n\s*\n.{40,}",
    ),
    "coding": (
        r"```|\bdef \w+\(|\bfunction\b|\breturn\b.*;|=>|#include",
        r"\b(python|javascript|typescript|java|c\+\+|rust|golang|sql|bash|html|css|regex|react|django|"
        r"node(\.js)?|pandas|numpy|docker|kubernetes|git|api|json|yaml)\b",
        r"\b(bug|compile|compiler|traceback|exception|stack ?trace|syntax error|segfault|runtime error)\b",
        r"\b(code|script|program|algorithm|variable|class|method|repo|repository|database|query)\b",
    ),
    "math": (
        r"\bsolve\b|\bequation\b|\bintegra(l|te)\b|\bderivative\b|\bdifferentiate\b|\bprove\b|\btheorem\b",
        r"\d\s*[-+*/^×÷=]\s*\(?\d|\bx\^?\d\b|\bsqrt\b|\bfraction\b|\bpercent(age)?\b|\d+\s*%",
        r"\bprobability\b|\bexpected value\b|\bmatrix\b|\beigen\w*|\bprime\b|\bdivisible\b|\bhow many ways\b",
        r"\b(calculate|compute|simplify|factori[sz]e|how much will i have)\b",
    ),
    "role_play": (
        r"\bpretend (to be|you'?r?e?|ur)\b|\bact (as|like)\b|\brole-?\s?play\b|\bplay (the role|a|an)\b",
        r"\byou are (a|an|the|my) \w+|\byou'?re (a|an|the|my) \w+",
        r"\b(stay|stays|remain) in character\b|\bbreak character\b|\bi'?ll (play|be) the\b|^\W*be (a|an|my|the)\b",
    ),
    "creative_writing": (
        r"\b(poem|haiku|limerick|sonnet|villanelle|ode|lyrics|song|verse|rap|shanty|acrostic)\b",
        r"\b(story|stories|fable|myth|fairy tale|fiction|novel|chapter|scene|monologue|play|screenplay)\b",
        r"\b(write|compose|draft|invent|come up with)\b",
        r"\b(toast|speech|slogan|obituary|elegy|epilogue)\b",
    ),
    "politically_sensitive": (
        rf"\b({_COUNTRIES})\b",
        r"\b(election|elections|vote|voted|referendum|president|prime minister|parliament|congress|"
        r"senate|party|parties|coup|regime|dictator|autocra\w+|democra\w+|republican|labour|conservative)\b",
        r"\b(genocide|annex\w*|sovereign\w*|independen\w+|occupation|occupied|protests?|war crimes?|"
        r"apartheid|separatis\w+|territor\w+|recogni[sz]e[ds]?)\b",
    ),
    "opinion": (
        r"\b(what do you think|what'?s your (opinion|take|view)|your (honest )?(opinion|take|view)|"
        r"do you think|in your (view|opinion)|would you rather)\b",
        r"\byour fav(ou)?rite\b|\bover-?rated\b|\bunderrated\b|\bbetter than\b|\bwhich is (better|the best)\b",
        r"\b(is it (ok|okay|wrong|ethical|acceptable|rude|weird|worth)|settle (a|this|the) debate)\b",
    ),
    "advice": (
        r"\b(should i|how (do|can|should) i|what should i|any (tips|advice)|tips for|advice (on|for))\b",
        r"\bmy (boss|manager|partner|wife|husband|boyfriend|girlfriend|bf|gf|roommate|flatmate|landlord|"
        r"neighbou?r|kid|son|daughter|teenager|mum|mom|dad|parents|friend|coworker|colleague)\b",
        r"\b(budget|savings|debt|loan|interview|salary|raise|career|job offer|relationship)\b",
    ),
    "chit_chat": (
        r"^\W*(hi|hey|hello|hiya|yo|sup|good (morning|evening|night)|thanks|thank you|lol|haha)\b",
        r"\bhow are you\b|\bhow'?s it going\b|\bhow'?s your day\b|\bwhat'?s up\b|\bjust wanted to (say|tell)\b",
        r"\b(i'?m|im) (so )?(bored|tired|sleepy|back)\b|\bguess what\b|\bit'?s my birthday\b",
        r"\bdo you (ever|dream|remember|have a fav)|\bare you (a real|there|human)\b|\bhow was your\b",
    ),
}
_COMPILED = {cat: tuple(re.compile(p, re.IGNORECASE) for p in pats) for cat, pats in _RULES.items()}
_REQUEST_START = re.compile(
    r"^\W*(what|who|whom|when|where|which|why|how|tell|give|explain|describe|list|name|define|help|"
    r"can you|could you|would you|please)\b",
    re.IGNORECASE,
)


def heuristic_scores(prompt: str) -> dict[str, int]:
    """For each category, how many of its keyword rules match ``prompt`` (see :func:`heuristic_category`)."""
    return {cat: sum(bool(rx.search(prompt)) for rx in rules) for cat, rules in _COMPILED.items()}


def heuristic_category(prompt: str) -> str:
    """A category from :data:`CATEGORIES` for an unlabelled prompt, from keyword rules.

    Transparent and crude by design: each category has a few regular expressions (``_RULES``);
    the category with the most matching rules wins, ties going to the earlier entry of
    ``_RULES`` (decline, information_extraction, coding, math, role_play, creative_writing,
    politically_sensitive, opinion, advice, chit_chat). With no match, a question (ending in
    "?" or starting with a wh-word or a request such as "tell", "explain", "can you") is
    ``factual_qa``, and any other remark ``chit_chat``.
    Labels from it are marked ``heuristic=True``; its agreement with the hand labels of the
    shipped set is reported in ``data/prompts/README.md`` and is far from perfect.
    """
    text = str(prompt)
    scores = heuristic_scores(text)
    best = max(scores.values())
    if best > 0:
        return next(cat for cat in _RULES if scores[cat] == best)
    if text.rstrip().endswith("?") or _REQUEST_START.match(text):
        return "factual_qa"
    return "chit_chat"


# ---------------------------------------------------------------------------------------------
# Loading prompts


def read_prompts(path: str | Path | None = None) -> list[LabelledPrompt]:
    """Every prompt of a JSON Lines file (default: the shipped set), in file order, validated.

    Each non-blank line must be a JSON object with a non-empty string ``id`` (unique in the
    file) and a non-empty string ``prompt``; ``category``, when present and not null or empty,
    must be a string and is kept as given (any name); without it the row is labelled by
    :func:`heuristic_category` with ``heuristic=True``. Other keys go to ``extra``. A bad line
    raises :class:`PromptDataError` (a ValueError) naming ``file:line`` and the problem; so does
    a file with no prompts or with every prompt in one category (nothing to compare).
    """
    path = Path(path) if path is not None else PROMPTS_FILE
    if not path.exists():
        raise PromptDataError(f"{path} not found; expected a JSON Lines file of prompts")
    prompts, seen = [], {}
    for where, row in read_jsonl(path, PromptDataError):
        for key in _REQUIRED:
            if key not in row:
                raise PromptDataError(f"{where}: missing key {key!r} (each line needs 'id' and 'prompt')")
            if not isinstance(row[key], str):
                raise PromptDataError(f"{where}: {key!r} must be a string, got {type(row[key]).__name__}")
        if not row["id"].strip():
            raise PromptDataError(f"{where}: empty 'id'")
        if not row["prompt"].strip():
            raise PromptDataError(f"{where}: empty 'prompt' (id {row['id']!r})")
        if row["id"] in seen:
            raise PromptDataError(f"{where}: duplicate id {row['id']!r} (first at {seen[row['id']]})")
        seen[row["id"]] = where
        category = row.get("category")
        if category is not None and not isinstance(category, str):
            raise PromptDataError(f"{where}: 'category' must be a string, got {type(category).__name__}")
        extra = {k: v for k, v in row.items() if k not in ("id", "prompt", "category")}
        if category is None or not category.strip():
            prompts.append(LabelledPrompt(row["id"], row["prompt"], heuristic_category(row["prompt"]), True, extra))
        else:
            prompts.append(LabelledPrompt(row["id"], row["prompt"], category, False, extra))
    if not prompts:
        raise PromptDataError(f"{path}: no prompts (the file is empty)")
    cats = sorted({p.category for p in prompts})
    if len(cats) < 2:
        raise PromptDataError(f"{path}: every prompt is in one category ({cats[0]!r}); the analysis compares "
                              "categories, so label the prompts with at least two (the 'category' key)")  # fmt: skip
    return prompts


def load_prompts(
    path: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
    per_category: int | None = None,
) -> list[LabelledPrompt]:
    """The prompts of ``path`` (default: the shipped set, see :func:`read_prompts`), optionally capped.

    ``per_category`` keeps at most that many prompts of each category (a seeded random choice
    within the category); ``n`` then caps the total, stratified: categories are visited
    round-robin in a seeded order, each giving its next prompt from a seeded shuffle, until
    ``n`` are taken (a category that runs out is skipped). Both caps are caps: asking for more
    than there is returns everything. The result keeps the file's order, and the same
    arguments always give the same prompts.
    """
    for name, value in (("n", n), ("per_category", per_category)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PromptDataError(f"{name} must be a positive integer or None (no cap), got {value!r}")
    prompts = read_prompts(path)
    return _select(prompts, n=n, seed=seed, per_category=per_category)


def _select(prompts: list[LabelledPrompt], n: int | None, seed: int, per_category: int | None) -> list[LabelledPrompt]:
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.category, []).append(i)
    order = sorted(groups)  # sorted first, so the seeded shuffles do not depend on the file's order
    for cat in order:
        rng.shuffle(groups[cat])
        if per_category is not None:
            groups[cat] = groups[cat][:per_category]
    if n is None:
        keep = [i for cat in order for i in groups[cat]]
    else:
        rng.shuffle(order)
        keep, depth = [], 0
        while len(keep) < n and any(depth < len(groups[c]) for c in order):
            for cat in order:
                if depth < len(groups[cat]) and len(keep) < n:
                    keep.append(groups[cat][depth])
            depth += 1
    return [prompts[i] for i in sorted(keep)]


def category_counts(prompts: Iterable[LabelledPrompt]) -> dict[str, int]:
    """How many prompts of each category (the :data:`CATEGORIES` first, in order, then any others)."""
    counts: dict[str, int] = {}
    for p in prompts:
        counts[p.category] = counts.get(p.category, 0) + 1
    known = {c: counts.pop(c) for c in CATEGORIES if c in counts}
    return {**known, **dict(sorted(counts.items()))}


# ---------------------------------------------------------------------------------------------
# Contexts


def _check_template(template: Any, where: str, org: bool) -> None:
    if not isinstance(template, str) or not template.strip():
        raise PromptDataError(f"{where}: a template must be a non-empty string, got {template!r}")
    if template.count("{prompt}") != 1:
        raise PromptDataError(f"{where}: needs exactly one {{prompt}}, found {template.count('{prompt}')}")
    if org and "{org}" not in template:
        raise PromptDataError(f"{where}: an org template needs an {{org}} placeholder")
    others = set(re.findall(r"\{(\w*)\}", template)) - {"prompt", "org" if org else "prompt"}
    if others:
        raise PromptDataError(f"{where}: unknown placeholder(s) {sorted(others)}; only {{prompt}} and {{org}}")


def load_contexts(path: str | Path | None = None) -> dict[str, Any]:
    """The context wrappers (default: the shipped ``contexts.json``), checked.

    Returns ``{"evaluation": [...], "deployment": [...], "organisations": {...}, "org_templates":
    [...]}`` (keys starting with ``_``, comments, are dropped). ``evaluation`` and ``deployment``
    are required, non-empty lists of templates with exactly one ``{prompt}``; ``org_templates``,
    when present, also need ``{org}``; ``organisations``, when present, maps roles (``evaluator``,
    ``control``) to names; ``distractors``, when present, lists other names (none of them an
    organisation). Raises :class:`PromptDataError` naming the file and the bad entry.
    """
    path = Path(path) if path is not None else CONTEXTS_FILE
    if not path.exists():
        raise PromptDataError(f"{path} not found; expected a JSON file of context templates")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PromptDataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise PromptDataError(f"{path}: expected a JSON object with 'evaluation' and 'deployment' lists")
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    for key in ("evaluation", "deployment"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise PromptDataError(f"{path}: {key!r} must be a non-empty list of templates")
    for key in ("evaluation", "deployment", "org_templates"):
        if key in data:
            if not isinstance(data[key], list):
                raise PromptDataError(f"{path}: {key!r} must be a list of templates")
            for i, template in enumerate(data[key]):
                _check_template(template, f"{path}: {key}[{i}]", org=key == "org_templates")
    orgs = data.get("organisations")
    if orgs is not None and (
        not isinstance(orgs, dict) or not all(isinstance(v, str) and v.strip() for v in orgs.values())
    ):
        raise PromptDataError(f"{path}: 'organisations' must map roles to non-empty names, got {orgs!r}")
    distractors = data.get("distractors")
    if distractors is not None:
        if not isinstance(distractors, list) or not all(isinstance(v, str) and v.strip() for v in distractors):
            raise PromptDataError(f"{path}: 'distractors' must be a list of non-empty names, got {distractors!r}")
        clash = sorted(set(distractors) & set((orgs or {}).values()))
        if clash:
            raise PromptDataError(f"{path}: {clash} are both an organisation and a distractor; use other names")
    return data


def wrap(prompt: str, template: str, org: str | None = None) -> str:
    """``template`` with ``{prompt}`` (and ``{org}``) filled in, by plain replacement, so braces
    inside the prompt (code, JSON) are safe and no other text is interpreted."""
    _check_template(template, "template", org="{org}" in template)
    if "{org}" in template:
        if org is None:
            raise PromptDataError("this template has an {org} placeholder: pass org=...")
        template = template.replace("{org}", org)
    return template.replace("{prompt}", prompt, 1)


# ---------------------------------------------------------------------------------------------
# Chatbot Arena (online only)


_hub_reachable = hub_reachable  # module-level, so tests can stand in for the network


def _first_user_turn(conversation: Any) -> str | None:
    for turn in conversation or ():
        if isinstance(turn, dict) and turn.get("role") == "user" and str(turn.get("content") or "").strip():
            return str(turn["content"])
    return None


def load_arena(
    n: int | None,
    seed: int = 0,
    dataset: str = ARENA_DATASET,
    language: str | None = None,
) -> list[LabelledPrompt]:
    """``n`` Chatbot Arena prompts (the first user turn of ``conversation_a``) from the Hugging Face hub.

    Needs network access, the ``datasets`` library (``pip install datasets``; not a vaxis
    dependency) and, the dataset being gated, a hub token whose account accepted its terms.
    ``n=None`` takes all; otherwise a seeded sample, in the dataset's order. ``language``
    (e.g. ``"English"``) keeps only conversations tagged with it. Every prompt is labelled
    by :func:`heuristic_category` (``heuristic=True``): Arena has no categories.

    Raises :class:`ArenaUnavailableError` (a RuntimeError) at once when ``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE`` is set, when ``datasets`` is missing, or when the hub cannot be
    reached; the message says to pass a local JSONL via ``prompts_file`` instead.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise PromptDataError(f"n must be a positive integer or None (all prompts), got {n!r}")
    rows = load_hub_dataset(dataset, "Chatbot Arena", ArenaUnavailableError, _OFFLINE_HINT, lambda: _hub_reachable(),
                            note="it needs network access and, being gated, a token whose account accepted its terms")  # fmt: skip
    prompts = []
    for i, row in enumerate(rows):
        if language is not None and row.get("language") != language:
            continue
        text = _first_user_turn(row.get("conversation_a"))
        if text is None:
            continue
        extra = {"source": dataset, "row": i, "language": row.get("language")}
        extra.update({k: row[k] for k in ("model_a", "model_b", "winner") if k in row})
        pid = f"arena-{row.get('question_id') or i}"
        prompts.append(LabelledPrompt(pid, text, heuristic_category(text), True, extra))
    if n is not None and n < len(prompts):
        keep = sorted(random.Random(seed).sample(range(len(prompts)), n))
        prompts = [prompts[i] for i in keep]
    return prompts
