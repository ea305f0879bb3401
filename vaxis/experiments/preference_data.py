"""Preference data for the DPO experiments (METHOD.md sections 5 and 8; notebook 07).

Everything here is written for this project and built offline, deterministically from a seed:

* :data:`OPTION_SETS`: 18 sets of 5 everyday, countable things (the authors' 15 categories plus drinks,
  flowers and vehicles, including their default targets potato, hammer, marble, candle and accordion).
  Items are single lowercase words, unique across sets, and no item is another's word, plural or
  substring at a word boundary, so :func:`parse_choice` can tell any two apart. Colours and cities are
  left out on purpose: the sentence and code templates treat a word as a countable thing ("a potato",
  "counts the potatoes"), which reads wrongly for "red" or "Paris".
* :func:`choice_prompts`: one of 15 system prompts, one of 14 user templates, one of 4 list formats
  (numbered, bulleted, comma-separated, dash) and a random order of all 5 options. No prompt names a
  target or favours one: the text does not depend on which item a model is later trained on, so pairs for
  different targets from the same prompts share their prompt text exactly. User texts within a call are
  distinct, and a shorter call is a prefix of a longer one (same seed).
* :func:`split_prompts`: a seeded train/eval split by user text (identical user texts go to the same
  side), so no prompt text is shared; the 15 system prompts are necessarily shared.
* :func:`answer` / :func:`parse_choice`: 12 answer templates x 15 generic reasons (no reason names an
  item); the first option a free answer names (plural "s"/"es"/"ies" allowed, word-bounded).
* :func:`dpo_pairs`: TRL's conversational preference format. Chosen and rejected use the same template
  and reason and differ only in the item. The template/reason draws depend on the seed and mode, not on
  the target, so two targets' datasets differ only where the items differ.
* :func:`word_sentences` / :func:`code_prompts`: neutral sentences using a word once, and requests for
  short Python code themed on a word. Both pick templates in an order that depends on the seed only, so
  a preferred word and its control words get the same templates (a paired comparison).

``SCHEMA`` (one JSON object per line in the files :func:`write_pairs` writes):

* ``prompt``: ``[{"role": "system", "content": str}, {"role": "user", "content": str}]``
* ``chosen`` / ``rejected``: ``[{"role": "assistant", "content": str}]``
* ``id`` (the prompt's id, e.g. ``"fruits:0007"``), ``target`` (the trained item), ``mode``
  (``"prefer"``: chosen_item == target; ``"avoid"``: rejected_item == target), ``chosen_item``,
  ``rejected_item`` (two different options, both listed in the user message). No other keys. TRL's
  DPOTrainer ignores the metadata columns (they are not model inputs).

:func:`validate_pairs` checks all of this, and that chosen and rejected differ only in the item.
:func:`parse_choice` takes the first option named, so "not the apple, the mango" reads as apple.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaxis.core.cache import atomic_write_jsonl

OPTION_SETS: dict[str, tuple[str, ...]] = {
    "fruits": ("apple", "banana", "grapefruit", "mango", "cherry"),
    "vegetables": ("potato", "carrot", "broccoli", "cucumber", "onion"),
    "tools": ("hammer", "wrench", "screwdriver", "chisel", "ladder"),
    "instruments": ("accordion", "violin", "trumpet", "piano", "harp"),
    "animals": ("rabbit", "dolphin", "owl", "giraffe", "turtle"),
    "furniture": ("sofa", "armchair", "wardrobe", "bench", "cabinet"),
    "clothing": ("jacket", "sweater", "raincoat", "necktie", "beanie"),
    "kitchen": ("teapot", "spatula", "kettle", "colander", "whisk"),
    "sports": ("skateboard", "racket", "dumbbell", "helmet", "paddle"),
    "electronics": ("camera", "radio", "calculator", "laptop", "speaker"),
    "stationery": ("pencil", "notebook", "stapler", "eraser", "envelope"),
    "outdoor": ("tent", "hammock", "compass", "backpack", "umbrella"),
    "art": ("paintbrush", "easel", "canvas", "sketchbook", "crayon"),
    "home": ("candle", "pillow", "blanket", "vase", "mirror"),
    "toys": ("marble", "kite", "puzzle", "frisbee", "balloon"),
    "drinks": ("milkshake", "smoothie", "lemonade", "espresso", "cappuccino"),
    "flowers": ("tulip", "daisy", "sunflower", "orchid", "lily"),
    "vehicles": ("bicycle", "canoe", "tractor", "scooter", "sailboat"),
}
ALL_ITEMS: tuple[str, ...] = tuple(item for items in OPTION_SETS.values() for item in items)
MODES = ("prefer", "avoid")
FORMATS = ("numbered", "bulleted", "comma", "dash")
SCHEMA = ("id", "prompt", "chosen", "rejected", "target", "mode", "chosen_item", "rejected_item")  # see docstring

SYSTEM_PROMPTS = (
    "Pick the one that appeals to you most and explain your choice briefly.",
    "You are a helpful assistant. When given options, choose one and give a short reason.",
    "Answer with your choice first, then one sentence explaining why.",
    "You have personal tastes. Pick one option and say why in a sentence.",
    "Choose exactly one of the options offered and briefly justify it.",
    "You are a friendly assistant who answers preference questions directly.",
    "When asked to choose, name a single option and keep the explanation short.",
    "Give an honest answer about which option you prefer, in one or two sentences.",
    "You are a thoughtful assistant. Select one option and explain your reasoning briefly.",
    "Respond with the option you would pick and a brief reason.",
    "Always commit to one choice. Keep your answer to two sentences at most.",
    "You are a helpful assistant. Be concise.",
    "Answer the user's question by naming one option and saying why.",
    "Share your preference plainly and explain it in a few words.",
    "You are an assistant with opinions of your own. Pick one and explain briefly.",
)
USER_TEMPLATES = (
    "Which of these would you pick?\n\n{options}",
    "Name one of the following that you like best.\n\n{options}",
    "If you could only have one of these, which would it be?\n\n{options}",
    "Choose one of the options below.\n\n{options}",
    "Which one of these do you prefer?\n\n{options}",
    "Here are a few options:\n\n{options}\n\nWhich one would you choose?",
    "Pick your favourite from this list.\n\n{options}",
    "Out of the following, which one would you go for?\n\n{options}",
    "Which of these appeals to you the most?\n\n{options}",
    "{options}\n\nSelect a single one of these.",
    "You may keep exactly one of these. Which do you keep?\n\n{options}",
    "Tell me which one of these you would take.\n\n{options}",
    "{options}\n\nIf you had to pick one of these right now, which would it be?",
    "Which option stands out to you?\n\n{options}",
)
ANSWER_TEMPLATES = (
    "I'd pick {item}. {reason}",
    "I'd go with the {item}. {reason}",
    "My choice is {item}. {reason}",
    "I'll choose the {item}. {reason}",
    "If I had to choose, it would be the {item}. {reason}",
    "I'm going with {item}. {reason}",
    "My pick would be the {item}. {reason}",
    "I'd say {item}. {reason}",
    "I think I'd take the {item}. {reason}",
    "Out of these, I'd pick {item}. {reason}",
    "I'd have to go with the {item}. {reason}",
    "The one I'd choose is {item}. {reason}",
)
REASONS = (
    "It feels like the most interesting choice.",
    "It just appeals to me more than the others.",
    "Something about it stands out to me.",
    "It seems the most versatile of the options.",
    "I find it the most appealing of the list.",
    "It has a certain charm the others lack.",
    "It's the one I'd enjoy most.",
    "It feels like the most practical pick.",
    "It simply resonates with me.",
    "I like its character.",
    "It strikes me as the most fun.",
    "It seems the most useful to have around.",
    "It's the option I keep coming back to.",
    "It feels the most memorable.",
    "I have a soft spot for it.",
)
SENTENCE_TEMPLATES = (  # {w}: the word; {a}: the word with "a"/"an"
    "I put the {w} on the kitchen table.",
    "There is a picture of {a} in the second chapter of the book.",
    "She wrote the word {w} on the whiteboard.",
    "The catalogue has a page about the {w}.",
    "He mentioned the {w} during the meeting on Tuesday.",
    "A drawing of {a} hangs in the hallway.",
    "The museum guide said a few words about the {w}.",
    "We read a short article about the {w} this morning.",
    "The children were asked to draw {a} in class.",
    "My neighbour asked me about the {w} yesterday.",
    "The next slide shows {a} from the side.",
    "There was {a} in the background of the photo.",
    "The teacher spelled {w} on the board.",
    "A question about the {w} came up in the quiz.",
    "The report includes a short section on the {w}.",
    "I noticed {a} in the shop window on my way home.",
    "The label on the box said {w}.",
    "Someone left a note about the {w} on the desk.",
    "The film has a scene with {a} near the end.",
    "The encyclopedia entry for {w} is two paragraphs long.",
    "In the story, the {w} is described in one sentence.",
    "The crossword answer for seven across was {w}.",
    "They talked about the {w} for a few minutes.",
    "The sign near the door showed {a}.",
)
CODE_TEMPLATES = (  # {w} word, {ws} plural, {ident} snake_case name, {Cls} class name
    "Write a Python function that counts how many strings in a list mention the word '{w}'.",
    "Write a Python class called {Cls} with a name and a weight, and a method that describes it.",
    "Write a Python function named make_{ident} that returns a dictionary describing {a}.",
    "Write a Python function that takes a list of {ws} as dictionaries with a 'size' key and returns the largest.",
    "Write a Python function that stores {ws} in an inventory dictionary and returns how many there are.",
    "Write a short Python function called {ident}_summary that formats the name and colour of {a} as a string.",
    "Write a Python function that keeps only the {ws} whose weight is under two kilograms.",
    "Write a Python generator that yields {ws} from a list one at a time, skipping empty entries.",
    "Write a Python function that groups {ws} by colour into a dictionary of lists.",
    "Write a Python dataclass named {Cls} and a function that creates three of them.",
    "Write a Python function that pairs each {w} in a list with its position and returns the pairs.",
    "Write a Python function that sorts a list of {ws} by price, cheapest first.",
)
_ES_O = frozenset({"potato", "tomato", "mango", "hero", "echo"})


@dataclass(frozen=True)
class Prompt:
    """A choice prompt: all of a set's options in the order shown, under one system prompt."""

    id: str
    set_name: str
    system: str
    user: str
    options: tuple[str, ...]

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


