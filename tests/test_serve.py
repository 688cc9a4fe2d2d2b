"""The what-if explorer in a real headless Chromium: pick and upload images, move the alpha slider,
switch detectors, and the bad inputs a user can make. Skipped only where no Chromium (and its
ChromeDriver) is installed: `apt-get install chromium chromium-driver`. Set ANOMALENS_SCREENSHOTS=DIR
to keep the screenshots (benchmarks/results/ holds the committed ones)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from anomalens.experiments.training_run import TrainJob, build_data
from test_predict import TINY_JOB, save_png, tiny_run

IN_CI = bool(os.environ.get("CI"))


def _need(module: str) -> None:
    """The serve extra and selenium are installed in CI: missing there is a failure, elsewhere a skip."""
    try:
        __import__(module)
    except ImportError:
        if IN_CI:
            raise
        pytest.skip(f"{module} is not installed: pip install -e '.[serve]' selenium")


def _chromium() -> tuple[str, str]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no Chromium and ChromeDriver found (Debian: apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny run with both explainers, and a copy of it without any (a detector alone)."""
    run = tiny_run(tmp_path_factory)
    bare = tmp_path_factory.mktemp("bare-run")
    for name in ("config.yaml", "detector.safetensors", "calibration.json"):
        shutil.copy(run / name, bare / name)
    return run, bare


@pytest.fixture(scope="module")
def server(runs):
    _need("starlette")
    _need("uvicorn")
    from anomalens.serve.app import Server, load_whatif

    running = Server(load_whatif(runs), port=0).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    _need("selenium")
    chromium, chromedriver = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1500", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(browser, condition, what: str, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def _text(browser, element_id: str) -> str:
    return browser.find_element("id", element_id).text


def _counterfactuals(browser) -> tuple[list[str], list[str]]:
    figures = browser.find_elements("css selector", "#counterfactuals figure")
    return ([f.find_element("tag name", "img").get_attribute("src") for f in figures],
            [f.get_attribute("data-score") for f in figures])


