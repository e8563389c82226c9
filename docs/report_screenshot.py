"""Open a comparison's report.html in a real headless browser (Debian's chromium): measure the page's
layout (does any table, figure or image run off a 1400-px window?) and save a screenshot.

  python docs/report_screenshot.py runs/demo-<time>/report.html --out docs/report_screenshot.png

Prints the layout as JSON and exits 1 when something overflows the window. Needs `chromium` on PATH
(`apt-get install -y chromium`); a fresh, empty profile folder is used for every call.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
# Writes what the browser laid out into <pre id="layout">, which --dump-dom then prints.
PROBE = """<script>window.addEventListener('load', () => {
  const w = document.documentElement.clientWidth, out = {window: w, overflow: [], tables: [], images: 0};
  for (const el of document.querySelectorAll('table, figure, img, pre, h1, p')) {
    const r = el.getBoundingClientRect();
    if (r.right > w + 1) out.overflow.push(el.tagName + ' right=' + Math.round(r.right));
    if (el.tagName === 'TABLE') out.tables.push({rows: el.rows.length, width: Math.round(r.width)});
    if (el.tagName === 'IMG' && el.naturalWidth > 0) out.images += 1;
  }
  out.page_width = document.documentElement.scrollWidth;
  const pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _run(browser: str, args: list[str], width: int, height: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                               *args], capture_output=True, text=True, timeout=120, check=False)


def layout(report: Path, width: int = 1400, browser: str | None = None) -> dict:
    """What the browser laid out: window width, elements running off it, tables, decoded images."""
    browser = browser or chromium()
    if browser is None:
        raise SystemExit("chromium not found; apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
        done = _run(browser, ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], width, 1000)
    found = re.search(r'<pre id="layout">(.*?)</pre>', done.stdout, flags=re.S)
    if found is None:
        raise RuntimeError(f"chromium printed no layout (exit {done.returncode}): {done.stderr[-1000:]}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(report: Path, out: Path, width: int = 1400, height: int = 2600, browser: str | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _run(browser or chromium() or "chromium", [f"--screenshot={out.resolve()}", report.resolve().as_uri()],
                width, height)
    if not out.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-1000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="a report.html (duotune compare or make demo)")
    p.add_argument("--out", type=Path, default=Path("docs/report_screenshot.png"), help="screenshot PNG")
    p.add_argument("--width", type=int, default=1400, help="window width in px")
    p.add_argument("--height", type=int, default=2600, help="window height in px (the screenshot's)")
    args = p.parse_args(argv)
    found = layout(args.report, args.width)
    print(json.dumps(found, indent=2))
    print(f"screenshot: {screenshot(args.report, args.out, args.width, args.height)}")
    return 1 if found["overflow"] or found["page_width"] > args.width else 0


if __name__ == "__main__":
    sys.exit(main())
