"""vaxis.monitor: a step-by-step decode that shows each token coloured by its projection on the axis, live in a
kernel and as one final static rendering under papermill / nbconvert (the tiny random Qwen3 of conftest)."""

from __future__ import annotations

import contextlib
import json
import re
from html.parser import HTMLParser

import nbformat
import pytest
import torch

import vaxis
from vaxis.core.monitor import monitor_html

CHAT = [{"role": "user", "content": "Rewrite this paragraph, please."}]
TITLE = re.compile(r"(\d+): ([-+][0-9.]+)")
RGB = re.compile(r"background:rgb\((\d+),(\d+),(\d+)\)")


@pytest.fixture(scope="module")
def axis():
    """A random axis of the tiny model (3 blocks, hidden size 64; mean residual norm about 0.25 at every layer)."""
    gen = torch.Generator().manual_seed(1)
    return vaxis.Axis(torch.randn(4, 64, generator=gen), [0, 1, 2, 3], torch.full((4,), 0.25), 2, "tiny", 64, 3)


def fresh_projections(model, tokenizer, out, layer, direction, steer=None) -> torch.Tensor:
    """cos(h_t, v) at ``layer`` of the generated tokens, from one forward pass (no cache) over prompt + tokens."""
    prompt = tokenizer(out.prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + out.token_ids])
    steering = vaxis.steer(model, steer, positions=len(prompt)) if steer else contextlib.nullcontext()
    with torch.no_grad(), steering, vaxis.capture(model, [layer]) as a:
        model(input_ids=ids, use_cache=False)
    h = a[layer][0, len(prompt) :]
    return (h @ direction / (h.norm(dim=-1) * direction.norm())).float()


@pytest.mark.parametrize("layer", [None, 1])
def test_greedy_monitor_equals_generate_and_a_fresh_forward_pass(tiny, axis, layer):
    model, tokenizer = tiny
    out = vaxis.monitor(model, tokenizer, axis, CHAT, layer=layer, max_new_tokens=12)
    gens = vaxis.generate(model, tokenizer, [CHAT], max_new_tokens=12, cache=False, progress=False)
    assert out.token_ids == gens[0].token_ids and out.text == gens[0].text and out.prompt == gens[0].prompt
    assert out.finish_reason == gens[0].finish_reason and len(out.tokens) == len(out.projections) == 12
    read = axis.main_layer if layer is None else layer
    assert out.layer == read
    expected = fresh_projections(model, tokenizer, out, read, axis.vector(read))
    torch.testing.assert_close(out.projections, expected, atol=1e-5, rtol=1e-4)
    assert "".join(out.tokens) == tokenizer.decode(out.token_ids, skip_special_tokens=False)


def test_projections_equal_the_value_trace_and_vaxis_extract_of_the_same_text(tiny, axis):
    """On text that tokenizes back to the same ids (this chat's greedy reply does on the tiny model), the monitor's
    numbers are the value trace's (:func:`vaxis.core.trace.token_projections`) and their mean is
    :meth:`vaxis.Axis.project`'s (:func:`vaxis.extract`) over the reply."""
    from vaxis.core.trace import token_projections

    model, tokenizer = tiny
    out = vaxis.monitor(
        model, tokenizer, axis, [{"role": "user", "content": "What is two plus two?"}], max_new_tokens=12
    )
    full = out.prompt + "".join(out.tokens)
    prompt = tokenizer(out.prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer(full, add_special_tokens=False)["input_ids"] == prompt + out.token_ids  # the precondition
    _, _, scores = token_projections(model, tokenizer, full, axis.main_layer, axis.vector())
    torch.testing.assert_close(out.projections, scores[len(prompt) :], atol=1e-5, rtol=1e-4)
    mean = axis.project(model, tokenizer, [full], spans=[{"reply": [(len(out.prompt), len(full))]}], progress=False)
    assert float(mean[0, 0]) == pytest.approx(float(out.projections.mean()), abs=1e-5)


def test_sampling_draws_what_generate_draws_for_the_same_seed(tiny, axis):
    model, tokenizer = tiny
    kw = dict(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=7)
    out = vaxis.monitor(model, tokenizer, axis, CHAT, **kw)
    gens = vaxis.generate(model, tokenizer, [CHAT], cache=False, progress=False, **kw)
    assert out.token_ids == gens[0].token_ids
    assert vaxis.monitor(model, tokenizer, axis, CHAT, **{**kw, "seed": 8}).token_ids != out.token_ids


def test_steering_moves_the_projections_along_the_axis(tiny, axis):
    model, tokenizer = tiny
    plain = vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=10)
    up = vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=10, steer=100)
    down = vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=10, steer=(axis, -100))
    assert up.projections.mean() > plain.projections.mean() + 0.2 > down.projections.mean() + 0.4
    assert "steered (generated" in up.title and 2 in up.steered
    # the same tokens as vaxis.generate under the same steering, and the numbers of a fresh pass steered the same way
    vectors = {2: axis.steering_vector(100)}
    gens = vaxis.generate(model, tokenizer, [CHAT], max_new_tokens=10, steer=vectors, positions="generated",
                          cache=False, progress=False)  # fmt: skip
    assert up.token_ids == gens[0].token_ids
    expected = fresh_projections(model, tokenizer, up, 2, axis.vector(2), steer=vectors)
    torch.testing.assert_close(up.projections, expected, atol=1e-5, rtol=1e-4)
    # a vector at another layer, steering every position: still vaxis.generate's tokens
    other = {1: axis.steering_vector(60, layer=1)}
    both = vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=6, steer=other, positions="all")
    gens = vaxis.generate(model, tokenizer, [CHAT], max_new_tokens=6, steer=other, cache=False, progress=False)
    assert both.token_ids == gens[0].token_ids