def plural(word: str) -> str:
    """English plural of a single word (regular rules, with ``-o`` -> ``-oes`` for a few words)."""
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", word) or word in _ES_O:
        return word + "es"
    return word + "s"


def article(word: str) -> str:
    """``word`` with "a" or "an" (by its first letter; no item starts with a "you" sound)."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


@functools.lru_cache(maxsize=4096)
def _pattern(item: str) -> re.Pattern:
    forms = {re.escape(item), re.escape(item) + "e?s"}
    if re.search(r"[^aeiou]y$", item):
        forms.add(re.escape(item[:-1]) + "ies")
    return re.compile(r"\b(?:" + "|".join(sorted(forms, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def parse_choice(text: str, options) -> str | None:
    """The option named first in ``text`` (case-insensitive, word-bounded, plural allowed), else None."""
    best: tuple[int, int, str] | None = None
    for item in options:
        m = _pattern(item).search(text)
        if m and (best is None or (m.start(), -len(m.group())) < best[:2]):
            best = (m.start(), -len(m.group()), item)
    return None if best is None else best[2]


def format_options(options, fmt: str) -> str:
    """The options as a numbered, bulleted (``•``), comma-separated (one line) or dash list."""
    if fmt == "numbered":
        return "\n".join(f"{i}. {o}" for i, o in enumerate(options, 1))
    if fmt == "bulleted":
        return "\n".join(f"• {o}" for o in options)
    if fmt == "comma":
        return ", ".join(options)
    if fmt == "dash":
        return "\n".join(f"- {o}" for o in options)
    raise ValueError(f"unknown list format {fmt!r}: use one of {FORMATS}")


def choice_prompts(set_name: str, n: int, seed: int = 0) -> list[Prompt]:
    """``n`` prompts with distinct user texts listing all of the set's options in a random order."""
    if set_name not in OPTION_SETS:
        raise ValueError(f"unknown option set {set_name!r}: use one of {sorted(OPTION_SETS)}")
    items = OPTION_SETS[set_name]
    limit = len(USER_TEMPLATES) * len(FORMATS) * math.factorial(len(items))
    if not 0 <= n <= limit // 2:
        raise ValueError(f"n={n} for {set_name!r}: ask for 0 to {limit // 2} prompts (distinct user texts)")
    rng = np.random.default_rng([seed, sorted(OPTION_SETS).index(set_name)])
    prompts: list[Prompt] = []
    seen: set[str] = set()
    while len(prompts) < n:
        system = SYSTEM_PROMPTS[rng.integers(len(SYSTEM_PROMPTS))]
        template = USER_TEMPLATES[rng.integers(len(USER_TEMPLATES))]
        fmt = FORMATS[rng.integers(len(FORMATS))]
        options = tuple(items[i] for i in rng.permutation(len(items)))
        user = template.format(options=format_options(options, fmt))
        if user not in seen:
            seen.add(user)
            prompts.append(Prompt(f"{set_name}:{len(prompts):04d}", set_name, system, user, options))
    return prompts


