"""The gallery (DESIGN.md §8): a fast build, checked in a real headless browser.

The module builds the site once with ``fast=True`` into a temporary folder with a temporary
result cache; the browser check needs Debian's ``chromium`` and ``chromium-driver`` and the
``selenium`` package and is skipped without them.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

import mechzoo

pytest.importorskip("sphinx")
pytest.importorskip("sphinx_gallery")

from mechzoo import gallery  # noqa: E402

NEW_ID = "linear-gaussian-gallery-copy"
BROKEN_ID = "linear-gaussian-broken-route"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    extra = root / "extra-entries"
    extra.mkdir()
    # an entry whose gallery route fails (an unknown NPE setting): its page must show the error
    text = (Path(mechzoo.__file__).parent / "entries" / "linear-gaussian.toml").read_text()
    text = text.replace('id = "linear-gaussian"', f'id = "{BROKEN_ID}"', 1)
    text += '\n[checks.gallery]\nmethods = ["npe"]\nfast_settings = { npe = { no_such_setting = 1 } }\n'
    (extra / f"{BROKEN_ID}.toml").write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHZOO_CACHE", str(root / "cache"))
        mp.setenv("MECHZOO_ENTRY_PATH", str(extra))
        mp.setenv("OMP_NUM_THREADS", "1")
        t0 = time.perf_counter()
        out = gallery.build(fast=True, out=root / "html", progress=False)
        seconds = time.perf_counter() - t0
        yield SimpleNamespace(root=root, out=out, extra=extra, seconds=seconds)


def _manifest(out: Path) -> dict:
    return json.loads((out / "gallery-manifest.json").read_text())


def test_fast_build_has_a_page_per_entry(site):
    manifest = _manifest(site.out)
    assert manifest["fast"] is True
    ids = [e["id"] for e in manifest["entries"]]
    assert ids == mechzoo.entries() and BROKEN_ID in ids
    landing = (site.out / "index.html").read_text()
    for e in manifest["entries"]:
        page = (site.out / e["page"]).read_text()
        assert mechzoo.load(e["id"]).title.split(" (")[0] in page
        assert "mz-parameters" in page and "mz-figure" in page
        assert "fast build: tiny budgets, not a converged posterior" in page.lower()
        assert f'data-id="{e["id"]}"' in landing
    # stored results live in the fast sub-folder of the cache
    for e in manifest["entries"]:
        for method, status in e["fits"].items():
            if status == "ok":
                assert (site.root / "cache" / "gallery" / "fast" / e["id"] / f"{method}.nc").exists()
    lg = next(e for e in manifest["entries"] if e["id"] == "linear-gaussian")
    assert lg["fits"], "linear-gaussian has no gallery fit"
    assert all(v == "ok" for v in lg["fits"].values()), lg["fits"]
    print(f"fast gallery build: {site.seconds:.0f} s {manifest['seconds']}")


def test_new_entry_via_entry_path_gets_a_page(site):
    text = (Path(mechzoo.__file__).parent / "entries" / "linear-gaussian.toml").read_text()
    text = text.replace('id = "linear-gaussian"', f'id = "{NEW_ID}"', 1)
    text = text.replace("title = \"Linear-Gaussian regression", "title = \"Gallery copy of the linear-Gaussian regression", 1)
    text += '\n[checks.gallery]\nmethods = ["map"]\n'
    (site.extra / f"{NEW_ID}.toml").write_text(text)
    stored = site.root / "cache" / "gallery" / "fast" / "linear-gaussian" / "nuts.nc"
    before = stored.stat().st_mtime_ns
    gallery.build(fast=True, out=site.out, progress=False)
    page = site.out / "entries" / f"{NEW_ID}.html"
    assert page.exists()
    assert "Gallery copy of the linear-Gaussian regression" in page.read_text()
    assert f'data-id="{NEW_ID}"' in (site.out / "index.html").read_text()
    manifest = _manifest(site.out)
    new = next(e for e in manifest["entries"] if e["id"] == NEW_ID)
    assert new["fits"] == {"map": "ok"}  # the entry's checks.gallery chose its routes
    assert stored.stat().st_mtime_ns == before  # stored fits are reused, not recomputed


def test_failing_route_is_shown_not_fatal(site):
    manifest = _manifest(site.out)
    broken = next(e for e in manifest["entries"] if e["id"] == BROKEN_ID)
    assert broken["fits"] == {"npe": "error"}
    html = (site.out / broken["page"]).read_text()
    assert "no_such_setting" in html and "failed" in html
    assert (site.root / "cache" / "gallery" / "fast" / BROKEN_ID / "npe.error.json").exists()


# ------------------------------------------------------------------------------ browser check
def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("headless browser check needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(flag)
    return webdriver, opts, Service(executable_path=driver_path)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102
        pass


def _wait_loaded(driver, timeout: float = 20.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if driver.execute_script("return document.readyState") == "complete":
            return
        time.sleep(0.1)
    raise AssertionError(f"{driver.current_url} did not finish loading in {timeout} s")


_BROKEN_IMAGES = "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"


def _severe(driver, base: str) -> list[str]:
    bad = []
    for rec in driver.get_log("browser"):
        if rec.get("level") != "SEVERE":
            continue
        msg = rec.get("message", "")
        if "favicon.ico" in msg:
            continue
        bad.append(msg)
    return bad


def test_site_in_headless_browser(site, tmp_path):
    webdriver, opts, service = _browser()
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site.out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    driver = webdriver.Chrome(options=opts, service=service)
    manifest = _manifest(site.out)
    problems: list[str] = []
    try:
        driver.set_page_load_timeout(60)
        driver.get(base + "/index.html")
        _wait_loaded(driver)
        assert "mechzoo gallery" in driver.title
        cards = driver.find_elements("css selector", "#mz-grid .mz-card")
        assert len(cards) == len(manifest["entries"])
        problems += [f"index: broken image {s}" for s in driver.execute_script(_BROKEN_IMAGES)]
        # the route filter hides the cards of entries without that route
        driver.execute_script("var s = document.getElementById('mz-filter-route'); s.value = 'npe'; s.dispatchEvent(new Event('change'));")
        visible = driver.execute_script("return Array.from(document.querySelectorAll('#mz-grid .mz-card')).filter(c => !c.hidden).length")
        assert visible == sum("npe" in e["routes"] for e in manifest["entries"])
        driver.execute_script("var s = document.getElementById('mz-filter-route'); s.value = ''; s.dispatchEvent(new Event('change'));")
        driver.save_screenshot(str(site.out / "landing-screenshot.png"))
        problems += [f"index: {m}" for m in _severe(driver, base)]
        # every entry page is one click away: follow the card's link
        hrefs = [c.get_attribute("href") for c in driver.find_elements("css selector", "#mz-grid .mz-card")]
        assert len(hrefs) == len(manifest["entries"])
        pages = [(e, href) for e, href in zip(manifest["entries"], hrefs)]
        for e, href in pages:
            assert href.endswith(e["page"]), (href, e["page"])
            driver.get(href)
            _wait_loaded(driver)
            h1 = driver.find_element("css selector", "h1").text
            assert e["title"] in h1, (e["id"], h1)
            assert driver.find_elements("css selector", "table.mz-parameters"), f"{e['id']}: no parameter table"
            figs = driver.execute_script(
                "return Array.from(document.querySelectorAll('figure img')).filter(i => i.complete && i.naturalWidth > 0).length"
            )
            assert figs >= 1, f"{e['id']}: no rendered figure"
            problems += [f"{e['id']}: broken image {s}" for s in driver.execute_script(_BROKEN_IMAGES)]
            problems += [f"{e['id']}: {m}" for m in _severe(driver, base)]
        if (site.out / "_static" / "mathjax" / "MathJax.js").exists():
            driver.get(base + "/entries/linear-gaussian.html")
            _wait_loaded(driver)
            t0 = time.time()
            while time.time() - t0 < 20 and not driver.execute_script("return document.querySelectorAll('.MathJax_SVG, mjx-container').length"):
                time.sleep(0.2)
            assert driver.execute_script("return document.querySelectorAll('.MathJax_SVG, mjx-container').length") > 0, "math did not render"
            problems += [f"math: {m}" for m in _severe(driver, base)]
        # worked examples
        driver.get(base + "/auto_examples/index.html")
        _wait_loaded(driver)
        links = [a.get_attribute("href") for a in driver.find_elements("css selector", ".sphx-glr-thumbcontainer a, a.reference.internal[href*='plot_']")]
        links = sorted({h.split("#")[0] for h in links if h and "plot_" in h})
        assert len(links) >= 3, links
        for href in links:
            driver.get(href)
            _wait_loaded(driver)
            problems += [f"{href}: broken image {s}" for s in driver.execute_script(_BROKEN_IMAGES)]
            problems += [f"{href}: {m}" for m in _severe(driver, base)]
            assert driver.find_elements("css selector", "img.sphx-glr-single-img, img.sphx-glr-multi-img"), f"{href}: no figure"
    finally:
        driver.quit()
        server.shutdown()
    assert not problems, "\n".join(problems)
    assert (site.out / "landing-screenshot.png").stat().st_size > 10_000
