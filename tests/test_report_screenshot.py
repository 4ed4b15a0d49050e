"""The report as a browser lays it out: headless Chromium renders a report of synthetic tables,
the page must not overflow the window (wide tables scroll inside their own box), the stage table
must fit, and a screenshot is written (skipped when no Chromium is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from repcollapse.analyze.report.html import ReportConfig, build_report
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)"
)
WIDTH = 1280
PROBE = """<script>document.title = [document.documentElement.scrollWidth,
document.querySelector('.wide').scrollWidth, document.querySelector('.wide').clientWidth,
document.images.length, [...document.images].filter(i => i.naturalWidth > 0).length].join(',');
</script></body>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run(
        [*base, f"--window-size={WIDTH},1600", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shot")
    spec = SyntheticTablesSpec(families=("smollm2", "gemma3"), seeds=(0, 1))
    make_synthetic_tables(root / "tables", spec)
    cfg = ReportConfig(compute_missing=True)
    return build_report(root / "tables", root / "report.html", report=cfg)


def test_page_fits_the_window_and_every_figure_loads(page: Path) -> None:
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    dom = _chromium("--dump-dom", probe.as_uri()).stdout
    m = re.search(r"<title>(\d+),(\d+),(\d+),(\d+),(\d+)</title>", dom)
    assert m, dom[:500]
    page_w, stage_scroll, stage_client, n_img, n_loaded = map(int, m.groups())
    assert page_w <= WIDTH, f"the page is {page_w} px wide in a {WIDTH} px window"
    assert stage_scroll <= stage_client, "the stage table does not fit the page width"
    assert n_img == 7 and n_loaded == 7  # data URIs: no network needed (loss curves: 7th)


def test_screenshot_is_written(page: Path) -> None:
    shot = page.with_name("report.png")
    _chromium(f"--screenshot={shot}", page.as_uri())
    data = shot.read_bytes()
    # A blank page is ~7.5 KB at this size; the summary and stage table make it far larger.
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 100_000, len(data)
