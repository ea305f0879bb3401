#!/usr/bin/env bash
# Open a run's report in a real browser, offline: headless Chromium (Debian: `sudo apt-get install -y chromium`)
# renders the index and two notebook pages with every host name unresolvable. For each page it writes to OUT a
# screenshot (PNG, to look at), the DOM after loading (.dom.html) and Chromium's verbose log (.log), and it fails
# when the page asked for anything over the network (a CDN script, a remote image or font: the log's
# NotifyBeforeURLRequest lines, less Chromium's own update, clock and account requests) or shows an <img> whose file
# is missing. Not part of `make test` (it needs Chromium).
#
#   scripts/check_report_browser.sh                      # docs/demo, pages 03 and 06, output in /tmp/vaxis-report-check
#   scripts/check_report_browser.sh runs/demo/report /tmp/out 04_task_confidence.html 09_in_the_wild.html
#
# Environment: CHROMIUM (the browser binary; default: chromium, chromium-browser or google-chrome on PATH),
# HEIGHT (screenshot height in pixels, default 6000: tall enough to reach the first figures).
set -euo pipefail

REPORT=${1:-docs/demo}
OUT=${2:-/tmp/vaxis-report-check}
shift $(($# < 2 ? $# : 2))
if [ $# -gt 0 ]; then PAGES=("index.html" "$@"); else PAGES=(index.html 03_fit_axis.html 06_code.html); fi
HEIGHT=${HEIGHT:-6000}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$CHROMIUM" ]; then
  echo "no Chromium found: install it (Debian/Ubuntu: sudo apt-get install -y chromium) or set CHROMIUM" >&2
  exit 2
fi
if [ ! -f "$REPORT/index.html" ]; then
  echo "$REPORT/index.html not found: build a report first (python -m vaxis report RUN_DIR)" >&2
  exit 2
fi
REPORT=$(cd "$REPORT" && pwd)
mkdir -p "$OUT"
# offline: no host name resolves; no first-run, no GPU, no sandbox (root in a container)
FLAGS=(--headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars --host-resolver-rules="MAP * ~NOTFOUND"
  --disable-background-networking --disable-component-update --disable-sync --disable-default-apps
  --enable-logging=stderr --v=1 --virtual-time-budget=5000)
# requests Chromium makes by itself, whatever the page (the flags above do not stop them all)
# (www.google.com/async/folae: a request Chromium 150 makes at start, whatever the page; seen with file:// pages)
OWN='clients2\.google\.com/time/|update\.googleapis\.com/service/update2|accounts\.google\.com/ListAccounts|gvt1\.com/edgedl/chrome|www\.google\.com/async/folae'
status=0
for page in "${PAGES[@]}"; do
  name=${page%.html}
  url="file://$REPORT/$page"
  timeout 120 "$CHROMIUM" "${FLAGS[@]}" --window-size=1280,"$HEIGHT" --screenshot="$OUT/$name.png" "$url" \
    2>"$OUT/$name.log" >/dev/null
  timeout 120 "$CHROMIUM" "${FLAGS[@]}" --dump-dom "$url" 2>>"$OUT/$name.log" >"$OUT/$name.dom.html"
  failed=$(grep -o "NotifyBeforeURLRequest: .*" "$OUT/$name.log" | grep -vE "$OWN" | sort -u || true)
  images=$(grep -o '<img[^>]* src="[^"]*"' "$OUT/$name.dom.html" | sed 's/.* src="\([^"]*\)"/\1/' || true)
  missing=0
  for src in $images; do
    [ -f "$REPORT/$src" ] || { echo "  $page: image $src is missing"; missing=$((missing + 1)); }
  done
  echo "$page: $(wc -c <"$OUT/$name.dom.html") bytes of DOM, $(echo "$images" | grep -c . || true) images," \
    "$missing missing, $(echo "$failed" | grep -c . || true) network requests; screenshot $OUT/$name.png"
  if [ -n "$failed" ] || [ "$missing" -gt 0 ]; then
    [ -z "$failed" ] || echo "$failed" | sed 's/^/  /'
    status=1
  fi
done
[ $status -eq 0 ] && echo "ok: every page loaded offline with its images" || echo "FAILED: see the logs in $OUT" >&2
exit $status
