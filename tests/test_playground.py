"""The playground page (server/ui.py, server/static/): routes, --no-ui, its colour scale, and the page
itself in a real browser — Debian's headless chromium driven by selenium through chromium-driver —
against a real uvicorn server on the embedded SmolLM2-135M-Instruct.

The browser tests check the page against the bytes the server actually sent: Chrome's DevTools
protocol hands back the body of the page's streaming request, which the test parses itself.

Needs ``chromium`` and ``chromedriver`` (``make browser`` installs them with apt-get; ``make test``
runs it first). Without them the browser tests fail, saying how to install them; they never skip.
Screenshots are written to ``$INTROLLM_ARTIFACTS`` (default ``test-artifacts/``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from conftest import live_server

from introllm.clients.render import tau_colour
from introllm.server.config import ServerConfig

KEY = "playground-test-key"
ARTIFACTS = Path(os.environ.get("INTROLLM_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
INSTALL_HINT = (
    "the playground tests need Debian's headless chromium and its driver: run `make browser` (as root it runs "
    "`apt-get install -y chromium chromium-driver`), or `sudo apt-get install chromium chromium-driver`, or point "
    "INTROLLM_CHROMIUM and INTROLLM_CHROMEDRIVER at a chromium and a matching chromedriver"
)


# --------------------------------------------------------------------------- routes, no browser


def test_page_and_assets_are_served_with_a_strict_csp(server_url):
    r = httpx.get(server_url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    for src in re.findall(r'(?:src|href)="(/[^"]+)"', r.text):  # every asset the page links resolves
        assert httpx.get(server_url + src).status_code == 200, src
    assert "http://" not in r.text and "https://" not in r.text  # nothing from another origin (no CDN)
    assert httpx.get(server_url + "/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(server_url + "/ui/index.html").status_code == 404  # only the listed assets
    assert httpx.get(server_url + "/ui/../config.py").status_code == 404


def test_page_script_never_parses_text_as_html():
    """Model output is untrusted: the script only ever sets textContent / dataset, never markup or code."""
    from introllm.server import ui

    js = (ui.STATIC / "app.js").read_text()
    assert "textContent" in js
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("on',
    ):
        assert sink not in js, sink


def test_ui_config_gives_the_heads_range_and_the_policies(server_url, embedded):
    from introllm.sampler.policies import policy_names

    cfg = httpx.get(server_url + "/ui/config").json()
    assert (cfg["tau_min"], cfg["tau_max"]) == (embedded.head.config.tau_min, embedded.head.config.tau_max)
    assert cfg["policies"] == policy_names() and cfg["head"] is True
    # `introllm complete` colours on that range (the client reads it)
    from introllm.clients import Client

    assert Client(server_url).head_range() == pytest.approx((cfg["tau_min"], cfg["tau_max"]))


def test_no_ui_turns_the_page_off(embedded):
    with live_server(ServerConfig(ui=False), checkpoint=embedded) as url:
        for path in ("/", "/ui/app.js", "/ui/config"):
            r = httpx.get(url + path)
            assert r.status_code == 404, path
            assert r.json()["error"]["message"] == f"no route {path}"
        assert httpx.get(url + "/health").status_code == 200  # the API itself is unchanged
        from introllm.clients import Client

        assert Client(url).head_range() == (0.6, 1.5)  # no page, no range said: the paper's


def test_cli_no_ui_flag_reaches_the_server_config(monkeypatch):
    import introllm.server.app as server_app
    from introllm.cli import main

    seen = []
    monkeypatch.setattr(server_app, "serve", seen.append)
    assert main(["serve", "--no-ui"]) in (0, None)
    assert main(["serve"]) in (0, None)
    assert [c.ui for c in seen] == [False, True]


@pytest.mark.slow
def test_page_files_are_packaged(tmp_path):
    """setuptools' build_py (what a wheel holds), run on a copy of the sources, copies the page."""
    import subprocess
    import sys

    from introllm.server import ui

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "introllm", "sampler", "server", "training", "clients", "benchmarks"):
        (shutil.copytree if (root / name).is_dir() else shutil.copy)(root / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(tmp_path / "lib"),
        ],
        cwd=src,
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in ["index.html", *ui.ASSETS]:
        built = tmp_path / "lib" / "introllm" / "server" / "static" / name
        assert built.is_file(), f"{name} is not packaged (pyproject.toml [tool.setuptools.package-data])"
        assert built.read_bytes() == (ui.STATIC / name).read_bytes()


