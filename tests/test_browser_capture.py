"""Acceptance test of capture in the browser: headless Chromium reads a pairwise query on the
reference page, and what it did arrives in the encrypted device store, ready for the features.

The capture service runs with a replay file in a temporary device folder; Playwright drives
Debian's Chromium: the mouse moves along a path onto a known word of the left answer, gaze
points are pushed at a known word of the right answer through ``FedgazeCapture.pushGaze``, the
person prefers the right answer and reports a calibration, and the page is hidden and then left
(both flush with ``sendBeacon``). The committed store must hold the samples with the right
side and the caret index of the words pointed at, the label and the calibration, and
``fedgaze.features.v2.featurize`` must compute finite features from it.

Set ``FEDGAZE_WRITE_SCREENSHOT=1`` to (re)write docs/capture-page.png.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from fedgaze.client.capture.answers import Answer, ReplayAnswers, write_replay
from fedgaze.client.capture.sink import CaptureSink
from fedgaze.client.capture.web import STATIC_DIR, CaptureServer
from fedgaze.client.device.pause import set_paused
from fedgaze.client.device.store import load_device
from fedgaze.data.schema import PREF_RIGHT, SIDE_LEFT, SIDE_NONE, SIDE_RIGHT
from fedgaze.features.v2 import SIDE_FEATURE_NAMES, featurize

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path(os.environ.get("FEDGAZE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "capture-page.png"
LIBRARY = STATIC_DIR / "fedgaze-capture.js"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="the playwright Python package is not installed (pip install playwright)",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set FEDGAZE_CHROMIUM)",
    ),
    pytest.mark.timeout(180),
]

PROMPT = "How do I keep my sourdough starter alive while I travel for two weeks?"
LEFT = (
    "Feed it, then refrigerate it. A well-fed starter kept in the fridge slows down enough to "
    "survive two weeks without attention.\n\n"
    "1. Give it a generous feed (1:5:5 starter:flour:water) the day before you leave.\n"
    "2. Let it sit at room temperature for an hour so the yeast wakes up.\n"
    "3. Put it in a clean jar with a loose lid and store it at the back of the fridge.\n\n"
    "When you return, pour off any grey liquid (hooch), discard all but a spoonful, and feed "
    "it twice a day for two days. It will be bubbly again by the third feed."
)
RIGHT = (
    "Dry some of it. Spread a thin layer of active starter on baking paper, let it dry "
    "completely at room temperature (one to two days), then break it into flakes and keep them "
    "in an airtight jar.\n\n"
    "Dried flakes keep for months, so this is also a good backup. To revive them, soak a "
    "tablespoon of flakes in warm water for an hour, add equal weights of flour and water, and "
    "feed daily. Expect three to five days before it is strong enough to bake with."
)
TOMATO = (
    "Botanically, yes: a tomato develops from the flower's ovary and holds the plant's seeds. "
    "In the kitchen it is treated as a vegetable, because it is savoury."
)
MOUSE_WORD = ("left", "generous")
GAZE_WORD = ("right", "tablespoon")
GAZE_HZ = 30

_WORD_BOX = """([side, word]) => {
  const panel = document.getElementById("answer-" + side);
  const node = panel.firstChild;
  const start = node.nodeValue.indexOf(word);
  const range = document.createRange();
  range.setStart(node, start);
  range.setEnd(node, start + word.length);
  const r = range.getBoundingClientRect();
  return {x: r.left + r.width / 2, y: r.top + r.height / 2, start: start, width: r.width};
}"""

_PUSH_GAZE = """async ([x, y, n, hz]) => {
  for (let i = 0; i < n; i++) {
    FedgazeCapture.pushGaze(x + (i % 3) - 1, y, {validate: 1});
    await new Promise((done) => setTimeout(done, 1000 / hz));
  }
}"""

_HIDE = """() => {
  Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
  return FedgazeCapture.stats();
}"""


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[tuple[CaptureServer, CaptureSink]]:
    replay = write_replay(
        tmp_path / "replay.jsonl",
        [
            Answer(prompt=PROMPT, answers=(LEFT, RIGHT), task_id=7),
            Answer(prompt="Is a tomato a fruit?", answers=(TOMATO,), task_id=8),
        ],
    )
    sink = CaptureSink(tmp_path / "device")
    server = CaptureServer(sink, ReplayAnswers(replay))
    try:
        server.start()
        yield server, sink
    finally:
        server.stop()
        sink.close()


def _wait_for(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


@contextmanager
def _page(server: CaptureServer) -> Iterator[Page]:
    """The reference page of ``server`` in headless Chromium, its first query shown."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(10_000)
            page.goto(server.open_url())  # the one-time link: a session cookie, then the page
            assert page.url == server.url
            page.wait_for_function("() => window.fedgazePage && fedgazePage.current() !== null")
            yield page
        finally:
            browser.close()


