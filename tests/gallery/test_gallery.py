"""The gallery (DESIGN.md §8): a fast build, checked in a real headless browser.

The module builds the site once with ``fast=True`` into a temporary folder with a temporary
result cache; the browser check needs Debian's ``chromium`` and ``chromium-driver`` and the
``selenium`` package and is skipped without them.

To stay cheap (CI: 2 cores) the build fits only the linear-Gaussian entry and the test's own
copies of it (``fit_entries``, the same as ``MECHZOO_GALLERY_FIT_ENTRIES``); every other entry
still gets its full page (model, parameter tables, simulated-data figure) without posteriors.
``mechzoo gallery build --fast`` itself still fits every entry's declared fast routes.
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
FIT_ENTRIES = ["linear-gaussian", BROKEN_ID]  # the only entries the test's builds fit (NEW_ID is added later)


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
        out = gallery.build(fast=True, out=root / "html", progress=False, fit_entries=FIT_ENTRIES)
        seconds = time.perf_counter() - t0
        yield SimpleNamespace(root=root, out=out, extra=extra, seconds=seconds)


def _manifest(out: Path) -> dict:
    return json.loads((out / "gallery-manifest.json").read_text())


_PNG = b"\x89PNG\r\n\x1a\n"


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
        # every entry, fitted or not, has its simulated-data figure, and the image is a PNG on disk
        src = f"../_images/{e['id']}-simulated.png"
        assert f'src="{src}"' in page, f"{e['id']}: no simulated-data figure on the page"
        assert (site.out / "entries" / src).read_bytes()[:8] == _PNG, f"{e['id']}: {src} is not a PNG"
        # only the chosen entries were fitted; the others say so instead of showing posteriors
        assert e["fitted"] is (e["id"] in FIT_ENTRIES), e
        if not e["fitted"]:
            assert e["fits"] == {} and "mz-no-fits" in page, e
    assert manifest["fit_entries"] == FIT_ENTRIES
    assert not (site.root / "cache" / "gallery" / "fast" / "hh-2param").exists()
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
    with pytest.MonkeyPatch.context() as mp:  # the environment variable chooses the fitted entries too
        mp.setenv(gallery.FIT_ENTRIES_ENV, ", ".join([*FIT_ENTRIES, NEW_ID]))
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


def test_fit_entries_from_env(monkeypatch):
    for raw, want in [(None, None), ("", None), ("all", None), ("none", []), ("a", ["a"]), (" a, b  c,", ["a", "b", "c"])]:
        if raw is None:
            monkeypatch.delenv(gallery.FIT_ENTRIES_ENV, raising=False)
        else:
            monkeypatch.setenv(gallery.FIT_ENTRIES_ENV, raw)
        assert gallery.fit_entries_from_env() == want, raw


def test_unknown_fit_entry_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no-such-entry"):
        gallery.build(fast=True, out=tmp_path / "html", progress=False, entries=["linear-gaussian"], fit_entries=["no-such-entry"])


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
    """Serves the site silently, but records requests that failed (``server.failed``)."""

    def log_message(self, *args):  # noqa: D102
        pass

    def log_request(self, code="-", size="-"):  # noqa: D102
        if str(code).isdigit() and int(code) >= 400 and not self.path.endswith("favicon.ico"):
            self.server.failed.append(f"{self.command} {self.path} -> {code}")


_PAGE_STATE = ("return [document.URL.split('#')[0], document.readyState, "
               "Array.from(document.images).filter(i => !i.complete).map(i => i.getAttribute('src'))];")


def _open(driver, url: str, timeout: float = 60.0) -> None:
    """Navigate to ``url`` and wait until *that* document is loaded and every image settled.

    ``driver.get`` can return before a slow navigation (heavily loaded CI) has replaced the
    previous page, and ``document.readyState`` then still reads "complete" from the previous page
    while the new one is parsed but its images are in flight; so poll until the document is the requested one, ``readyState`` is "complete" and no
    ``img`` is still loading (``complete`` is true once an image has loaded *or* failed).
    """
    driver.get(url)
    target = url.split("#")[0]
    t0 = time.time()
    while True:
        doc, ready, pending = driver.execute_script(_PAGE_STATE)
        if doc == target and ready == "complete" and not pending:
            return
        if time.time() - t0 > timeout:
            raise AssertionError(f"{url} did not finish loading in {timeout} s: document {doc}, readyState {ready}, images still loading {pending}")
        time.sleep(0.1)


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


_FIGURES = "return Array.from(document.querySelectorAll('figure img')).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"


def test_site_in_headless_browser(site, tmp_path):
    webdriver, opts, service = _browser()
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site.out)))
    server.failed = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    driver = webdriver.Chrome(options=opts, service=service)
    manifest = _manifest(site.out)
    problems: list[str] = []
    try:
        driver.set_page_load_timeout(60)
        _open(driver, base + "/index.html")
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
            _open(driver, href)
            h1 = driver.find_element("css selector", "h1").text
            assert e["title"] in h1, (e["id"], h1)
            assert driver.find_elements("css selector", "table.mz-parameters"), f"{e['id']}: no parameter table"
            figs = driver.execute_script(_FIGURES)
            rendered = [src for src, complete, width in figs if complete and width > 0]
            detail = f"figures (src, complete, naturalWidth): {figs}; failed requests: {server.failed}"
            assert rendered, f"{e['id']}: no rendered figure; {detail}"
            assert any(src.endswith(f"/{e['id']}-simulated.png") for src in rendered), f"{e['id']}: simulated-data figure not rendered; {detail}"
            if e["fits"].get("map") == "ok":
                assert any(src.endswith(f"/{e['id']}-map-posterior.png") for src in rendered), f"{e['id']}: MAP figure not rendered; {detail}"
            problems += [f"{e['id']}: broken image {s}" for s in driver.execute_script(_BROKEN_IMAGES)]
            problems += [f"{e['id']}: {m}" for m in _severe(driver, base)]
        if (site.out / "_static" / "mathjax" / "MathJax.js").exists():
            _open(driver, base + "/entries/linear-gaussian.html")
            t0 = time.time()
            while time.time() - t0 < 20 and not driver.execute_script("return document.querySelectorAll('.MathJax_SVG, mjx-container').length"):
                time.sleep(0.2)
            assert driver.execute_script("return document.querySelectorAll('.MathJax_SVG, mjx-container').length") > 0, "math did not render"
            problems += [f"math: {m}" for m in _severe(driver, base)]
        # worked examples
        _open(driver, base + "/auto_examples/index.html")
        links = [a.get_attribute("href") for a in driver.find_elements("css selector", ".sphx-glr-thumbcontainer a, a.reference.internal[href*='plot_']")]
        links = sorted({h.split("#")[0] for h in links if h and "plot_" in h})
        assert len(links) >= 3, links
        for href in links:
            _open(driver, href)
            problems += [f"{href}: broken image {s}" for s in driver.execute_script(_BROKEN_IMAGES)]
            problems += [f"{href}: {m}" for m in _severe(driver, base)]
            assert driver.find_elements("css selector", "img.sphx-glr-single-img, img.sphx-glr-multi-img"), f"{href}: no figure"
    finally:
        driver.quit()
        server.shutdown()
    problems += [f"failed request: {r}" for r in server.failed]
    assert not problems, "\n".join(problems)
    assert (site.out / "landing-screenshot.png").stat().st_size > 10_000


def test_reference_results_get_a_section_with_the_path_figure(tmp_path, monkeypatch):
    """A shipped reference result is shown on the entry page: posterior, diagnostics and, if the
    result carries one, its high-probability path."""
    import numpy as np
    import xarray as xr

    from mechzoo import registry
    from mechzoo.inference.analysis import high_probability_path

    monkeypatch.setattr(registry, "REFERENCE_DIR", tmp_path / "refs")
    entry = mechzoo.load("linear-gaussian")
    assert gallery._reference_section(entry, tmp_path / "figures") == []  # nothing shipped: no section
    rng = np.random.default_rng(0)
    post = xr.Dataset({"intercept": (("chain", "draw"), 0.7 + 0.1 * rng.standard_normal((2, 50))),
                       "slopes": (("chain", "draw", "covariate"), [1.2, -0.8] + 0.1 * rng.standard_normal((2, 50, 2)))},
                      coords={"covariate": ["x1", "x2"]})

    def log_prob(theta):
        return -0.5 * np.sum(theta**2, axis=1)

    path = high_probability_path(log_prob, np.array([0.5, 1.0, -1.0]), np.array([0.9, 1.4, -0.6]), n_points=5, n_iter=5,
                                 names=["intercept", "slopes[x1]", "slopes[x2]"], simulate=lambda t: t[:, :2] * 2.0, feature_names=["f", "g"])
    tree = xr.DataTree.from_dict({"posterior": post, "high_probability_path": path,
                                  "posterior_predictive": xr.Dataset({"observed_features": (("feature",), [1.5, 2.5])}, coords={"feature": ["f", "g"]})})
    tree.attrs.update(method="nuts", entry_id="linear-gaussian")
    (tmp_path / "refs").mkdir()
    mechzoo.save_result(tree, tmp_path / "refs" / "linear-gaussian-reference-nuts.nc")
    lines = gallery._reference_section(entry, tmp_path / "figures")
    text = "\n".join(lines)
    assert "Reference results" in text and "mechzoo.reference_result('linear-gaussian', method=...)" in text
    assert ".. figure:: figures/linear-gaussian-reference-nuts-posterior.png" in text
    assert ".. figure:: figures/linear-gaussian-reference-nuts-path.png" in text
    assert "5 of 5 points on the path give every feature" in text and "relative to the observation" in text
    assert ".. error::" not in text
    assert (tmp_path / "figures" / "linear-gaussian-reference-nuts-posterior.png").stat().st_size > 0
    assert (tmp_path / "figures" / "linear-gaussian-reference-nuts-path.png").stat().st_size > 0
