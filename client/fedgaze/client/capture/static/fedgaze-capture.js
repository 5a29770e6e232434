/*
 * fedgaze-capture.js — records how a person reads answers in a chat page (mouse, scroll,
 * clicks, selection, copy, visibility and gaze) and posts it to the fedgaze agent on
 * 127.0.0.1. Plain JavaScript, no build step, no dependencies; works in any chat page.
 *
 *   FedgazeCapture.start({
 *     endpoint: "http://127.0.0.1:PORT",   // the agent; "" = same origin
 *     token: "...",                        // the agent's API token; omit on the agent's own page
 *     queryId: 123, taskId: 7,             // what is on screen now (see setQuery)
 *     panels: {left: elementA, right: elementB},   // right omitted for one answer
 *     batchMs: 1000, maxBatch: 200, mouseMinMs: 20, mouseIdleMs: 250,
 *     gaze: "auto",                        // "auto" (WebGazer if present) | "external" | "none"
 *     onStatus: function (status) {...},   // {recording, paused, gaze, sent, dropped, error}
 *     onGaze: function (x, y) {...},       // every gaze point (e.g. to measure calibration)
 *   });
 *   FedgazeCapture.pushGaze(x, y, {t: epochMs, validate: 1});   // any eye tracker
 *   FedgazeCapture.setQuery(queryId, taskId);  // new answers on screen (flushes first)
 *   FedgazeCapture.setCalibration(precisionPercent);
 *   FedgazeCapture.flush(); FedgazeCapture.stop(); FedgazeCapture.stats();
 *
 * Each point (x, y in viewport CSS pixels) is mapped to the answer panel under it and the caret
 * offset there (document.caretPositionFromPoint, or caretRangeFromPoint), counted in characters
 * of the panel's whole text (textContent, all text nodes in order); -1 when there is none.
 * The answer text itself is never sent: the agent already has it. A ~20 character snippet of
 * the text under recent points is kept in memory only, for debugging (FedgazeCapture.debug()).
 * Timestamps: t_ms is epoch milliseconds (performance.timeOrigin + performance.now(), so it
 * is monotonic within the page); the page-relative performance.now() of recent points is kept
 * in debug() only (the agent's contract takes epoch times).
 *
 * Mouse: a sample per move (at most one per mouseMinMs), and while the pointer rests in the
 * window a sample every mouseIdleMs at its last position, so that resting on a passage counts
 * as time there (the IFLLM study read the mouse at every gaze estimate, moving or not).
 *
 * Delivery: items are batched and posted as {"items": [...]} to /api/v1/samples every batchMs
 * or every maxBatch items; when the page is hidden or unloaded the queue is sent with
 * navigator.sendBeacon so the last samples are not lost. Credentials: on the agent's own page
 * (endpoint "") the browser's HttpOnly session cookie, which fetch and sendBeacon carry; a page
 * of another, operator-allowed origin passes the agent's API token instead (header, and in the
 * URL of a beacon, which cannot set headers). On HTTP 409 (capture paused on the device)
 * recording stops and the queue is dropped until the agent reports it resumed.
 */
