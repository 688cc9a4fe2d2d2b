"""Screenshots of the what-if explorer and the latency of one what-if interaction, in headless Chromium.

    python benchmarks/serve_whatif.py RUN_DIR [RUN_DIR ...] [--out benchmarks/results] [--name serve_whatif]

Serves the runs, picks the first test anomaly of the first run, waits for its repair, then moves the
alpha slider back and forth ``--moves`` times, timing each move from the key press to the new
counterfactuals on the page (the page's own measurement, ``#timing``). Writes ``<name>.png`` (after
the first move back to alpha = 0) and ``<name>.json`` (latencies). Needs `pip install -e ".[serve]"
selenium` and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import torch
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from anomalens.logs import setup_logging
from anomalens.serve.app import Server, load_whatif


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="serve_whatif")
    parser.add_argument("--example", type=int, default=0, help="which offered test image to pick")
    parser.add_argument("--moves", type=int, default=10)
    args = parser.parse_args()
    setup_logging()
    whatif = load_whatif(args.runs)
    runs = [{"run": r["run_dir"], "detector": r["name"], "image_shape": r["image_shape"], "concepts": r["concepts"],
             "explainer_steps": run.counterfactual.step if run.counterfactual else None}
            for r, run in zip(whatif.info()["runs"], whatif.runs)]
    server = Server(whatif, port=0).start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1450"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    wait = WebDriverWait(browser, 120, poll_frequency=0.02)
    try:
        browser.get(server.url)
        wait.until(lambda d: d.find_elements("css selector", "#examples button"))
        browser.find_elements("css selector", "#examples button")[args.example].click()
        wait.until(lambda d: d.find_element("id", "repair").get_attribute("data-state") == "done")
        slider = browser.find_element("id", "alpha")
        latencies = []
        for move in range(args.moves):
            key, alpha = (Keys.ARROW_RIGHT, "0.5") if move % 2 == 0 else (Keys.ARROW_LEFT, "0")
            slider.send_keys(key)
            wait.until(lambda d, a=alpha: d.find_element("id", "counterfactuals").get_attribute("data-alpha") == a)
            latencies.append(float(browser.find_element("id", "timing").get_attribute("data-ms")))
            if move == 1:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(Path(args.out) / f"{args.name}.png"))
    finally:
        browser.quit()
        server.stop()
    result = {"runs": runs, "picked": f"run 0, offered test image {args.example}", "moves": len(latencies),
              "median_ms": round(statistics.median(latencies), 1), "max_ms": round(max(latencies), 1),
              "latencies_ms": [round(v, 1) for v in latencies], "cpu_threads": torch.get_num_threads()}
    (Path(args.out) / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