def test_a_browser_without_the_link_gets_no_page_and_no_token(
    capture: tuple[CaptureServer, CaptureSink],
) -> None:
    from playwright.sync_api import sync_playwright

    server, sink = capture
    used = server.open_url()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            person = browser.new_context()
            assert person.new_page().goto(used).status == 200  # redirected: the page
            stranger = browser.new_page()  # another context: no cookie of the person's
            for url in (server.url, used):  # the bare page, and the link once it is used
                reply = stranger.goto(url)
                assert reply is not None and reply.status == 401
                html = stranger.content()
                assert "fedgaze client open" in html and server.token not in html
            status = stranger.evaluate(
                "() => fetch('/api/v1/status', {credentials: 'same-origin'}).then(r => r.status)"
            )
            assert status == 401
            cookies = person.cookies()
            assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
        finally:
            browser.close()
    assert sink.stats()["queries"] == 1  # only the person's page began a query


def _drive_page(server: CaptureServer, sink: CaptureSink) -> dict[str, Any]:
    """Read, point, rate and leave the page in Chromium; what the test needs to check."""
    with _page(server) as page:
        mouse_word = page.evaluate(_WORD_BOX, list(MOUSE_WORD))
        gaze_word = page.evaluate(_WORD_BOX, list(GAZE_WORD))

        # A scripted mouse path: from the page's corner onto the word, then resting on it.
        page.mouse.move(5, 5)
        page.mouse.move(mouse_word["x"], mouse_word["y"], steps=25)
        for dx in (-2, 2, -1, 1, 0):
            page.wait_for_timeout(40)
            page.mouse.move(mouse_word["x"] + dx, mouse_word["y"])
        page.evaluate(_PUSH_GAZE, [gaze_word["x"], gaze_word["y"], 40, GAZE_HZ])

        page.click("[data-pref='2']")
        page.wait_for_selector("[data-pref='2'][aria-pressed='true']")
        page.evaluate("() => FedgazeCapture.setCalibration(85)")
        page.wait_for_selector("#status:has-text('gaze: external')")
        if os.environ.get("FEDGAZE_WRITE_SCREENSHOT") == "1":
            page.screenshot(path=str(SCREENSHOT))

        # Hidden page: the queue goes out by beacon at once (not at the next timer tick).
        page.evaluate(_PUSH_GAZE, [gaze_word["x"], gaze_word["y"], 5, 1000])
        hidden = page.evaluate(_HIDE)
        # Leaving the page: pagehide sends what the last moment queued.
        page.evaluate(_PUSH_GAZE, [gaze_word["x"], gaze_word["y"], 7, 1000])
        page.goto("about:blank")
        _wait_for(lambda: sink.stats()["gaze_samples"] >= 52, "the beacons' gaze samples")
    return {"mouse_word": mouse_word, "gaze_word": gaze_word, "hidden": hidden}


def test_reading_in_chromium_lands_in_the_device_store(
    capture: tuple[CaptureServer, CaptureSink],
) -> None:
    server, sink = capture
    started_ms = time.time() * 1000.0
    seen = _drive_page(server, sink)
    assert seen["hidden"]["beacons"] >= 1 and seen["hidden"]["queued"] == 0

    sink.commit()
    device = load_device(sink.store_dir, key_path=sink.key_path)
    (query,) = device.queries
    assert (query.preference, query.response_left, query.task_id) == (PREF_RIGHT, LEFT, 7)
    assert dict(device.calibration) == {7: 85.0}

    mouse, gaze = query.mouse, query.gaze
    now_ms = time.time() * 1000.0
    for samples in (mouse, gaze):
        assert np.all((samples.t_ms >= started_ms - 1000) & (samples.t_ms <= now_ms))
        assert np.all(np.diff(samples.t_ms) >= 0)
    # The path starts off the answers, rests on the word, then goes to the preference button.
    assert mouse.side[0] == SIDE_NONE and mouse.char_index[0] == -1
    assert mouse.side[-1] == SIDE_NONE and mouse.char_index[-1] == -1
    start, end = seen["mouse_word"]["start"], seen["mouse_word"]["start"] + len(MOUSE_WORD[1])
    resting = mouse.char_index[mouse.side == SIDE_LEFT][-5:]
    assert len(resting) == 5 and np.all((resting >= start) & (resting <= end)), (resting, start)
    # Resting on the word while the gaze points arrive (~1.3 s) still records the mouse there.
    on_left = mouse.t_ms[mouse.side == SIDE_LEFT]
    assert on_left[-1] - on_left[0] >= 1000.0, np.diff(on_left)
    assert np.all(mouse.validate == -1)

    # Every gaze point (including the 12 sent by beacon) is on the right word, face box good.
    assert len(gaze) == 52
    start, end = seen["gaze_word"]["start"], seen["gaze_word"]["start"] + len(GAZE_WORD[1])
    assert np.all(gaze.side == SIDE_RIGHT) and np.all(gaze.validate == 1)
    assert np.all((gaze.char_index >= start) & (gaze.char_index <= end)), list(gaze.char_index)

    kinds = {(e.kind, e.detail) for e in sink.events()}
    assert {("click", "pref-right"), ("visibility", "hidden"), ("visibility", "pagehide")} <= kinds

    matrix = featurize(device.queries, device.calibration)
    assert matrix.X.shape == (1, 2, len(SIDE_FEATURE_NAMES)) and matrix.y.tolist() == [1.0]
    assert np.isfinite(matrix.X).all()
    col = {name: i for i, name in enumerate(SIDE_FEATURE_NAMES)}
    left, right = matrix.X[0, 0], matrix.X[0, 1]
    assert left[col["mouse_present"]] == 1.0 and left[col["mouse_count_rel"]] == 1.0
    assert left[col["mouse_pos_mean"]] > 0.0
    assert right[col["gaze_count_rel"]] == 1.0 and right[col["quality_gaze_usable"]] == 1.0
    assert right[col["quality_calibration"]] == pytest.approx(0.85)