class TokenSpans(HTMLParser):
    """The token spans of a rendering (``<span title="i: score" style="background:rgb(r,g,b)">``), whatever the
    attribute order and quotes (nbconvert rewrites them)."""

    def __init__(self):
        super().__init__()
        self.found: dict[int, tuple[float, tuple[int, int, int]]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        title, rgb = TITLE.fullmatch(attrs.get("title") or ""), RGB.match(attrs.get("style") or "")
        if tag == "span" and title and rgb:
            self.found[int(title[1])] = (float(title[2]), tuple(int(c) for c in rgb.groups()))


def colours(page: str) -> dict[int, tuple[float, tuple[int, int, int]]]:
    """token index -> (score shown, background rgb) of a rendering's token spans."""
    parser = TokenSpans()
    parser.feed(page)
    return parser.found


def test_rendering_colours_high_green_low_red_with_the_trace(tiny, axis):
    model, tokenizer = tiny
    out = vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=12)
    page = out.html()
    shown = colours(page)
    assert sorted(shown) == list(range(12)) and "done: 12 tokens in " in page and "s (length)" in page
    top, bottom = int(out.projections.argmax()), int(out.projections.argmin())
    assert shown[top][1][1] == 255 and shown[top][1][0] < 100  # the highest projection: green
    assert shown[bottom][1][0] == 255 and shown[bottom][1][1] < 100  # the lowest: red
    assert shown[top][0] == pytest.approx(float(out.projections[top]), abs=1e-4)
    points = re.search(r"<polyline[^>]*points='([^']*)'", page)[1].split()
    assert len(points) == 12 and page.count("<circle") == 12
    ys = [float(p.split(",")[1]) for p in points]
    assert ys.index(min(ys)) == top and ys.index(max(ys)) == bottom  # SVG y grows downwards
    fills = re.findall(r"<circle[^>]*fill='(rgb\([0-9,]+\))'", page)
    assert fills[top] == "rgb({},{},{})".format(*shown[top][1]) and fills[bottom] == "rgb({},{},{})".format(
        *shown[bottom][1]
    )
    empty = monitor_html([], [], 8, "t", "starting")
    assert "<svg" in empty and "<polyline" not in empty


class FakeHandle:
    def __init__(self, log):
        self.log = log

    def update(self, data, raw=False):
        self.log.append(data)


def test_live_display_grows_token_by_token_and_ends_with_the_final_rendering(tiny, axis, monkeypatch):
    import IPython.display

    model, tokenizer = tiny
    log = []
    monkeypatch.setattr(IPython.display, "display", lambda data, raw=False, display_id=None: FakeHandle(log))
    out = vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=8, show=True, refresh=0)
    counts = [len(colours(d["text/html"])) for d in log]
    assert counts == [0, *range(1, 9), 8]  # the empty frame, one update per token, the final rendering
    assert "generating ... 3/8 tokens" in log[3]["text/html"] and "done: 8 tokens" in log[-1]["text/html"]
    assert log[-1]["text/html"] == out.html() and log[-1]["text/plain"] == repr(out)
    log.clear()
    vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=8, show=True, refresh=3600)
    assert [len(colours(d["text/html"])) for d in log] == [0, 8]  # throttled: the first frame and the last
    log.clear()
    vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=3)  # not in a kernel: nothing shown
    assert log == []


