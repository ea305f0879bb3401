"""The report of a run (vaxis.run.report, `python -m vaxis report`): a static site whose links all resolve inside
it, with no absolute local path, figures as files, one page per executed notebook linked from the index.

The run folder is built here, offline and in a second: two of the repository's notebooks as papermill leaves them
(injected parameters, papermill metadata recording the run folder, outputs with a figure, an HTML output, absolute
paths in a stream), ``scorecard.json``/``.md`` and ``timings.json`` written by the real modules."""

from __future__ import annotations

import base64
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from vaxis.core import timings
from vaxis.run import report, scorecard
from vaxis.run.config import REPO_ROOT
from vaxis.run.runner import main

# A 1x1 PNG, the figure of the executed notebooks; a second one inside an HTML output as a data URI.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
EXECUTED = ("01_synthesize_icrl", "03_fit_axis")
NOT_RUN = "04_task_confidence"
# Where another checkout recorded the run (as the demo run's notebooks do: some ran in /tmp/fresh5).
ELSEWHERE = "/elsewhere/checkout"


def _outputs(run_dir: Path) -> list:
    out = nbformat.v4
    stream = (
        f"wrote {run_dir}/games.jsonl and {ELSEWHERE}/runs/smoke/games_report.json\n"
        f"{ELSEWHERE}/.venv/lib/python3.11/site-packages/torch/module.py:1: UserWarning: x\n"
        f"/opt/fakeenv/lib/python3.11/site-packages/transformers/utils.py:2: FutureWarning: y\n"
        f"model cache {os.path.expanduser('~')}/.cache/vaxis/models and {REPO_ROOT}/data/paper_numbers.json\n"
    )
    inline = base64.b64encode(PNG).decode()
    html_out = f'<div class="trace"><b>value trace marker</b><img src="data:image/png;base64,{inline}"></div>'
    return [
        out.new_output("stream", name="stdout", text=stream),
        out.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}),
        out.new_output("execute_result", data={"text/html": html_out, "text/plain": "trace"}, execution_count=2),
    ]


def _executed(source: Path, run_dir: Path, recorded_run_dir: str) -> nbformat.NotebookNode:
    """``source`` as papermill leaves it after a run into ``run_dir`` (recording ``recorded_run_dir``)."""
    nb = nbformat.read(source, as_version=4)
    params = {"profile": "smoke", "run_dir": recorded_run_dir}
    nb.metadata["papermill"] = {"parameters": params, "input_path": f"{ELSEWHERE}/notebooks/{source.name}",
                                "output_path": f"{recorded_run_dir}/{source.name}", "duration": 3.2,
                                "exception": None}  # fmt: skip
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    injected = nbformat.v4.new_code_cell(
        f'profile = "smoke"\nrun_dir = "{recorded_run_dir}"\n', metadata={"tags": ["injected-parameters"]}
    )
    nb.cells.insert(first + 1, injected)
    injected.outputs = _outputs(run_dir)
    nb.cells.append(
        nbformat.v4.new_markdown_cell(
            "See [notebook 03](03_fit_axis.ipynb#the-axis), [notebook 04](04_task_confidence.ipynb), "
            "[the method](../METHOD.md), [the paper](https://example.org/paper) and ![a figure](fig.png)."
        )
    )
    return nb


def make_run(root: Path) -> tuple[Path, Path]:
    """A run folder with notebooks 01 and 03 executed (04 not run), and the notebooks' folder of its checkout."""
    notebook_dir, run_dir = root / "notebooks", root / "runs" / "smoke-report"
    notebook_dir.mkdir(parents=True)
    run_dir.mkdir(parents=True)
    for stem in (*EXECUTED, NOT_RUN):
        shutil.copy(REPO_ROOT / "notebooks" / f"{stem}.ipynb", notebook_dir)
    (notebook_dir / "fig.png").write_bytes(PNG)  # the image a markdown cell shows, beside the notebooks
    for stem, recorded in zip(EXECUTED, (str(run_dir), f"{ELSEWHERE}/runs/smoke")):
        nbformat.write(_executed(notebook_dir / f"{stem}.ipynb", run_dir, recorded), run_dir / f"{stem}.ipynb")
        entry = timings.notebook_entry(3.2, "ok", "smoke", "tiny-qwen3", None, [],
                                       machine_info={"gpu": "cpu", "gpu_count": 0, "cpu_count": 2})  # fmt: skip
        timings.update_run_timings(run_dir, stem, entry)
    row = {"key": "fig2.heldout_auroc_main", "value": 0.8123, "ci": (0.7, 0.9), "n": "5 criteria",
           "null": "shuffled q95 0.6", "context": f"profile smoke, written in {run_dir}"}  # fmt: skip
    scorecard.record(run_dir, [row])
    return run_dir, notebook_dir


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(report folder, run folder, notebooks folder, tmp root) of a run whose report was built once."""
    root = tmp_path_factory.mktemp("report-run")
    run_dir, notebook_dir = make_run(root)
    index = report.build_report(run_dir, notebook_dir)
    assert index == run_dir / "report" / "index.html"
    return index.parent, run_dir, notebook_dir, root


class _Refs(HTMLParser):
    """Every href and src of a page."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [(tag, name, value) for name, value in attrs if name in ("href", "src") and value is not None]