# --------------------------------------------------------------------------- the colour scale


def _rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return r, g, b


# Machado, Oliveira & Fernandes (2009), "A physiologically-based model for simulation of color vision
# deficiency", severity 1.0 matrices, applied to linear RGB.
_CVD = {
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413), (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602), (0.004733, 0.691367, 0.303900)),
    "normal": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
}


def _linear(rgb):
    return [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]


def _lab(lin):
    """CIELAB (D65) of a linear-RGB colour."""
    xyz = [
        sum(m * c for m, c in zip(row, lin))
        for row in ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
    ]
    f = [
        t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29
        for t in (v / n for v, n in zip(xyz, (0.95047, 1.0, 1.08883)))
    ]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def test_palette_stays_readable_for_colour_blind_people():
    """The scale (blue -> light grey -> red) under simulated protanopia, deuteranopia and tritanopia:
    the ends stay far apart and every step of the legend stays visible (CIE76 delta E; about 2.3 is
    just noticeable), and black text keeps WCAG AA contrast (>= 4.5:1) on every colour."""
    taus = [0.6 + 0.9 * k / 8 for k in range(9)]
    for name, m in _CVD.items():
        labs = []
        for tau in [*taus, 0.0]:
            lin = _linear(_rgb(tau_colour(tau)))
            labs.append(_lab([min(max(sum(a * c for a, c in zip(row, lin)), 0.0), 1.0) for row in m]))
        steps = [math.dist(labs[i], labs[i + 1]) for i in range(8)]
        assert min(steps) > 5, (name, steps)
        assert math.dist(labs[0], labs[8]) > 80, name  # cold vs hot
        assert min(math.dist(labs[9], labs[i]) for i in (0, 8)) > 30, name  # greedy grey vs the ends
    for tau in [*taus, 0.0]:
        lum = sum(w * c for w, c in zip((0.2126, 0.7152, 0.0722), _linear(_rgb(tau_colour(tau)))))
        assert (lum + 0.05) / 0.05 >= 4.5, tau


# --------------------------------------------------------------------------- the browser


def _find(env: str, names: list[str], extra: list[str]) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if Path(os.environ[env]).is_file() else None
    for n in names:
        if shutil.which(n):
            return shutil.which(n)
    return next((p for p in extra if Path(p).is_file()), None)


@pytest.fixture(scope="module")
def browser():
    """Headless chromium (Debian's package) under selenium, with the DevTools network log on."""
    chromium = _find("INTROLLM_CHROMIUM", ["chromium", "chromium-browser"], ["/usr/lib/chromium/chromium"])
    driver_path = _find(
        "INTROLLM_CHROMEDRIVER", ["chromedriver"], ["/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver"]
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[dev]'; " + INSTALL_HINT, pytrace=False)
    if chromium is None or driver_path is None:
        pytest.fail(
            f"chromium: {chromium or 'not found'}, chromedriver: {driver_path or 'not found'}. " + INSTALL_HINT,
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def pg_server(embedded):
    """A server with an API key, room for two sequences and two waiting requests (compare mode sends
    two at once: both may wait in the queue for a moment)."""
    with live_server(ServerConfig(api_key=KEY, max_batch=2, max_queue=2, max_tokens=600), checkpoint=embedded) as url:
        yield url


def _head_range(url: str) -> tuple[float, float]:
    """The served head's [tau_min, tau_max], as the page reads it (GET /ui/config)."""
    cfg = httpx.get(url + "/ui/config").json()
    return cfg["tau_min"], cfg["tau_max"]


def _metric(url: str, name: str, labels: str = "") -> float:
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})  # --api-key covers /metrics
    assert r.status_code == 200, r.text
    text = r.text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(poll)


def _open(
    driver,
    url: str,
    key: str = KEY,
    compare: str | None = None,
    max_tokens: int = 48,
    policy: str = "learned",
    seed: int | None = 7,
):
    """Load the page fresh, wait for it to connect, and fill in the settings. A seed makes the
    replies, hence the tests, the same on every run (the torch engine's seeds do not depend on the
    batch)."""
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/")
    _wait(lambda: driver.find_element("id", "send").is_enabled(), 60, "the page to find the model")
    driver.get_log("performance")  # drop the start-up's network events
    key_field = driver.find_element("id", "api-key")
    key_field.clear()
    key_field.send_keys(key)
    Select(driver.find_element("id", "policy-a")).select_by_value(policy)
    if compare:
        driver.find_element("id", "compare").click()
        Select(driver.find_element("id", "policy-b")).select_by_value(compare)
    mt = driver.find_element("id", "max-tokens")
    mt.clear()
    mt.send_keys(str(max_tokens))
    if seed is not None:
        driver.find_element("id", "seed").send_keys(str(seed))