def test_bad_input_gets_a_clear_error(tiny, axis):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="chat is empty"):
        vaxis.monitor(model, tokenizer, axis, [])
    with pytest.raises(TypeError, match="list of .*messages"):
        vaxis.monitor(model, tokenizer, axis, "hello")
    with pytest.raises(TypeError, match="not a list of chats"):
        vaxis.monitor(model, tokenizer, axis, [CHAT])
    wide = vaxis.Axis(torch.randn(3, 64), [2, 3, 7], torch.ones(3), 7, "tiny", 64, 3)
    with pytest.raises(ValueError, match="layer 7 is out of range for this model: its residual indices are 0..3"):
        vaxis.monitor(model, tokenizer, wide, CHAT)
    with pytest.raises(ValueError, match="no vector at layer 1"):
        vaxis.monitor(model, tokenizer, wide, CHAT, layer=1)
    other = vaxis.Axis(torch.randn(2, 32), [0, 1], torch.ones(2), 1, "other", 32, 5)
    with pytest.raises(ValueError, match="fit on other"):
        vaxis.monitor(model, tokenizer, other, CHAT)
    with pytest.raises(ValueError, match="max_new_tokens"):
        vaxis.monitor(model, tokenizer, axis, CHAT, max_new_tokens=0)
    with pytest.raises(ValueError, match="positions="):
        vaxis.monitor(model, tokenizer, axis, CHAT, steer=5, positions="later")


MONITOR_CELL = """\
import json, torch, vaxis
from vaxis.core.tiny import tiny_model_and_tokenizer

model, tokenizer = tiny_model_and_tokenizer("qwen3", seed=0)
axis = vaxis.Axis(torch.randn(4, 64, generator=torch.Generator().manual_seed(1)), [0, 1, 2, 3],
                  torch.full((4,), 0.25), 2, "tiny", 64, 3)
live = vaxis.monitor(model, tokenizer, axis, [{"role": "user", "content": "Rewrite this paragraph, please."}],
                     max_new_tokens=N_TOKENS, refresh=REFRESH)
open("numbers.json", "w").write(json.dumps({"ids": live.token_ids, "projections": live.projections.tolist()}))
"""


@pytest.mark.slow
def test_papermill_and_nbconvert_keep_one_final_static_rendering(tmp_path):
    """A notebook with a monitor cell, run by papermill (nbclient): the cell's output is the final rendering, once
    (every token coloured, the trace's SVG, the "done" status), the same numbers the kernel returned, and nbconvert's
    HTML of the executed notebook shows it."""
    import papermill as pm
    from nbconvert import HTMLExporter

    from vaxis.run.runner import kernel_for_notebooks

    n = 40
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(MONITOR_CELL.replace("N_TOKENS", str(n)).replace("REFRESH", "0.05"))]
    nbformat.write(nb, tmp_path / "in.ipynb")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(tmp_path),
                        kernel_name=kernel_for_notebooks()[0], progress_bar=False)  # fmt: skip
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    outputs = executed.cells[0].outputs
    pages = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(pages) == 1, [o.get("output_type") for o in outputs]  # one display, updated in place
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    shown = colours(pages[0])
    assert sorted(shown) == list(range(n)) and f"done: {n} tokens" in pages[0]
    assert [s for s, _ in shown.values()] == pytest.approx(numbers["projections"], abs=1e-4)
    assert "<svg class='vaxis-trace'" in pages[0] and pages[0].count("<circle") == n
    plain = [o["data"]["text/plain"] for o in outputs if "text/html" in o.get("data", {})]
    assert plain[0].startswith(f"Monitored({n} tokens")
    body, _ = HTMLExporter().from_notebook_node(executed)
    assert len(colours(body)) == n and 'class="vaxis-trace"' in body and body.count("<circle") == n


def test_vaxis_monitor_is_the_function():
    import vaxis.core.monitor

    assert vaxis.monitor is vaxis.core.monitor.monitor and "monitor" in vaxis.__all__ and callable(vaxis.monitor)


def test_notebook_03_checks_monitor_tokens(tmp_path):
    """Notebook 03's parameter ``monitor_tokens``: a whole number >= 0; above 0 the games of notebook 01 are read."""
    cfg = vaxis.resolve_config("smoke", run_dir=tmp_path)
    for value, needle in ((-1, "monitor_tokens=-1: give a whole number >= 0"), (2.5, "monitor_tokens=2.5"),
                          (8, "games.jsonl (the games; the live monitor continues a held-out one) is missing")):  # fmt: skip
        with pytest.raises(vaxis.ParameterError) as err:
            vaxis.check_notebook(3, cfg, monitor_tokens=value, quiet=True)
        assert any(needle in p for p in err.value.problems), err.value.problems
    with pytest.raises(vaxis.ParameterError) as err:  # 0: no monitor, so no games needed
        vaxis.check_notebook(3, cfg, monitor_tokens=0, quiet=True)
    assert not any("games.jsonl" in p or "monitor_tokens" in p for p in err.value.problems)