def test_paused_page_records_nothing_then_next_shows_a_pointwise_answer(
    capture: tuple[CaptureServer, CaptureSink],
) -> None:
    server, sink = capture
    with _page(server) as page:
        paused_at = time.time() * 1000.0
        set_paused(sink.device_dir, True)
        try:
            page.mouse.move(5, 5)
            page.mouse.move(300, 300, steps=10)
            page.evaluate("() => FedgazeCapture.flush()")
            page.wait_for_selector("#status.paused:has-text('paused')")
            assert "paused" in (page.text_content("#message") or "")
        finally:
            set_paused(sink.device_dir, False)
            resumed_at = time.time() * 1000.0
        page.wait_for_selector("#status:not(.paused):has-text('recording mouse')")

        page.click("#next")
        page.wait_for_selector("#pointwise-rate:not([hidden])")
        assert page.is_hidden("#right-card") and page.is_hidden("#pairwise-rate")
        word = page.evaluate(_WORD_BOX, ["left", "ovary"])
        for dx in (-30, -10, 0, 10):
            page.wait_for_timeout(40)
            page.mouse.move(word["x"] + dx, word["y"])
        page.click("[data-likert='4']")
        page.wait_for_selector("[data-likert='4'][aria-pressed='true']")
        page.evaluate("() => FedgazeCapture.flush()")  # resolves when the agent has replied
        before = sink.stats()["events"]
        page.goto("about:blank")  # its pagehide event comes by beacon
        _wait_for(lambda: sink.stats()["events"] > before, "the pagehide beacon")

    device = sink.commit()
    first, second = device.queries
    assert second.pairwise is False and second.task_id == 8 and second.likert_left == 4.0
    assert np.any(second.mouse.side == SIDE_LEFT)
    for query in (first, second):
        t = query.mouse.t_ms
        assert not np.any((t >= paused_at) & (t <= resumed_at)), "recorded while paused"


_MARKUP = """<div id="panel" style="width: 420px; padding: 12px">
<h3>Short <em>title</em></h3>
<p>First paragraph with <b>bold <i>nested</i> words</b> and <code>inline code</code>.</p>
<ul><li>alpha item</li><li>beta <a href="#">linked</a> item</li></ul>
<p>Last paragraph.</p></div>"""

_LOCATE_WORDS = """() => {
  const panel = document.getElementById("panel");
  FedgazeCapture.start({endpoint: "http://127.0.0.1:9", token: "t", panels: {left: panel}});
  const text = panel.textContent;
  const walker = document.createTreeWalker(panel, NodeFilter.SHOW_TEXT);
  const found = [];
  let base = 0, node;
  while ((node = walker.nextNode())) {
    for (const m of node.nodeValue.matchAll(/[A-Za-z]{4,}/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const r = range.getBoundingClientRect();
      const got = FedgazeCapture.locate(r.left + r.width / 2, r.top + r.height / 2);
      found.push({word: m[0], start: base + m.index, got: got.charIndex, side: got.side});
    }
    base += node.nodeValue.length;
  }
  const box = panel.getBoundingClientRect();
  const gap = FedgazeCapture.locate(box.left + 4, box.top + 4);
  const outside = FedgazeCapture.locate(box.right + 50, box.top + 10);
  FedgazeCapture.stop();
  return {words: found, text: text, gap: gap, outside: outside};
}"""


def test_caret_index_counts_the_whole_text_of_a_marked_up_panel() -> None:
    """Any chat page: answers rendered as HTML (nested inline and block elements) map each
    word to its offset in the panel's ``textContent``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.set_content(_MARKUP)
            page.add_script_tag(path=str(LIBRARY))
            seen = page.evaluate(_LOCATE_WORDS)
        finally:
            browser.close()
    assert len(seen["words"]) >= 12
    for w in seen["words"]:
        assert w["side"] == "left"
        assert w["start"] <= w["got"] <= w["start"] + len(w["word"]), w
        assert seen["text"][w["start"] : w["start"] + len(w["word"])] == w["word"]
    assert seen["gap"]["side"] == "left" and 0 <= seen["gap"]["charIndex"] <= len(seen["text"])
    assert seen["outside"] == {"side": "none", "charIndex": -1}