def _ask(driver, prompt: str):
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("id", "prompt")
    box.send_keys(prompt)
    box.send_keys(Keys.ENTER)  # the keyboard path: Enter sends


def _states(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('.pane')].map(p => p.dataset.state)")


def _wait_finished(driver, timeout: float = 120) -> list[str]:
    return _wait(
        lambda: (s := _states(driver)) and all(x not in ("idle", "streaming") for x in s) and s, timeout, "the replies"
    )


def _chat_exchanges(driver) -> list[dict]:
    """Each /v1/chat/completions request the page made since the last call: its body, headers and
    the response body as received (Chrome DevTools protocol)."""
    requests, finished = {}, set()
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent" and params["request"]["url"].endswith("/v1/chat/completions"):
            requests[params["requestId"]] = params["request"]
        elif msg["method"] == "Network.loadingFinished":
            finished.add(params["requestId"])
    out = []
    for rid, req in requests.items():
        assert rid in finished, "a chat request did not finish"
        body = driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": rid})["body"]
        out.append({"request": json.loads(req["postData"]), "headers": req["headers"], "body": body})
    return out


def _parse_stream(body: str) -> dict:
    """The reply as the SSE body gives it: content text, trace, log-probs, finish reason, usage."""
    text, trace, logps, finish, usage = "", {"tokens": [], "temperatures": [], "updated": []}, [], None, None
    events = [e[len("data: ") :] for e in body.split("\n\n") if e.startswith("data: ")]
    assert events and events[-1] == "[DONE]"
    for data in events[:-1]:
        chunk = json.loads(data)
        usage = chunk.get("usage") or usage
        for c in chunk["choices"]:
            text += c["delta"].get("content") or ""
            for k in trace:  # the first chunk (the role) has no tokens and no trace
                trace[k] += c.get("temperature_trace", {}).get(k, [])
            logps += [e["logprob"] for e in (c["logprobs"] or {"content": []})["content"]]
            finish = c["finish_reason"] or finish
    return {"text": text, "trace": trace, "logprobs": logps, "finish": finish, "usage": usage}


