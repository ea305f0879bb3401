"""The report of a run: a static site of its executed notebooks, scorecard and timings.

``python -m vaxis report RUN_DIR`` (``make report``) writes ``RUN_DIR/report/``:

- ``index.html``: the run's profile, model and machine, one line per notebook (its title, status, wall time and a
  link to its page; a notebook of ``notebooks/`` that this run did not execute is listed as not run), the scorecard
  (``scorecard.md``, :mod:`vaxis.run.scorecard`) and the timings table (``timings.json``, :mod:`vaxis.core.timings`);
- ``NN_name.html``: each executed notebook ``RUN_DIR/NN_name.ipynb`` rendered by nbconvert (JupyterLab's look, no
  script and nothing fetched from the internet), its figures as files under ``NN_name_files/``, the stylesheet
  shared by every page in ``notebook.css``.

Every link is relative and no absolute local path is left in any page (the run folder becomes ``runs/<name>``, the
repository ``.``, the home folder ``~``), so the folder can be copied or served anywhere. The site is built in a
temporary folder beside it and swapped in whole: a failed build leaves the previous report as it was.
``--publish`` (``make reproduce``) also copies it to ``docs/<profile>/`` when the run executed every notebook
successfully with the profile's own model and quantization (the rule :func:`vaxis.run.plots.publish` applies to
the figures).
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.cache import current_umask
from ..core.timings import load_run_timings, markdown_table
from .config import REPO_ROOT, own_model_of
from .notebooks import NOTEBOOK_DIR, notebooks

REPORT_DIR = "report"
DOCS_DIR = REPO_ROOT / "docs"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
CSS_FILE = "notebook.css"
# nbconvert's JupyterLab template without its <script> tags (require.js, MathJax and Mermaid from CDNs, widgets),
# its 250 kB stylesheet linked from one shared file instead of inlined in every page, and a bar of links on top.
_PAGE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block notebook_css -%}<link rel="stylesheet" href="notebook.css">{%- endblock notebook_css -%}
{%- block body_header -%}{{ super() }}{{ resources.vaxis_nav }}{%- endblock body_header -%}
"""
_CSS_TEMPLATE = (
    """{{ resources.include_css("static/index.css") }}{{ resources.include_css("static/theme-light.css") }}"""
)
_PAGE_CSS = """
* { -webkit-print-color-adjust: exact; }
a.anchor-link { display: none; }
.jp-InputArea, .jp-InputArea-editor { overflow: hidden; }
.jp-OutputArea-output pre { line-height: inherit; font-family: inherit; }
.jp-RenderedText pre { color: var(--jp-content-font-color1); font-size: var(--jp-code-font-size); }
.jp-Collapser { display: none; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
nav.vaxis-nav { font: 14px sans-serif; padding: 8px 16px; border-bottom: 1px solid #ddd; margin-bottom: 8px; }
nav.vaxis-nav a { margin-right: 1.5em; }
"""
_INDEX_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } .not-run { color: #888; } .failed { color: #b00; }
.scroll { overflow-x: auto; } a.anchor-link { display: none; } code { font-size: 90%; }
"""


@dataclass
class Entry:
    """One notebook's line of the index."""

    stem: str
    title: str
    executed: Path | None  # RUN_DIR/NN_name.ipynb, None when this run did not execute it
    status: str  # ok, failed, interrupted, not run
    wall_seconds: float | None


def notebook_title(nb, default: str) -> str:
    """The text of the notebook's first markdown heading, else ``default``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.lstrip().startswith("#"):
                    return line.lstrip().lstrip("#").strip() or default
    return default


def run_label(run_dir: Path) -> str:
    """How pages name the run folder: its path relative to the repository, else ``runs/<name>``."""
    try:
        return run_dir.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return f"runs/{run_dir.resolve().name}"


def path_scrubber(run_dir: Path, notebooks: list) -> Callable[[str], str]:
    """A function that replaces the absolute local paths in a text: the run folder (as given, resolved, and as the
    notebooks' papermill metadata recorded it, which may be another checkout's) by :func:`run_label`, the repository
    (this one and the notebooks' own) by ``.``, the home folder by ``~``, and any folder holding
    ``site-packages`` by ``...``."""
    runs = {str(run_dir.absolute()), str(run_dir.resolve())}
    roots = {str(REPO_ROOT)}
    for nb in notebooks:
        papermill = nb.metadata.get("papermill", {})
        recorded = papermill.get("parameters", {}).get("run_dir")
        output, source = papermill.get("output_path"), papermill.get("input_path")
        runs |= {str(p) for p in (recorded, output and Path(output).parent) if p and os.path.isabs(str(p))}
        if source and os.path.isabs(source):
            roots.add(str(Path(source).parent.parent))
    roots |= {str(Path(r).parent.parent) for r in runs if Path(r).parent.name == "runs"}
    label = run_label(run_dir)
    targets = {**{r: "." for r in roots}, **{r: label for r in runs}}
    home = os.path.expanduser("~")
    targets.setdefault(home, "~")
    targets = {k.rstrip("/"): v for k, v in targets.items() if len(k.rstrip("/")) > 1}
    found = re.compile("(?:" + "|".join(re.escape(k) for k in sorted(targets, key=len, reverse=True)) + r")(?![\w.-])")
    packages = re.compile(r"(?<![\w.~])/(?:[^\s/\"'<>]+/)*?(site-packages|dist-packages)/")

    def scrub(text: str) -> str:
        return packages.sub(r".../\1/", found.sub(lambda m: targets[m.group(0)], text))

    return scrub


def _exporter(template: str):
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    loader = DictLoader({"vaxis_page.html.j2": _PAGE_TEMPLATE, "vaxis_css.j2": _CSS_TEMPLATE})
    return HTMLExporter(template_name="lab", extra_loaders=[loader], template_file=template)


def notebook_css() -> str:
    """The stylesheet of JupyterLab's nbconvert template (light theme), as one file, plus the page's own rules."""
    import nbformat

    styles, _ = _exporter("vaxis_css.j2").from_notebook_node(nbformat.v4.new_notebook())
    return re.sub(r"</?style[^>]*>", "", styles) + _PAGE_CSS


def _nav(entries: list[Entry], k: int) -> str:
    """The bar on top of notebook page ``k``: back to the index, the previous and the next page."""
    run = [e for e in entries if e.executed]
    links = ['<a href="index.html">&larr; run report</a>']
    i = run.index(entries[k])
    if i > 0:
        links.append(f'<a href="{run[i - 1].stem}.html">previous: {html.escape(run[i - 1].stem)}</a>')
    if i + 1 < len(run):
        links.append(f'<a href="{run[i + 1].stem}.html">next: {html.escape(run[i + 1].stem)}</a>')
    return f'<nav class="vaxis-nav">{" ".join(links)}</nav>'


def notebook_page(nb, entry: Entry, nav: str, scrub: Callable[[str], str]) -> tuple[str, dict[str, bytes]]:
    """The HTML of one executed notebook and its files ``{relative path: bytes}``: output images (and markdown
    attachments) extracted by nbconvert under ``<stem>_files/``, never inlined."""
    from nbconvert.preprocessors import ExtractAttachmentsPreprocessor, ExtractOutputPreprocessor

    exporter = _exporter("vaxis_page.html.j2")
    exporter.register_preprocessor(ExtractOutputPreprocessor(), enabled=True)
    exporter.register_preprocessor(ExtractAttachmentsPreprocessor(), enabled=True)
    resources = {"metadata": {"name": entry.title}, "unique_key": entry.stem, "output_files_dir": f"{entry.stem}_files",
                 "vaxis_nav": nav}  # fmt: skip
    body, resources = exporter.from_notebook_node(nb, resources=resources)
    return scrub(body), dict(resources.get("outputs", {}))


def rewrite_links(page: str, stem: str, pages: set[str], files: dict[str, bytes], source_dir: Path) -> str:
    """Make every ``href``/``src`` of ``page`` resolve inside the report: a link to ``NN_name.ipynb`` goes to its
    page; an inline ``data:`` image becomes a file under ``<stem>_files/``; an image a markdown cell takes from
    disk (relative to ``source_dir``, the notebooks' folder) is copied there; any other local link or image that
    does not resolve in the report loses its ``href`` or ``src`` (the text stays). External ``http(s)``/``mailto``
    links and in-page anchors stay. ``files`` (relative path: bytes) receives the new files."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page, "html.parser")
    site = {"index.html", CSS_FILE} | {f"{p}.html" for p in pages}
    for n, tag in enumerate(soup.find_all(src=True)):
        src = tag["src"]
        if src.startswith("data:"):
            head, _, data = src.partition(",")
            ext = {"image/png": ".png", "image/jpeg": ".jpg", "image/svg+xml": ".svg", "image/gif": ".gif"}
            name = f"{stem}_files/{stem}_inline_{n}{ext.get(head[5:].split(';')[0], '.bin')}"
            files[name] = base64.b64decode(data) if ";base64" in head else data.encode()
            tag["src"] = name
        elif src not in files and not src.startswith(("http://", "https://", "//")):
            local = source_dir / src.split("#")[0].split("?")[0]
            if local.is_file():
                name = f"{stem}_files/{local.name}"
                files[name] = local.read_bytes()
                tag["src"] = name
            else:
                del tag["src"]
    for tag in soup.find_all(href=True):
        href = tag["href"]
        target, _, fragment = href.partition("#")
        if not target or href.startswith(("http://", "https://", "mailto:")) or target in files or target in site:
            continue
        name = Path(target).name
        if name.endswith(".ipynb") and name[: -len(".ipynb")] in pages:
            tag["href"] = name[: -len(".ipynb")] + ".html" + (f"#{fragment}" if fragment else "")
        else:
            del tag["href"]
    return str(soup)


def notebook_entries(run_dir: Path, notebook_dir: Path = NOTEBOOK_DIR) -> list[Entry]:
    """One :class:`Entry` per notebook, in order: those executed in ``run_dir`` (status and wall time from
    ``timings.json``, else from the papermill metadata) and those of ``notebook_dir`` this run did not execute."""
    import nbformat

    try:
        timings = load_run_timings(run_dir)["notebooks"]
    except (FileNotFoundError, ValueError):
        timings = {}
    executed = {p.stem: p for p in run_dir.glob(NOTEBOOK_GLOB)}
    sources = {p.stem: p for p in notebooks(folder=notebook_dir)}
    entries = []
    for stem in sorted(executed.keys() | sources.keys()):
        path = executed.get(stem, sources.get(stem))
        nb = nbformat.read(path, as_version=4)
        papermill = nb.metadata.get("papermill", {})
        timed = timings.get(stem, {})
        if stem not in executed:
            status, wall = "not run", None
        else:
            status = timed.get("status") or ("failed" if papermill.get("exception") else "ok")
            wall = timed.get("wall_seconds", papermill.get("duration"))
        entries.append(Entry(stem, notebook_title(nb, stem), executed.get(stem), status, wall))
    return entries


def _run_summary(run_dir: Path, executed: list) -> str:
    """One line: profile, model, quantization and machine (from ``timings.json``, else the notebooks' parameters)."""
    try:
        first = next(iter(load_run_timings(run_dir)["notebooks"].values()), {})
    except (FileNotFoundError, ValueError):
        first = {}
    params = executed[0].metadata.get("papermill", {}).get("parameters", {}) if executed else {}
    profile = first.get("profile") or params.get("profile", "?")
    model = first.get("model") or params.get("model") or "the profile's model"
    quant = first.get("quantization") or params.get("quantization") or "no quantization"
    machine = f"; machine: {first.get('gpu', '?')}, {first.get('cpu_count', '?')} CPU cores" if first else ""
    return f"Profile <b>{html.escape(str(profile))}</b>, model <b>{html.escape(str(model))}</b> " \
           f"({html.escape(str(quant))}){html.escape(machine)}."  # fmt: skip


def _markdown_section(title: str, markdown: str | None, missing: str) -> str:
    from nbconvert.filters import markdown2html_mistune

    if markdown is None:
        return f"<h2>{title}</h2>\n<p class='not-run'>{html.escape(missing)}</p>"
    markdown = re.sub(r"\A#[^\n]*\n", "", markdown.lstrip())  # the file's own title: this section has one
    return f"<h2>{title}</h2>\n<div class='scroll'>{markdown2html_mistune(markdown)}</div>"


def index_page(run_dir: Path, entries: list[Entry], executed: list) -> str:
    """The report's ``index.html``: the run, its notebooks, its scorecard and its timings."""
    rows = []
    for e in entries:
        name = html.escape(e.title)
        link = f'<a href="{e.stem}.html">{name}</a>' if e.executed else name
        wall = "" if e.wall_seconds is None else f"{e.wall_seconds:,.0f} s"
        css = {"ok": "", "not run": "not-run"}.get(e.status, "failed")
        rows.append(f'<tr class="{css}"><td>{link}</td><td>{html.escape(e.status)}</td><td>{wall}</td></tr>')
    card = run_dir / "scorecard.md"
    try:
        timings = markdown_table(load_run_timings(run_dir))
    except (FileNotFoundError, ValueError):
        timings = None
    label = html.escape(run_label(run_dir))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">',
        f"<title>vaxis run report: {label}</title><style>{_INDEX_CSS}</style></head><body>",
        f"<h1>vaxis run report: {label}</h1>", f"<p>{_run_summary(run_dir, executed)}</p>",
        "<h2>Notebooks</h2>", "<table><thead><tr><th>notebook</th><th>status</th><th>wall time</th></tr></thead>",
        "<tbody>", *rows, "</tbody></table>",
        _markdown_section("Timings", timings, "no timings.json in this run (`python -m vaxis run` writes it)"),
        _markdown_section("Scorecard", card.read_text(encoding="utf-8") if card.exists() else None,
                          "no scorecard.md in this run (the notebooks that measure paper numbers write it)"),
        "<p><small>Built by <code>python -m vaxis report</code>.</small></p>", "</body></html>", "",
    ])  # fmt: skip


def _swap_in(built: Path, dest: Path) -> None:
    """Put the folder ``built`` at ``dest``, replacing the old one (moved aside first, removed last)."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / dest.name)
    os.replace(built, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_site(folder: Path, run_dir: Path, entries: list[Entry], notebook_dir: Path) -> None:
    import nbformat

    executed = {e.stem: nbformat.read(e.executed, as_version=4) for e in entries if e.executed}
    scrub = path_scrubber(run_dir, list(executed.values()))
    (folder / CSS_FILE).write_text(notebook_css(), encoding="utf-8")
    for k, entry in enumerate(entries):
        if not entry.executed:
            continue
        page, files = notebook_page(executed[entry.stem], entry, _nav(entries, k), scrub)
        page = rewrite_links(page, entry.stem, set(executed), files, notebook_dir)
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        (folder / f"{entry.stem}.html").write_text(page, encoding="utf-8")
    index = index_page(run_dir, entries, list(executed.values()))
    (folder / "index.html").write_text(scrub(index), encoding="utf-8")


def build_report(run_dir: str | os.PathLike, notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> Path:
    """Write the report of the run in ``run_dir`` into ``run_dir/report/`` (see the module's doc); returns the
    path of its ``index.html``. FileNotFoundError when ``run_dir`` does not exist or holds no executed notebook."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist: `python -m vaxis run --run-dir {run_dir}` "
                                "writes one")  # fmt: skip
    if not any(run_dir.glob(NOTEBOOK_GLOB)):
        raise FileNotFoundError(f"{run_dir} holds no executed notebook (NN_name.ipynb): is it a run folder? "
                                f"`python -m vaxis run --run-dir {run_dir}` writes them")  # fmt: skip
    entries = notebook_entries(run_dir, Path(notebook_dir))
    dest = run_dir / REPORT_DIR
    building = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.tmp-", dir=run_dir))
    try:
        _write_site(building, run_dir, entries, Path(notebook_dir))
        os.chmod(building, 0o755 & ~current_umask())
        _swap_in(building, dest)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return dest / "index.html"


def publish_reason(run_dir: str | os.PathLike, notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> tuple[str, str]:
    """``(profile, "")`` when the run in ``run_dir`` may be published: every notebook of ``notebook_dir`` ran with
    status ok, all with one profile and that profile's own model and quantization; else ``(profile, why not)``."""
    try:
        timed = load_run_timings(run_dir)["notebooks"]
    except (FileNotFoundError, ValueError) as err:
        return "?", f"the run's model is unknown ({err})"
    missing = [p.stem for p in notebooks(folder=Path(notebook_dir)) if timed.get(p.stem, {}).get("status") != "ok"]
    profiles = {e.get("profile") for e in timed.values()}
    if len(profiles) != 1:
        return "?", f"its notebooks ran with several profiles {sorted(map(str, profiles))}"
    profile = profiles.pop()
    if missing:
        return profile, f"not every notebook ran successfully ({', '.join(sorted(missing))})"
    own_model, own_quant = own_model_of(profile)
    runs = {(e.get("model"), e.get("quantization")) for e in timed.values()}
    if runs != {(own_model, own_quant)}:
        return profile, f"it ran {sorted(map(str, runs))}, not profile {profile}'s own {own_model} ({own_quant})"
    return profile, ""


def publish_report(run_dir: str | os.PathLike, docs_dir: str | os.PathLike = DOCS_DIR,
                   notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> tuple[Path | None, str]:  # fmt: skip
    """Copy ``run_dir/report/`` to ``docs_dir/<profile>/`` (replacing the old copy whole) when
    :func:`publish_reason` allows it; returns ``(index.html of the copy, "")`` or ``(None, why not)``."""
    profile, why = publish_reason(run_dir, notebook_dir)
    if why:
        return None, why
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    copying = Path(tempfile.mkdtemp(prefix=f".{profile}.tmp-", dir=docs_dir))
    try:
        shutil.copytree(Path(run_dir) / REPORT_DIR, copying / profile)
        _swap_in(copying / profile, docs_dir / profile)
    finally:
        shutil.rmtree(copying, ignore_errors=True)
    return docs_dir / profile / "index.html", ""


def report_command(run_dir: str, publish: bool = False) -> int:
    """``python -m vaxis report RUN_DIR [--publish]``: build the report, print where it is; with ``publish`` copy it
    to ``docs/<profile>/`` when the run may be published (else say why not)."""
    try:
        index = build_report(run_dir)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"report: {err}") from None
    size = sum(f.stat().st_size for f in index.parent.rglob("*") if f.is_file())
    print(f"report: {index} ({size / 1e6:.1f} MB); open it in a browser", flush=True)
    if publish:
        copy, why = publish_report(run_dir)
        print(f"report published: {copy}" if copy else f"report not published to docs/: {why}", flush=True)
    return 0
