"""The web page of `fghash serve` in a real browser: headless Chromium (Debian's `chromium`
and `chromium-driver`) driven by selenium loads the page of a real `fghash serve` process,
uploads a photo, and must show k result tiles with the ids the in-process search of the
same photo finds; hovering a tile must show exactly `distance` differing bits; pressing a
tile (mouse, then Enter) must search from that item. The test saves a screenshot: in its
tmp folder, and where FGHASH_SCREENSHOT names a path, there too.

FGHASH_BROWSER_BUNDLE=BUNDLE (and optionally FGHASH_BROWSER_IMAGE=PHOTO) runs the same
test against an existing bundle whose run is recorded (the README's screenshot is the
demo's index: FGHASH_BROWSER_BUNDLE=fghash-demo/index).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests._serve_proc import serving

pytestmark = pytest.mark.slow

K = 10
WAIT_S = 60


def _browser() -> tuple[str, str]:
    """(chromium, chromedriver) executables, or skip saying what is missing."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    browser = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "no Chromium with chromedriver here (apt-get install chromium chromium-driver; "
            ".ci/run installs them where apt works)"
        )
    return browser, driver


@pytest.fixture(scope="module")
def chrome():
    browser, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1366,860",  # a laptop screen
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(bundle, query photo): FGHASH_BROWSER_BUNDLE's, or a tiny trained run's bundle."""
    _browser()  # skip before training when no browser can run
    pytest.importorskip("faiss")
    pytest.importorskip("fastapi")
    given = os.environ.get("FGHASH_BROWSER_BUNDLE")
    if given:
        from index import read_bundle_meta

        run = Path(read_bundle_meta(given)["codes"]["run"])
        photo = (
            os.environ.get("FGHASH_BROWSER_IMAGE") or sorted(run.parent.rglob("test_0001.png"))[0]
        )
        return Path(given), Path(photo)
    from PIL import Image

    from fghash.data import generate_synthetic
    from fghash.runs.config import resolve_config
    from fghash.training.loop import train

    base = tmp_path_factory.mktemp("browser")
    root = generate_synthetic(
        base / "birds", num_classes=3, train_per_class=4, test_per_class=2, image_size=32
    )
    cfg = resolve_config(
        "synthetic", "a2net", data_root=str(root), backbone="resnet18", weights="none",
        image_size=32, bits=12, num_attention=2, num_samples=9, batch_size=3, max_iter=1,
        epochs=1, device="cpu", gamma=1.0, lr=1e-3,
    )  # fmt: skip
    run_dir = base / "run"
    train(cfg, run_dir, progress=False)
    from click.testing import CliRunner

    from fghash.cli import main
    from fghash.codes import pack_bits, read_codes, write_codes

    codes, bundle = base / "codes.h5", base / "idx"
    r = CliRunner().invoke(
        main,
        ["encode", str(run_dir), "--out", str(codes), "--database", "encode", "--device", "cpu"],
    )
    assert r.exit_code == 0, r.output
    # a network trained for one step gives most images one code: random database codes
    # (same items, paths and run) make distances, and so the differing bits, vary
    cf = read_codes(codes)
    db = cf.splits["database"]
    db.codes = pack_bits(np.random.default_rng(0).integers(0, 2, (len(db.codes), cf.bits)))
    write_codes(codes, cf)
    r = CliRunner().invoke(
        main, ["build-index", str(codes), "--out", str(bundle), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    # what `fghash explain` leaves beside the codes file: the attribute each bit follows
    best = [{"bit": b, "attribute": f"attribute-{b}"} for b in range(cf.bits)]
    (base / "explain").mkdir()
    (base / "explain" / "explain.json").write_text(json.dumps({"best_per_bit": best}))
    photo = base / "my bird.jpg"  # a user's photo: another format, size and name
    Image.open(sorted(root.rglob("test_*.png"))[0]).convert("RGB").resize((50, 41)).save(photo)
    return bundle, photo


def _wait(what: str, check, timeout: float = WAIT_S):
    """``check()`` once it is truthy, polling; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {what} within {timeout} s")
        time.sleep(0.1)


