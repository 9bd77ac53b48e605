"""The report as a planner sees it: opened in a real browser (headless Chromium), every chart
decoded. A page can be valid HTML whose embedded PNGs are truncated or mis-encoded, which only
a browser notices."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rainier.sim.metrics import summarize
from rainier.sim.model import TenantContract
from rainier.sim.report import write_report

from .conftest import cluster, random_gangs, run

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary on PATH (scripts/install-chromium.sh installs it as root)",
)

# Runs once the page and all its images have loaded (the window's load event waits for them),
# and writes what it found into the DOM, where --dump-dom shows it.
_PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = `images=${imgs.length} decoded=${ok.length} ` +
    `widths=${imgs.map((i) => i.naturalWidth).join(",")}`;
  document.body.appendChild(out);
});
</script>"""


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    c = cluster(6, 8, [TenantContract("t0", {"h200": 16}), TenantContract("t1", {"h200": 8})])
    jobs = random_gangs(200, seed=7)
    results = [run(c, jobs, p) for p in ("rainier", "backfill")]
    out = tmp_path_factory.mktemp("report")
    write_report(results, [summarize(r) for r in results], out, {"trace": "gangs"})
    return out / "report.html"


def test_every_chart_of_the_report_decodes_in_chromium(report: Path, tmp_path: Path) -> None:
    page = report.read_text()
    probed = report.with_name("probe.html")
    probed.write_text(page.replace("</body>", _PROBE + "</body>", 1))
    done = _chromium(tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(
        r'<pre id="probe">images=(\d+) decoded=(\d+) widths=([\d,]*)</pre>', done.stdout
    )
    assert found is not None, done.stdout[-2000:]
    images, decoded = int(found.group(1)), int(found.group(2))
    assert images == 4
    assert decoded == images
    assert all(int(w) >= 400 for w in found.group(3).split(","))
    assert "rainier simulation report" in done.stdout
    assert "backfill" in done.stdout


def test_the_report_renders_to_a_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = _chromium(
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        report.as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    # A blank page compresses to a few kilobytes; tables and four charts do not.
    assert len(data) > 50_000