def refs(page: Path) -> list[tuple[str, str, str]]:
    parser = _Refs()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.refs


def site_problems(folder: Path, forbidden: list[str]) -> list[str]:
    """Links of the report in ``folder`` that do not resolve to a file inside it (in-page anchors and external
    ``http(s)``/``mailto`` hrefs aside), inline data images, and files that contain a ``forbidden`` string."""
    problems = []
    folder = folder.resolve()
    for page in folder.rglob("*.html"):
        for tag, name, value in refs(page):
            if value.startswith("#") or (name == "href" and value.startswith(("http://", "https://", "mailto:"))):
                continue
            if value.startswith("data:"):
                problems.append(f"{page.name}: inline data in <{tag} {name}>")
                continue
            target = (page.parent / value.split("#")[0]).resolve()
            if not target.is_file() or folder not in target.parents:
                problems.append(f"{page.name}: <{tag} {name}={value!r}> does not resolve inside the report")
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            problems += [f"{path.name} contains {s!r}" for s in forbidden if s.encode() in data]
    return problems


def test_every_link_resolves_and_no_absolute_path(site):
    folder, run_dir, _, root = site
    forbidden = [str(root), str(root.resolve()), str(REPO_ROOT), os.path.expanduser("~") + "/", ELSEWHERE,
                 "/opt/fakeenv"]  # fmt: skip
    assert site_problems(folder, forbidden) == []
    page = (folder / "01_synthesize_icrl.html").read_text(encoding="utf-8")
    # the run folder is named as runs/<name>, the checkouts' paths relative, site-packages without its prefix
    assert "runs/smoke-report/games.jsonl" in page and "runs/smoke-report/games_report.json" in page
    assert ".../site-packages/transformers/utils.py" in page and "./.venv/lib/python3.11/site-packages" in page
    assert "~/.cache/vaxis/models" in page and "./data/paper_numbers.json" in page
    assert 'run_dir</span> <span class="o">=</span> <span class="s2">"runs/smoke-report"' in page


def test_links_between_pages_and_to_the_index(site):
    folder = site[0]
    page01 = dict(((tag, value.split("#")[0]), value) for tag, _, value in refs(folder / "01_synthesize_icrl.html"))
    assert page01[("a", "03_fit_axis.html")] == "03_fit_axis.html#the-axis"  # notebook link -> its page
    assert ("a", "index.html") in page01 and ("a", "https://example.org/paper") in page01
    page = (folder / "01_synthesize_icrl.html").read_text(encoding="utf-8")
    assert not [v for _, _, v in refs(folder / "01_synthesize_icrl.html") if "04_task" in v or "METHOD" in v]
    assert ">notebook 04</a>" in page and ">the method</a>" in page  # the text of a link that cannot resolve stays
    for stem in EXECUTED:
        assert ("a", "index.html") in [(t, v) for t, _, v in refs(folder / f"{stem}.html")]