def _tiles(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#grid .tile")


def _shown_ids(driver, query_text: str) -> list[int]:
    """The tiles' ids once the query caption says ``query_text`` and the grid is full."""
    from selenium.webdriver.common.by import By

    def done():
        caption = driver.find_element(By.ID, "query-caption").text
        status = driver.find_element(By.ID, "status")
        if "error" in status.get_attribute("class"):
            raise AssertionError(f"the page says: {status.text}")
        tiles = _tiles(driver)
        if query_text in caption and len(tiles) == K and "Press a result" in status.text:
            return [int(t.get_attribute("data-id")) for t in tiles]
        return None

    return _wait(f"{K} tiles for {query_text!r}", done)


def _expected_ids(bundle: Path, k: int, **query) -> list[int]:
    from fghash.ops.indexes import search

    return [h["id"] for h in search(bundle, k, device="cpu", **query).results[0]["results"]]


def _item_code(bundle: Path, item_id: int) -> str:
    """The item's code as the bundle's codes file stores it (not through the server)."""
    from fghash.codes import code_to_hex, read_codes
    from index import read_bundle_meta

    src = read_bundle_meta(bundle)["codes"]
    s = read_codes(src["path"], splits=[src["split"]], features=False, attributes=False)
    s = s[src["split"]]
    return code_to_hex(s.codes[list(s.ids).index(item_id)])


def test_the_page_searches_by_photo_and_from_a_result(chrome, page_bundle, tmp_path) -> None:
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    bundle, photo = page_bundle
    with serving([bundle, "--name", "birds"], tmp_path / "serve.log") as url:
        chrome.get(url + "/")
        _wait(
            "the index list",
            lambda: chrome.find_element(By.TAG_NAME, "body").get_attribute("data-ready"),
        )
        assert chrome.find_element(By.ID, "index").text.strip() == "birds"
        chrome.find_element(By.ID, "k").clear()
        chrome.find_element(By.ID, "k").send_keys(str(K))

        # a photo: the tiles are the in-process search of the same photo, in order
        chrome.find_element(By.ID, "file").send_keys(str(photo))
        shown = _shown_ids(chrome, photo.name)
        assert shown == _expected_ids(bundle, K, images=[photo])
        _wait("the thumbnails", lambda: all(
            chrome.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            for img in chrome.find_elements(By.CSS_SELECTOR, "#grid .tile img")
        ))  # fmt: skip

        chrome.execute_script("document.activeElement.blur()")  # no focus ring on k
        # hover: which bits differ from the query; as many as the Hamming distance
        dists = [int(re.search(r"distance (\d+)", t.text).group(1)) for t in _tiles(chrome)]
        tile = _tiles(chrome)[dists.index(max(dists))]  # the farthest: the most bits differ
        distance = max(dists)
        ActionChains(chrome).move_to_element(tile).perform()
        head = chrome.find_element(By.ID, "why-head")
        why = _wait(
            "why it matched",
            lambda: head.text if (" bit" in head.text or "not known" in head.text) else None,
        )
        assert f"{distance} of " in why or (distance == 0 and "every bit agrees" in why), why
        listed = [li.text for li in chrome.find_elements(By.CSS_SELECTOR, "#why-bits li")]
        assert len(listed) == distance
        if not os.environ.get("FGHASH_BROWSER_BUNDLE"):  # the tiny run's explain.json
            for line in listed:
                bit = int(re.match(r"bit (\d+) ", line).group(1))
                assert line.endswith(f"follows attribute-{bit}"), line
        assert len(tile.find_elements(By.CSS_SELECTOR, ".bit.diff")) == distance
        chrome.save_screenshot(str(tmp_path / "serve.png"))
        if os.environ.get("FGHASH_SCREENSHOT"):
            chrome.save_screenshot(os.environ["FGHASH_SCREENSHOT"])

        # click a result: the page searches from that item
        picked = shown[1]
        _tiles(chrome)[1].click()
        again = _shown_ids(chrome, f"item {picked}")
        assert again == _expected_ids(bundle, K, code=_item_code(bundle, picked))

        # the keyboard: Enter on a focused tile searches from it too
        picked = again[2]
        _tiles(chrome)[2].send_keys(Keys.ENTER)
        third = _shown_ids(chrome, f"item {picked}")
        assert third == _expected_ids(bundle, K, code=_item_code(bundle, picked))
        assert (tmp_path / "serve.png").stat().st_size > 10_000
