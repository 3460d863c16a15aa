"""Check a report in a real browser: Debian's headless Chromium, at 1366x768.

    python ci/check_report_browser.py report/          # after a run (tox run -e conformance)

Installs what it needs on first use: Debian's ``chromium`` (apt-get, as root) and npm's
``playwright-core`` (into the project cache, from ci/browser/package.json; playwright's own browser
download is never used). Loads ``index.html``, counts the verdict chips inside the first screen,
screenshots it (``first-screen.png``), opens a FAILED cell (else the first) and screenshots the
panel (``opened-cell.png``), both into the report folder. Prints the figures last; exits 1 when no
verdict is visible on the first screen or the panel did not open.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.paths import cache_dir  # noqa: E402

BROWSER_DIR = ROOT / "ci" / "browser"
CHROMIUM = "/usr/bin/chromium"


def ensure_tools() -> Path:
    if not Path(CHROMIUM).exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    work = cache_dir() / "browser-check"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "check_page.mjs"):
        shutil.copyfile(BROWSER_DIR / name, work / name)
    if not (work / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=work, check=True,
                       env={**__import__("os").environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    return work


def main(argv: list[str]) -> int:
    report = Path(argv[0] if argv else ROOT / "report").resolve()
    page = report / "index.html"
    if not page.is_file():
        print(f"no {page}: run the suites first", file=sys.stderr)
        return 2
    work = ensure_tools()
    out = subprocess.run(["node", str(work / "check_page.mjs"), page.as_uri(), str(report), CHROMIUM],
                         cwd=work, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        print(out.stdout + out.stderr, file=sys.stderr)
        return 2
    result = json.loads(out.stdout.strip().splitlines()[-1])
    first, panel = result["firstScreen"], result["panel"] or {}
    print(f"screenshots: {report / 'first-screen.png'}, {report / 'opened-cell.png'}")
    print(f"panel of {panel.get('cell')}: open={panel.get('open')} text: {(panel.get('text') or '')[:200]!r}")
    print(f"FIRST SCREEN: {first['visible']} of {first['chips']} verdict chips visible at 1366x768 "
          f"(verdicts {', '.join(first['verdicts'])})")
    return 0 if first["visible"] > 0 and panel.get("open") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