(function (global) {
  "use strict";

  var SIDES = ["left", "right"];
  var BEACON_LIMIT = 60000; // bytes; browsers cap keepalive/beacon bodies at 64 KiB
  var MAX_QUEUE = 20000; // items kept while the agent is unreachable; oldest dropped beyond
  var DEBUG_KEEP = 50;
  var PAUSE_POLL_MS = 3000;

  var s = null; // the running capture's state

  function epochNow() {
    var origin = performance.timeOrigin || Date.now() - performance.now();
    return origin + performance.now();
  }

  function timed(fn) {
    // Wraps an event handler so its own cost is measured (stats().js_ms).
    return function (ev) {
      if (!s) return;
      var t0 = performance.now();
      try {
        fn(ev);
      } finally {
        if (s) s.stats.js_ms += performance.now() - t0;
      }
    };
  }

  // ---- text offsets -------------------------------------------------------------------

  function textIndex(panel) {
    // Every text node of the panel in document order with its start offset in the panel text.
    var nodes = [];
    var starts = [];
    var total = 0;
    var walker = document.createTreeWalker(panel, NodeFilter.SHOW_TEXT, null);
    var node;
    while ((node = walker.nextNode())) {
      nodes.push(node);
      starts.push(total);
      total += node.nodeValue.length;
    }
    return { nodes: nodes, starts: starts, length: total, text: null };
  }

  function indexOf(side) {
    if (!s.text[side]) s.text[side] = textIndex(s.panels[side]);
    return s.text[side];
  }

  function offsetIn(side, node, offset) {
    // The caret (node, offset) as a character offset into the panel's text, -1 if outside.
    var panel = s.panels[side];
    if (!node || !panel.contains(node)) return -1;
    var idx = indexOf(side);
    if (node.nodeType === Node.TEXT_NODE) {
      var i = idx.nodes.indexOf(node);
      return i < 0 ? -1 : idx.starts[i] + Math.min(offset, node.nodeValue.length);
    }
    // An element caret: offset counts child nodes; find the first text node at or after it.
    var child = node.childNodes[offset] || null;
    for (var k = 0; k < idx.nodes.length; k++) {
      var t = idx.nodes[k];
      if (child === null) {
        if (!node.contains(t) && node.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING) return idx.starts[k];
      } else if (child === t || child.contains(t) || (child.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING)) {
        return idx.starts[k];
      }
    }
    return idx.length;
  }

  function caretAt(x, y) {
    if (document.caretPositionFromPoint) {
      var p = document.caretPositionFromPoint(x, y);
      return p ? { node: p.offsetNode, offset: p.offset } : null;
    }
    if (document.caretRangeFromPoint) {
      var r = document.caretRangeFromPoint(x, y);
      return r ? { node: r.startContainer, offset: r.startOffset } : null;
    }
    return null;
  }

  function sideAt(x, y) {
    for (var i = 0; i < SIDES.length; i++) {
      var el = s.panels[SIDES[i]];
      if (!el) continue;
      var r = el.getBoundingClientRect();
      if (x >= r.left && x <= r.right && y >= r.top && y <= r.bottom) return SIDES[i];
    }
    return "none";
  }

  function locate(x, y) {
    // {side, charIndex, snippet} of the viewport point (x, y).
    var side = sideAt(x, y);
    if (side === "none" || !isFinite(x) || !isFinite(y)) return { side: side, charIndex: -1, snippet: "" };
    var c = caretAt(x, y);
    var ci = c ? offsetIn(side, c.node, c.offset) : -1;
    return { side: side, charIndex: ci, snippet: ci >= 0 ? snippetAt(side, ci) : "" };
  }

  function snippetAt(side, ci) {
    var idx = indexOf(side);
    if (idx.text === null) idx.text = s.panels[side].textContent;
    return idx.text.slice(Math.max(0, ci - 10), ci + 10);
  }

  function resetText() {
    if (s) s.text = { left: null, right: null };
  }

  // ---- queue and delivery ---------------------------------------------------------------

  function remember(kind, x, y, loc) {
    s.debug.push({
      type: kind, page_ms: performance.now(), x: x, y: y,
      side: loc.side, char_index: loc.charIndex, snippet: loc.snippet,
    });
    if (s.debug.length > DEBUG_KEEP) s.debug.shift();
  }

  function enqueue(item) {
    if (!s || s.paused || s.queryId === null) return;
    s.queue.push(item);
    if (s.queue.length > MAX_QUEUE) {
      s.queue.splice(0, s.queue.length - MAX_QUEUE);
      s.stats.dropped += 1;
    }
    if (s.queue.length >= s.opts.maxBatch) flush();
  }

  function point(kind, x, y, t, validate) {
    var loc = locate(x, y);
    remember(kind, x, y, loc);
    enqueue({
      type: kind,
      query_id: s.queryId,
      t_ms: t,
      x: Math.round(x * 10) / 10,
      y: Math.round(y * 10) / 10,
      side: loc.side,
      char_index: loc.charIndex,
      validate: validate,
    });
  }

  function recordEvent(kind, x, y, detail) {
    var loc = x === null ? { side: "none", charIndex: -1, snippet: "" } : locate(x, y);
    var t = epochNow();
    enqueue({
      type: kind,
      query_id: s.queryId,
      t_ms: t,
      side: loc.side,
      char_index: loc.charIndex,
      detail: String(detail).slice(0, 64),
    });
  }

  function url(path, withToken) {
    var base = s.opts.endpoint.replace(/\/$/, "");
    var token = withToken && s.opts.token;
    return base + path + (token ? "?token=" + encodeURIComponent(token) : "");
  }

  function request(state, extra) {
    // fetch() options: the API token when given, else the session cookie (same origin).
    var headers = {};
    for (var k in extra.headers || {}) headers[k] = extra.headers[k];
    if (state.opts.token) headers["X-Fedgaze-Token"] = state.opts.token;
    var init = { headers: headers, credentials: state.opts.token ? "omit" : "same-origin" };
    for (var key in extra) if (key !== "headers") init[key] = extra[key];
    return init;
  }

  function report(patch) {
    if (!s) return;
    for (var k in patch) s.status[k] = patch[k];
    if (s.opts.onStatus) {
      try {
        s.opts.onStatus(Object.assign({}, s.status, { sent: s.stats.items_sent, dropped: s.stats.dropped }));
      } catch (e) {
        /* the page's callback must not stop capture */
      }
    }
  }

  function chunks(items) {
    // Split into bodies small enough for a beacon / keepalive fetch.
    var out = [];
    var cur = [];
    var size = 12;
    for (var i = 0; i < items.length; i++) {
      var n = JSON.stringify(items[i]).length + 1;
      if (cur.length && size + n > BEACON_LIMIT) {
        out.push(cur);
        cur = [];
        size = 12;
      }
      cur.push(items[i]);
      size += n;
    }
    if (cur.length) out.push(cur);
    return out;
  }

  function post(items) {
    var body = JSON.stringify({ items: items });
    s.stats.requests += 1;
    s.stats.bytes += body.length;
    var state = s;
    return fetch(url("/api/v1/samples", false), request(state, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: body,
      keepalive: body.length < BEACON_LIMIT,
    })).then(
      function (res) {
        if (res.status === 409) {
          state.queue.length = 0;
          enterPause(state);
          return;
        }
        if (!res.ok) {
          state.stats.failed += items.length;
          return res.json().then(function (j) {
            report({ error: j.error || "HTTP " + res.status });
          }, function () {});
        }
        return res.json().then(function (j) {
          state.stats.items_sent += j.accepted;
          state.stats.rejected += (j.rejected || []).length;
          if (state === s) report({ error: null, paused: false });
        });
      },
      function () {
        // Agent unreachable: put the items back for the next flush.
        if (state === s) {
          state.queue = items.concat(state.queue).slice(-MAX_QUEUE);
          report({ error: "agent unreachable" });
        }
      }
    );
  }

  function flush() {
    // Post everything queued now; returns a promise settled when the posts are answered.
    if (!s || !s.queue.length) return Promise.resolve();
    var items = s.queue;
    s.queue = [];
    return Promise.all(chunks(items).map(post));
  }

  function beacon() {
    // The page is going away or hidden: hand the queue to the browser, which sends it even
    // if the page is gone by then.
    if (!s || !s.queue.length) return;
    var items = s.queue;
    s.queue = [];
    var parts = chunks(items);
    for (var i = 0; i < parts.length; i++) {
      var body = JSON.stringify({ items: parts[i] });
      var ok = false;
      if (navigator.sendBeacon) {
        try {
          ok = navigator.sendBeacon(url("/api/v1/samples", true), new Blob([body], { type: "application/json" }));
        } catch (e) {
          ok = false;
        }
      }
      if (!ok) {
        fetch(url("/api/v1/samples", false), request(s, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: body,
          keepalive: true,
        })).catch(function () {});
      }
      s.stats.beacons += 1;
      s.stats.requests += 1;
      s.stats.bytes += body.length;
      s.stats.items_sent += parts[i].length;
    }
  }

  function enterPause(state) {
    state.paused = true;
    if (state !== s) return;
    report({ paused: true, recording: false });
    if (state.pausePoll) return;
    state.pausePoll = setInterval(function () {
      fetch(url("/api/v1/status", false), request(state, {}))
        .then(function (r) {
          return r.json();
        })
        .then(function (j) {
          if (!j.paused && state === s) {
            clearInterval(state.pausePoll);
            state.pausePoll = null;
            state.paused = false;
            report({ paused: false, recording: true });
          }
        })
        .catch(function () {});
    }, PAUSE_POLL_MS);
  }

  // ---- event sources ----------------------------------------------------------------------

  function recordMouse() {
    // The pointer's latest position, at most once per mouseMinMs.
    s.trailTimer = null;
    var m = s.mouse;
    if (!m) return;
    s.lastMouse = performance.now();
    point("mouse", m.x, m.y, epochNow(), -1);
  }

  function onMouseMove(ev) {
    s.mouse = { x: ev.clientX, y: ev.clientY };
    var wait = s.opts.mouseMinMs - (performance.now() - s.lastMouse);
    if (wait <= 0) {
      clearTimeout(s.trailTimer);
      recordMouse();
    } else if (!s.trailTimer) {
      // Throttled: record where the pointer is once the interval is over, so the end of a
      // movement (where it came to rest) is never dropped.
      s.trailTimer = setTimeout(timed(recordMouse), wait);
    }
  }

  function onMouseOut(ev) {
    if (!ev.relatedTarget) s.mouse = null; // the pointer left the window: no resting samples
  }

  function onIdle() {
    // The pointer rests: record it again (the text under it may have moved, too).
    var m = s.mouse;
    var now = performance.now();
    if (!m || document.visibilityState !== "visible" || now - s.lastMouse < s.opts.mouseIdleMs) return;
    s.lastMouse = now;
    point("mouse", m.x, m.y, epochNow(), -1);
  }

  function onScroll() {
    var now = performance.now();
    if (now - s.lastScroll < 100) return; // scroll fires per frame; 10 Hz is plenty
    s.lastScroll = now;
    var m = s.mouse;
    recordEvent("scroll", m ? m.x : null, m ? m.y : null, Math.round(global.scrollX) + "," + Math.round(global.scrollY));
    // The text under a still mouse changes when the page scrolls: record it again.
    if (m) point("mouse", m.x, m.y, epochNow(), -1);
  }

  function onClick(ev) {
    var el = ev.target && ev.target.closest ? ev.target.closest("[data-fedgaze],[id],button,a") : null;
    var what = el ? (el.getAttribute("data-fedgaze") || el.id || el.tagName.toLowerCase()) : "page";
    recordEvent("click", ev.clientX, ev.clientY, what);
    // A click is also a pointer position, recorded now whatever the throttle says.
    s.mouse = { x: ev.clientX, y: ev.clientY };
    clearTimeout(s.trailTimer);
    recordMouse();
  }

  function selectionInfo() {
    var sel = document.getSelection();
    if (!sel || sel.isCollapsed || !sel.rangeCount) return null;
    var r = sel.getRangeAt(0);
    for (var i = 0; i < SIDES.length; i++) {
      var side = SIDES[i];
      if (s.panels[side] && s.panels[side].contains(r.startContainer)) {
        return { side: side, charIndex: offsetIn(side, r.startContainer, r.startOffset), length: sel.toString().length };
      }
    }
    return { side: "none", charIndex: -1, length: sel.toString().length };
  }

  function onSelectionChange() {
    clearTimeout(s.selTimer);
    s.selTimer = setTimeout(timed(function () {
      var info = selectionInfo();
      if (!info) return;
      enqueueSel("select", info);
    }), 300);
  }

  function enqueueSel(kind, info) {
    enqueue({
      type: kind,
      query_id: s.queryId,
      t_ms: epochNow(),
      side: info.side,
      char_index: info.charIndex,
      detail: "len=" + info.length,
    });
  }

  function onCopy() {
    var info = selectionInfo();
    enqueueSel("copy", info || { side: "none", charIndex: -1, length: 0 });
  }

  function onVisibility() {
    recordEvent("visibility", null, null, document.visibilityState);
    if (document.visibilityState === "hidden") beacon();
  }

  function onPageHide() {
    recordEvent("visibility", null, null, "pagehide");
    beacon();
  }

  function startWebGazer() {
    var wg = global.webgazer;
    wg.setGazeListener(function (data) {
      if (data) pushGaze(data.x, data.y, {});
    });
    var begun = wg.begin();
    if (begun && begun.catch) {
      begun.catch(function () {
        report({ gaze: "none", error: "WebGazer could not start (camera?)" });
      });
    }
  }

  // ---- public API ---------------------------------------------------------------------------

  function pushGaze(x, y, opts) {
    // A gaze estimate from any tracker, in viewport CSS px; opts.t epoch ms (default now),
    // opts.validate 1 (face box good) / 0 / -1 unknown (default).
    if (!s) return;
    var t0 = performance.now();
    opts = opts || {};
    if (s.status.gaze === "none") report({ gaze: "external" });
    var v = opts.validate === 0 || opts.validate === 1 ? opts.validate : -1;
    point("gaze", Number(x), Number(y), typeof opts.t === "number" ? opts.t : epochNow(), v);
    s.stats.gaze += 1;
    if (s.opts.onGaze) s.opts.onGaze(Number(x), Number(y));
    s.stats.js_ms += performance.now() - t0;
  }

  function start(opts) {
    if (s) stop();
    if (!opts || !opts.panels || !opts.panels.left) throw new Error("FedgazeCapture.start: panels.left is required");
    if (opts.token !== undefined && (typeof opts.token !== "string" || !opts.token)) throw new Error("FedgazeCapture.start: token must be a non-empty string when given");
    var o = {
      endpoint: opts.endpoint || "",
      token: opts.token || null,
      batchMs: opts.batchMs || 1000,
      maxBatch: opts.maxBatch || 200,
      mouseMinMs: opts.mouseMinMs === undefined ? 20 : opts.mouseMinMs,
      mouseIdleMs: opts.mouseIdleMs === undefined ? 250 : opts.mouseIdleMs,
      gaze: opts.gaze || "auto",
      onStatus: opts.onStatus || null,
      onGaze: opts.onGaze || null,
    };
    s = {
      opts: o,
      panels: { left: opts.panels.left, right: opts.panels.right || null },
      queryId: opts.queryId === undefined ? null : opts.queryId,
      taskId: opts.taskId === undefined ? null : opts.taskId,
      queue: [],
      text: { left: null, right: null },
      debug: [],
      mouse: null,
      lastMouse: -1e9,
      trailTimer: null,
      lastScroll: -1e9,
      paused: false,
      pausePoll: null,
      selTimer: null,
      status: { recording: true, paused: false, gaze: "none", error: null },
      stats: { requests: 0, bytes: 0, items_sent: 0, rejected: 0, failed: 0, dropped: 0, beacons: 0, gaze: 0, js_ms: 0 },
      handlers: [],
    };
    function on(target, name, fn, capture) {
      var h = timed(fn);
      target.addEventListener(name, h, { passive: true, capture: !!capture });
      s.handlers.push([target, name, h, !!capture]);
    }
    on(document, "mousemove", onMouseMove, true);
    on(document, "mouseout", onMouseOut, true);
    on(global, "scroll", onScroll, true);
    on(document, "click", onClick, true);
    on(document, "selectionchange", onSelectionChange);
    on(document, "copy", onCopy, true);
    on(document, "visibilitychange", onVisibility);
    on(global, "pagehide", onPageHide);
    on(global, "resize", resetText);
    s.observer = new MutationObserver(resetText);
    [s.panels.left, s.panels.right].forEach(function (p) {
      if (p) s.observer.observe(p, { childList: true, subtree: true, characterData: true });
    });
    s.timer = setInterval(flush, o.batchMs);
    s.idleTimer = o.mouseIdleMs > 0 ? setInterval(timed(onIdle), o.mouseIdleMs / 2) : null;
    if (o.gaze === "auto" && global.webgazer) {
      report({ gaze: "WebGazer" });
      startWebGazer();
    } else {
      report({});
    }
    return global.FedgazeCapture;
  }

  function setQuery(queryId, taskId) {
    // New answers are on screen: send what belongs to the previous ones, then switch.
    if (!s) return Promise.resolve();
    var done = flush();
    s.queryId = queryId;
    if (taskId !== undefined) s.taskId = taskId;
    resetText();
    return done;
  }

  function setCalibration(precision, taskId) {
    // The tracker's calibration precision (percent); posted to the agent.
    if (!s) return Promise.reject(new Error("FedgazeCapture is not started"));
    var body = { precision: Number(precision) };
    var task = taskId !== undefined ? taskId : null;
    if (task !== null) body.task_id = task;
    return fetch(url("/api/v1/calibration", false), request(s, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    })).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || "HTTP " + r.status);
        return j;
      });
    });
  }

  function stop() {
    if (!s) return Promise.resolve();
    var done = flush();
    var st = s;
    st.handlers.forEach(function (h) {
      h[0].removeEventListener(h[1], h[2], { capture: h[3] });
    });
    st.observer.disconnect();
    clearInterval(st.timer);
    clearInterval(st.idleTimer);
    clearInterval(st.pausePoll);
    clearTimeout(st.selTimer);
    clearTimeout(st.trailTimer);
    if (st.status.gaze === "WebGazer" && global.webgazer) {
      try {
        global.webgazer.pause();
      } catch (e) {
        /* ignore */
      }
    }
    s = null;
    return done;
  }

  global.FedgazeCapture = {
    version: "1",
    start: start,
    stop: stop,
    flush: function () {
      return flush();
    },
    pushGaze: pushGaze,
    setQuery: setQuery,
    setCalibration: setCalibration,
    locate: function (x, y) {
      if (!s) return null;
      var l = locate(x, y);
      return { side: l.side, charIndex: l.charIndex };
    },
    stats: function () {
      return s ? Object.assign({ queued: s.queue.length }, s.stats) : null;
    },
    status: function () {
      return s ? Object.assign({}, s.status) : null;
    },
    debug: function () {
      return s ? s.debug.slice() : [];
    },
  };
})(window);