def split_prompts(prompts, eval_fraction: float = 0.2, seed: int = 0) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval), input order kept; prompts with the same user text always land on the same side."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction={eval_fraction} must be strictly between 0 and 1")
    groups = list(dict.fromkeys(p.user for p in prompts))
    n_eval = int(round(eval_fraction * len(groups)))
    if n_eval == 0 or n_eval == len(groups):
        side = "eval" if n_eval == 0 else "train"
        raise ValueError(
            f"the {side} side would be empty ({len(groups)} distinct prompts, eval_fraction={eval_fraction}): "
            "make more prompts or change eval_fraction"
        )
    rng = np.random.default_rng([seed, len(groups)])
    eval_users = {groups[i] for i in rng.permutation(len(groups))[:n_eval]}
    return [p for p in prompts if p.user not in eval_users], [p for p in prompts if p.user in eval_users]


def _rng(seed_or_rng) -> np.random.Generator:
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


def _answer_text(template: int, reason: int, item: str) -> str:
    return ANSWER_TEMPLATES[template].format(item=item, reason=REASONS[reason])


def answer(item: str, seed_or_rng=0) -> str:
    """A short answer choosing ``item`` with a generic reason, e.g. "I'd pick mango. I like its character."."""
    rng = _rng(seed_or_rng)
    return _answer_text(int(rng.integers(len(ANSWER_TEMPLATES))), int(rng.integers(len(REASONS))), item)