def _screenshot(browser, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("ANOMALENS_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / name))
    return folder / name


def _upload(browser, path: Path) -> None:
    browser.find_element("id", "upload").send_keys(str(path))


def test_what_if_in_a_real_browser(server, browser, runs, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    data = build_data(TrainJob(**TINY_JOB))
    browser.get(server.url)
    _wait(browser, lambda d: len(d.find_elements("css selector", "#examples button")) == 8, "test images listed")
    assert "8 MiB" in _text(browser, "limits")

    # pick a test anomaly: score, verdict, heatmap, K = 2 counterfactuals and the repair with its properties
    browser.find_elements("css selector", "#examples button")[0].click()
    _wait(browser, lambda d: _text(d, "score") != "", "the input's score")
    _wait(browser, lambda d: d.find_element("id", "repair").get_attribute("data-state") == "done", "the repair")
    first_score = browser.find_element("id", "score").get_attribute("data-score")
    assert _text(browser, "verdict").strip("→ ").strip() in ("normal", "anomalous")
    assert "split-conformal" in _text(browser, "decision")
    assert browser.find_element("id", "heatmap").get_attribute("src").startswith("data:image/png")
    assert len(browser.find_elements("css selector", "#repair figure.repaired .checks span")) == 4

    # upload an image of another size and colour: converted with a note, scored anew
    upload = save_png(tmp_path / "my part.png", data.test_x[(data.test_y == 1).nonzero()[5, 0]], size=48, rgb=True)
    _upload(browser, upload)
    _wait(browser, lambda d: d.find_element("id", "score").get_attribute("data-score") != first_score,
          "a new score for the uploaded image")
    assert "my part.png" in _text(browser, "note") and "resized from 48x48 to 32x32" in _text(browser, "note")
    _wait(browser, lambda d: d.find_element("id", "repair").get_attribute("data-state") == "done", "the repair")
    before_images, before_scores = _counterfactuals(browser)
    assert len(before_images) == 2 and all(s for s in before_scores)

    # move the slider: the target score changes, so do the counterfactuals and their scores
    slider = browser.find_element("id", "alpha")
    latencies = []
    for key, alpha in ((Keys.ARROW_RIGHT, "0.5"), (Keys.ARROW_RIGHT, "1")):
        slider.send_keys(key)
        _wait(browser, lambda d, a=alpha: d.find_element("id", "counterfactuals").get_attribute("data-alpha") == a,
              f"counterfactuals at alpha {alpha}")
        images, scores = _counterfactuals(browser)
        assert images != before_images and scores != before_scores
        before_images, before_scores = images, scores
        latencies.append(float(browser.find_element("id", "timing").get_attribute("data-ms")))
    assert _text(browser, "alpha-value") == "1"
    print(f"what-if latency (slider move -> new counterfactuals and scores on the page): "
          f"{', '.join(f'{ms:.0f}' for ms in latencies)} ms")
    _screenshot(browser, tmp_path, "serve_test_whatif.png")

    # nothing came from anywhere but this server
    origin = server.url.rstrip("/")
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(origin) for name in resources), resources

    # bad input: a clear message on the page, never a stack trace
    def message_after(action, expected: str) -> str:
        browser.execute_script("document.getElementById('message').hidden = true")
        action()
        _wait(browser, lambda d: d.find_element("id", "message").is_displayed(), f"a message containing {expected!r}")
        text = _text(browser, "message")
        assert expected in text and "Fix:" in text and "Traceback" not in text, text
        return text

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    message_after(lambda: _upload(browser, notes), "notes.txt: cannot be read as an image")
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (9 * 2**20))
    message_after(lambda: _upload(browser, huge), "above the upload limit of 8 MiB")
    strip = tmp_path / "strip.png"
    from PIL import Image

    Image.new("RGB", (300, 30)).save(strip)
    message_after(lambda: _upload(browser, strip), "strip.png: image is 300x30 pixels but the detector sees 32x32")
    _screenshot(browser, tmp_path, "serve_bad_input.png")

    # switch to the run folder without explainers: the same image, and what is missing says how to get it
    Select(browser.find_element("id", "run")).select_by_index(1)
    _wait(browser, lambda d: d.find_element("id", "cf-message").is_displayed(), "the missing explainer's message")
    assert "no counterfactual explainer" in _text(browser, "cf-message") and "Fix: anomalens explain" in _text(
        browser, "cf-message")
    _wait(browser, lambda d: d.find_element("id", "repair-message").is_displayed(), "the missing repair's message")
    assert "no repair model" in _text(browser, "repair-message")
    assert not browser.find_elements("css selector", "#counterfactuals figure")
    _screenshot(browser, tmp_path, "serve_no_explainer.png")


def test_the_server_itself_refuses_bad_requests(server):
    def request(path: str, data: bytes | None = None, name: str = "x.png") -> tuple[int, dict]:
        req = urllib.request.Request(server.url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"X-Filename": name})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = request("api/upload", b"\0" * (8 * 2**20 + 1), "big.bin")
    assert status == 413 and "big.bin is 8.0 MiB, above the upload limit of 8 MiB. Fix:" in body["error"]
    status, body = request("api/runs/0/analyze?ref=upload:0123&alpha=0")
    assert status == 400 and "no longer kept" in body["error"]
    status, body = request("api/runs/0/counterfactuals?ref=test:0&alpha=0.3")
    assert status == 400 and "alpha must be one of 0.0, 0.5, 1.0" in body["error"]
    status, body = request("api/runs/7/examples")
    assert status == 400 and "there is no run 7" in body["error"]
    status, body = request("api/runs/1/repair?ref=test:0")
    assert status == 200 and body["repair"] is None and "no repair model" in body["repair_message"]
    with urllib.request.urlopen(server.url, timeout=30) as response:
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert server.host == "127.0.0.1"


def test_a_folder_that_is_no_run_is_refused_before_serving(tmp_path):
    _need("starlette")
    from anomalens.errors import ConfigError
    from anomalens.serve.app import load_whatif

    with pytest.raises(ConfigError, match="detector.safetensors is missing. Fix: pass the folder of a finished"):
        load_whatif([tmp_path])