def _tokens(driver, pane: int) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('.pane')[arguments[0]].querySelectorAll('.reply .tok')].map(s => ({
             text: s.textContent, bg: getComputedStyle(s).backgroundColor, upd: s.classList.contains('upd'),
             tau: Number(s.dataset.tau), i: Number(s.dataset.i)}))""",
        pane,
    )


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not an empty frame
    return path


@pytest.mark.slow
def test_page_colour_function_is_the_terminal_scale(browser, pg_server):
    browser.get(pg_server + "/")
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')].filter(e => !e.labels.length).map(e => e.id)"
    )
    assert unlabelled == []  # every control has a <label>
    assert [b.text for b in browser.find_elements("tag name", "button")] == ["Send", "Stop", "Clear conversation"]
    taus = [-1.0, 0.0, 0.05, 0.3, 0.6, 0.6000001, 0.7, 0.8123, 0.95, 1.0, 1.05, 1.2, 1.37, 1.5, 1.9, 5.0]
    taus += [0.6 + 0.9 * k / 1000 for k in range(1001)]
    for lo, hi in ((0.6, 1.5), (0.1, 2.0)):
        got = browser.execute_script(
            "return arguments[0].map(t => window.IntroLLM.tauColour(t, arguments[1], arguments[2]))", taus, lo, hi
        )
        assert got == [tau_colour(t, lo, hi) for t in taus]


@pytest.mark.slow
def test_chat_streams_each_token_coloured_by_its_tau(browser, pg_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open(browser, pg_server, max_tokens=40)
    _ask(browser, "What is the capital of France? Answer in one sentence.")
    assert _wait_finished(browser) == ["done"], browser.find_element("css selector", ".error").text
    [ex] = _chat_exchanges(browser)
    assert ex["headers"]["Authorization"] == f"Bearer {KEY}"  # the key field's value, sent on /v1/*
    assert (
        ex["request"]["stream"] is True and ex["request"]["logprobs"] is True and ex["request"]["policy"] == "learned"
    )
    assert ex["request"]["seed"] == 7 and ex["request"]["max_tokens"] == 40
    assert ex["request"]["messages"][-1] == {
        "role": "user",
        "content": "What is the capital of France? Answer in one sentence.",
    }
    reply = _parse_stream(ex["body"])
    n = len(reply["trace"]["tokens"])
    assert n > 0 and n == reply["usage"]["completion_tokens"] == len(reply["logprobs"])

    toks = _tokens(browser, 0)
    assert len(toks) == n  # one rendered token per trace entry
    assert "".join(t["text"] for t in toks) == reply["text"]  # and together they are the response's text
    assert [t["text"] for t in toks] == reply["trace"]["tokens"]
    lo, hi = _head_range(pg_server)
    for t, tau, upd in zip(toks, reply["trace"]["temperatures"], reply["trace"]["updated"]):
        assert _rgb(t["bg"]) == _rgb(tau_colour(tau, lo, hi)), (t, tau)  # the colour maps its tau on the head's range
        assert t["upd"] == upd  # update flags marked
    assert any(reply["trace"]["updated"])  # the default head updates (and seed 7 gives some)

    # Hover: tau, flag and log-prob of that token.
    i = reply["trace"]["updated"].index(True)
    span = browser.find_elements("css selector", ".reply .tok")[i]
    ActionChains(browser).move_to_element(span).perform()
    details = browser.find_element("id", "details").text
    assert f"token {i} " in details and f"tau {reply['trace']['temperatures'][i]:.3f}" in details
    assert "updated (a new temperature" in details and f"log-prob {reply['logprobs'][i]:.3f}" in details

    # Keyboard: focus the conversation, End jumps to the last token.
    log_el = browser.find_element("css selector", ".pane .log")
    log_el.send_keys(Keys.END)
    details = browser.find_element("id", "details").text
    assert details.startswith(f"token {n - 1} ") and f"tau {reply['trace']['temperatures'][-1]:.3f}" in details

    summary = browser.find_element("css selector", ".summary").text
    taus = reply["trace"]["temperatures"]
    assert f"{n} tokens · mean tau {sum(taus) / n:.3f} · {sum(reply['trace']['updated'])} updates" in summary
    assert re.search(r"[\d.]+ tok/s", summary) and f"finished ({reply['finish']})" in summary
    _screenshot(browser, "playground-chat.png")


@pytest.mark.slow
def test_compare_mode_sends_one_prompt_under_two_policies(browser, pg_server):
    _open(browser, pg_server, compare="greedy", max_tokens=40)
    _ask(browser, "Write one sentence about the sea.")
    assert _wait_finished(browser) == ["done", "done"], [
        e.text for e in browser.find_elements("css selector", ".error")
    ]
    exchanges = sorted(_chat_exchanges(browser), key=lambda e: e["request"]["policy"])
    assert [e["request"]["policy"] for e in exchanges] == ["greedy", "learned"]
    assert exchanges[0]["request"]["messages"] == exchanges[1]["request"]["messages"]
    assert exchanges[0]["request"]["seed"] == exchanges[1]["request"]["seed"] == 7
    greedy, learned = (_parse_stream(e["body"]) for e in exchanges)
    assert set(greedy["trace"]["temperatures"]) == {0.0}
    lo, hi = _head_range(pg_server)
    assert all(lo <= t <= hi for t in learned["trace"]["temperatures"])
    titles = [e.text for e in browser.find_elements("css selector", ".pane-title")]
    assert titles == ["A: learned", "B: greedy"]
    for pane, reply in ((0, learned), (1, greedy)):
        toks = _tokens(browser, pane)
        assert "".join(t["text"] for t in toks) == reply["text"] and len(toks) == len(reply["trace"]["tokens"])
        assert [_rgb(t["bg"]) for t in toks] == [
            _rgb(tau_colour(tau, lo, hi)) for tau in reply["trace"]["temperatures"]
        ]
    _screenshot(browser, "playground-compare.png")


@pytest.mark.slow
def test_stop_cancels_the_request_and_frees_the_slot(browser, pg_server):
    cancelled = lambda: _metric(pg_server, "introllm_requests_total", '{endpoint="/v1/chat/completions",status="499"}')  # noqa: E731
    before = cancelled()
    _open(browser, pg_server, max_tokens=500)
    # a reply longer than the test needs to stop it (the default head, seed 7: 300+ tokens)
    _ask(browser, "Write a long story about a dragon, at least 400 words.")
    _wait(lambda: len(browser.find_elements("css selector", ".reply .tok")) >= 5, 60, "the first tokens")
    assert _states(browser) == ["streaming"]
    assert _metric(pg_server, "introllm_running_sequences") >= 1  # the request holds a slot now
    browser.find_element("id", "stop").click()
    assert _wait_finished(browser, 30) == ["stopped"]
    _wait(
        lambda: _metric(pg_server, "introllm_running_sequences") == 0, 30, "introllm_running_sequences to return to 0"
    )
    _wait(lambda: cancelled() == before + 1, 10, "the server to count the request as cancelled (499)")
    assert len(browser.find_elements("css selector", ".reply .tok")) < 500
    assert "stopped" in browser.find_element("css selector", ".summary").text
    assert browser.find_element("id", "send").is_enabled() and not browser.find_element("id", "stop").is_enabled()

    # The keyboard way: Escape stops too. (A fresh conversation, so that the same seeded reply comes.)
    from selenium.webdriver.common.keys import Keys

    browser.find_element("id", "clear").click()
    _ask(browser, "Write a long story about a dragon, at least 400 words.")
    _wait(lambda: len(browser.find_elements("css selector", ".reply .tok")) >= 5, 60, "the first tokens")
    assert _states(browser) == ["streaming"] and _metric(pg_server, "introllm_running_sequences") >= 1
    browser.find_element("id", "prompt").send_keys(Keys.ESCAPE)
    assert _wait_finished(browser, 30) == ["stopped"]
    _wait(
        lambda: _metric(pg_server, "introllm_running_sequences") == 0, 30, "introllm_running_sequences to return to 0"
    )
    _wait(lambda: cancelled() == before + 2, 10, "the second cancellation (499)")


@pytest.mark.slow
def test_server_errors_are_shown_as_messages(browser, pg_server):
    # 401: a wrong key.
    _open(browser, pg_server, key="wrong-key")
    _ask(browser, "Hello")
    assert _wait_finished(browser, 30) == ["error"]
    error = browser.find_element("css selector", ".error")
    assert error.is_displayed() and error.text == "Error 401: incorrect API key provided (check the API key field)"

    # 400: more tokens than the server allows; the body's message is shown as is.
    _open(browser, pg_server, max_tokens=5000)
    _ask(browser, "Hello")
    assert _wait_finished(browser, 30) == ["error"]
    assert (
        browser.find_element("css selector", ".error").text
        == "Error 400: max_tokens is 5000; this server allows at most 600"
    )

    # 429: two sequences running and two waiting fill this server (max_batch=2, max_queue=2).
    body = {
        "model": httpx.get(pg_server + "/health").json()["model"],
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    client = httpx.Client(base_url=pg_server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    held = []
    try:
        for running, waiting in ((1, 0), (2, 0), (2, 1), (2, 2)):  # one at a time, so that none of them is refused
            r = client.send(client.build_request("POST", "/v1/chat/completions", json=body), stream=True)
            assert r.status_code == 200
            held.append(r)
            _wait(
                lambda: (
                    (_metric(pg_server, "introllm_running_sequences"), _metric(pg_server, "introllm_queue_depth"))
                    == (running, waiting)
                ),
                30,
                f"{running} running and {waiting} waiting",
            )
        _open(browser, pg_server)
        _ask(browser, "Hello")
        assert _wait_finished(browser, 30) == ["error"]
        text = browser.find_element("css selector", ".error").text
        assert text.startswith("Error 429: the server is busy: 2 requests are already waiting")
        _screenshot(browser, "playground-429.png")
    finally:
        for r in held:
            r.close()
        client.close()
    _wait(
        lambda: (
            _metric(pg_server, "introllm_running_sequences") == 0 and _metric(pg_server, "introllm_queue_depth") == 0
        ),
        30,
        "the held requests to end",
    )
    # After an error the conversation is still usable: the failed turn is not resent.
    browser.get_log("performance")
    _ask(browser, "Say hi.")
    assert _wait_finished(browser) == ["done"]
    [ex] = _chat_exchanges(browser)
    assert ex["request"]["messages"] == [{"role": "user", "content": "Say hi."}]