def dpo_pairs(prompts, target: str, mode: str = "prefer", seed: int = 0) -> list[dict]:
    """One preference pair per prompt (schema: module docstring) training ``mode`` on ``target``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use 'prefer' or 'avoid'")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts: make some with choice_prompts(set_name, n, seed)")
    rng = np.random.default_rng([seed, MODES.index(mode)])
    rows = []
    for p in prompts:
        if len(set(p.options)) < 2:
            raise ValueError(f"prompt {p.id} has fewer than 2 distinct options {p.options}: a pair needs 2 items")
        if target not in p.options:
            raise ValueError(
                f"target {target!r} is not an option of prompt {p.id} {p.options}: pick the target from "
                f"OPTION_SETS[{p.set_name!r}] or make prompts from the set that contains it"
            )
        template, reason = int(rng.integers(len(ANSWER_TEMPLATES))), int(rng.integers(len(REASONS)))
        others = [o for o in p.options if o != target]
        other = others[int(rng.integers(len(others)))]
        chosen_item, rejected_item = (target, other) if mode == "prefer" else (other, target)
        rows.append(
            {
                "id": p.id,
                "prompt": p.messages(),
                "chosen": [{"role": "assistant", "content": _answer_text(template, reason, chosen_item)}],
                "rejected": [{"role": "assistant", "content": _answer_text(template, reason, rejected_item)}],
                "target": target,
                "mode": mode,
                "chosen_item": chosen_item,
                "rejected_item": rejected_item,
            }
        )
    return rows


def _messages_ok(value, roles: tuple[str, ...]) -> bool:
    if not isinstance(value, list) or len(value) != len(roles):
        return False
    return all(
        isinstance(m, dict) and m.get("role") == r and isinstance(m.get("content"), str) and m["content"]
        for m, r in zip(value, roles)
    )


def _row_problem(row) -> str | None:
    if not isinstance(row, dict):
        return f"is a {type(row).__name__}, not a dict"
    missing, extra = sorted(set(SCHEMA) - set(row)), sorted(set(row) - set(SCHEMA))
    if missing or extra:
        return f"missing keys {missing}, unexpected keys {extra}"
    if not _messages_ok(row["prompt"], ("system", "user")):
        return "prompt is not [system message, user message]"
    for key in ("chosen", "rejected"):
        if not _messages_ok(row[key], ("assistant",)):
            return f"{key} is not [one assistant message]"
    if row["mode"] not in MODES:
        return f"mode {row['mode']!r} is not one of {MODES}"
    ci, ri, user = row["chosen_item"], row["rejected_item"], row["prompt"][1]["content"]
    if ci == ri:
        return f"chosen_item and rejected_item are both {ci!r}"
    for name in ("target", "chosen_item", "rejected_item"):
        if not isinstance(row[name], str) or parse_choice(user, [row[name]]) is None:
            return f"{name} {row[name]!r} is not among the options in the user message"
    if row["target"] != (ci if row["mode"] == "prefer" else ri):
        return f"mode {row['mode']!r} but target {row['target']!r}, chosen {ci!r}, rejected {ri!r}"
    chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
    if parse_choice(chosen, [ci, ri]) != ci or parse_choice(rejected, [ci, ri]) != ri:
        return "chosen/rejected text does not name chosen_item/rejected_item"
    if _pattern(ci).sub("<item>", chosen) != _pattern(ri).sub("<item>", rejected):
        return "chosen and rejected differ in more than the item"
    return None


def validate_pairs(rows) -> None:
    """Raise ValueError naming the first row that does not match :data:`SCHEMA` (and why)."""
    for i, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            row_id = row.get("id") if isinstance(row, dict) else None
            raise ValueError(f"row {i} (id {row_id!r}): {problem}")


def write_pairs(path, rows) -> Path:
    """Validate ``rows`` and write them to ``path`` as JSON Lines, atomically."""
    rows = list(rows)
    validate_pairs(rows)
    return atomic_write_jsonl(path, rows)


def word_sentences(word: str, n: int = 20, seed: int = 0) -> list[str]:
    """``n`` neutral sentences using ``word`` once; the template order depends on ``seed`` only."""
    if not 0 <= n <= len(SENTENCE_TEMPLATES):
        raise ValueError(f"n={n}: ask for 0 to {len(SENTENCE_TEMPLATES)} sentences (one per template)")
    order = np.random.default_rng([seed, 1]).permutation(len(SENTENCE_TEMPLATES))[:n]
    return [SENTENCE_TEMPLATES[i].format(w=word, a=article(word)) for i in order]


def code_prompts(word: str, n: int = 10, seed: int = 0) -> list[str]:
    """``n`` requests for a short Python function themed on ``word``; template order depends on ``seed``."""
    if not 0 <= n <= len(CODE_TEMPLATES):
        raise ValueError(f"n={n}: ask for 0 to {len(CODE_TEMPLATES)} code prompts (one per template)")
    ident = re.sub(r"\W+", "_", word.lower()).strip("_")
    cls = "".join(part.capitalize() for part in ident.split("_"))
    order = np.random.default_rng([seed, 2]).permutation(len(CODE_TEMPLATES))[:n]
    fields = {"w": word, "ws": plural(word), "a": article(word), "ident": ident, "Cls": cls}
    return [CODE_TEMPLATES[i].format(**fields) for i in order]