def test_index_links_every_executed_notebook(site):
    folder, _, notebook_dir, _ = site
    index = (folder / "index.html").read_text(encoding="utf-8")
    linked = {value for tag, _, value in refs(folder / "index.html") if tag == "a" and value.endswith(".html")}
    assert linked == {f"{stem}.html" for stem in EXECUTED}
    for stem in (*EXECUTED, NOT_RUN):
        title = report.notebook_title(nbformat.read(notebook_dir / f"{stem}.ipynb", as_version=4), stem)
        assert len(title) > 10 and title.replace("&", "&amp;") in index
    assert re.search(r"<tr[^>]*><td>[^<]*</td><td>not run</td>", index)  # 04: listed, no link
    assert index.count("<td>ok</td><td>3 s</td>") == 2
    # the scorecard as scorecard.md has it, the timings table of vaxis.core.timings, the run's profile and model
    assert "held-out AUROC at the main layer" in index and "0.812" in index and "0.700-0.900" in index
    assert "shuffled q95 0.6" in index and "written in runs/smoke-report" in index
    assert "<td>01_synthesize_icrl</td>" in index and "Profile <b>smoke</b>, model <b>tiny-qwen3</b>" in index


def test_figures_are_files_and_html_outputs_stay_inline(site):
    folder = site[0]
    for stem in EXECUTED:
        page = (folder / f"{stem}.html").read_text(encoding="utf-8")
        assert "base64," not in page and "value trace marker" in page
        images = [value for tag, _, value in refs(folder / f"{stem}.html") if tag == "img"]
        assert len(images) == 3, images  # the output figure, the image inside the HTML output, the markdown one
        for src in images:
            assert src.startswith(f"{stem}_files/") and (folder / src).read_bytes() == PNG


def test_pages_load_nothing_from_the_internet(site):
    folder = site[0]
    for page in folder.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script" not in text, page.name  # no require.js, MathJax or Mermaid from a CDN
        assert not [v for tag, n, v in refs(page) if tag != "a" and v.startswith(("http:", "https:", "//"))]
    css = (folder / report.CSS_FILE).read_text(encoding="utf-8")
    assert ".jp-Notebook" in css and not re.search(r"url\((?!data:)|@import", css)


def test_bad_run_folder_says_what_to_do(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist.*python -m vaxis run"):
        report.build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no executed notebook"):
        report.build_report(tmp_path / "empty")
    with pytest.raises(SystemExit, match="report: .*holds no executed notebook"):
        main(["report", str(tmp_path / "empty")])
    assert not (tmp_path / "empty" / "report").exists() and list((tmp_path / "empty").iterdir()) == []


def test_command_line_and_a_failed_rebuild_keeps_the_old_report(tmp_path, capsys, monkeypatch):
    run_dir, notebook_dir = make_run(tmp_path)
    (run_dir / "03_fit_axis.ipynb").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert f"report: {run_dir / 'report' / 'index.html'}" in capsys.readouterr().out
    before = {p.relative_to(run_dir): p.read_bytes() for p in (run_dir / "report").rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("nbconvert failed")

    monkeypatch.setattr(report, "notebook_page", broken)
    with pytest.raises(RuntimeError, match="nbconvert failed"):
        report.build_report(run_dir, notebook_dir)
    after = {p.relative_to(run_dir): p.read_bytes() for p in (run_dir / "report").rglob("*") if p.is_file()}
    assert after == before and sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_publish_only_a_complete_run_of_the_profiles_own_model(site, tmp_path, monkeypatch):
    """The smoke profile's own model is tiny-qwen3, the model the run recorded."""
    folder, run_dir, notebook_dir, _ = site
    docs = tmp_path / "docs"
    copy, why = report.publish_report(run_dir, docs, notebook_dir)  # 04 did not run
    assert copy is None and "04_task_confidence" in why and not docs.exists()
    (notebook_dir / f"{NOT_RUN}.ipynb").rename(tmp_path / "04.ipynb")
    try:
        with monkeypatch.context() as patch:  # a profile whose own model is another one
            patch.setattr(report, "own_model_of", lambda name: ("smollm2-135m", None))
            copy, why = report.publish_report(run_dir, docs, notebook_dir)
            assert copy is None and "tiny-qwen3" in why and "smollm2-135m" in why and not docs.exists()
        (docs / "smoke").mkdir(parents=True)
        (docs / "smoke" / "stale.html").write_text("old")
        copy, why = report.publish_report(run_dir, docs, notebook_dir)
        assert why == "" and copy == docs / "smoke" / "index.html"
        published = sorted(p.relative_to(docs / "smoke") for p in (docs / "smoke").rglob("*"))
        assert published == sorted(p.relative_to(folder) for p in folder.rglob("*"))  # the old copy replaced whole
        assert [p.name for p in docs.iterdir()] == ["smoke"]
    finally:
        (tmp_path / "04.ipynb").rename(notebook_dir / f"{NOT_RUN}.ipynb")
