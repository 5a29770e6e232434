/*
 * The fedgaze reference reading page: asks the local agent for a prompt and its answers,
 * shows them (one answer, or two side by side), records reading with FedgazeCapture and
 * posts the person's explicit rating. Plain JavaScript; talks only to the agent that served it.
 */
(function () {
  "use strict";

  var $ = function (id) {
    return document.getElementById(id);
  };
  var backend = null; // the agent's /api/v1/status at load
  var current = null; // the query on screen
  var captureStatus = { recording: false, paused: false, gaze: "none", sent: 0 };
  var paused = false;

  function api(method, path, body) {
    // The agent's session cookie (HttpOnly, set when its one-time link opened this page) is
    // the credential: the page itself holds no secret.
    var init = { method: method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.json().then(
        function (j) {
          return { status: r.status, ok: r.ok, body: j };
        },
        function () {
          return { status: r.status, ok: false, body: { error: "HTTP " + r.status } };
        }
      );
    });
  }

  function showStatus() {
    var el = $("status");
    if (paused || captureStatus.paused) {
      el.textContent = "paused — nothing is recorded";
      el.className = "status paused";
      return;
    }
    var parts = [captureStatus.recording ? "recording mouse" : "not recording"];
    parts.push("gaze: " + (captureStatus.gaze || "none"));
    parts.push(captureStatus.sent + " samples saved");
    if (captureStatus.error) parts.push(captureStatus.error);
    el.textContent = parts.join(" · ");
    el.className = "status";
  }

  function message(text) {
    $("message").textContent = text || "";
    $("message").hidden = !text;
  }

  function setPaused(value) {
    paused = value;
    showStatus();
    if (value) {
      message("Capture is paused on this device. Resume with `fedgaze client resume`.");
      setTimeout(function poll() {
        api("GET", "/api/v1/status").then(function (r) {
          if (r.ok && !r.body.paused) {
            setPaused(false);
            message("");
            if (!current) loadNext();
          } else {
            setTimeout(poll, 3000);
          }
        }, function () {
          setTimeout(poll, 3000);
        });
      }, 3000);
    }
  }

  function render(q) {
    current = q;
    $("prompt").textContent = q.prompt;
    $("prompt-box").hidden = false;
    $("answer-left").textContent = q.answers[0];
    $("answer-right").textContent = q.pairwise ? q.answers[1] : "";
    $("right-card").hidden = !q.pairwise;
    $("left-title").textContent = q.pairwise ? "Answer A" : "Answer";
    $("answers").className = q.pairwise ? "answers" : "answers single";
    $("answers").hidden = false;
    $("pairwise-rate").hidden = !q.pairwise;
    $("pointwise-rate").hidden = q.pairwise;
    $("rate").hidden = false;
    Array.prototype.forEach.call(document.querySelectorAll("[aria-pressed]"), function (b) {
      b.removeAttribute("aria-pressed");
    });
    FedgazeCapture.setQuery(q.query_id, q.task_id);
  }

  function clearAnswers() {
    current = null;
    FedgazeCapture.setQuery(null);
    $("answers").hidden = true;
    $("rate").hidden = true;
    $("prompt-box").hidden = true;
  }

  function handleNext(r) {
    if (r.ok) {
      message("");
      render(r.body);
      return;
    }
    if (r.status === 409) {
      clearAnswers();
      setPaused(true);
    } else if (r.status === 410) {
      clearAnswers();
      message("No more prompts. Thank you!");
    } else {
      message("Could not get answers: " + r.body.error);
    }
  }

  function loadNext() {
    if (backend.needs_prompt) {
      clearAnswers();
      $("ask").hidden = false;
      $("prompt-input").focus();
      return Promise.resolve();
    }
    return api("GET", "/api/v1/next").then(handleNext);
  }

  function ask(ev) {
    ev.preventDefault();
    var prompt = $("prompt-input").value.trim();
    if (!prompt) return;
    $("ask-button").disabled = true;
    message("Waiting for the answers…");
    api("POST", "/api/v1/next", { prompt: prompt })
      .then(function (r) {
        if (r.ok) {
          $("ask").hidden = true;
          $("prompt-input").value = "";
        }
        handleNext(r);
      })
      .finally(function () {
        $("ask-button").disabled = false;
      });
  }

  function label(button, body) {
    if (!current) return;
    body.query_id = current.query_id;
    api("POST", "/api/v1/label", body).then(function (r) {
      if (r.status === 409) return setPaused(true);
      if (!r.ok) return message("Could not save the rating: " + r.body.error);
      Array.prototype.forEach.call(button.parentNode.querySelectorAll("button"), function (b) {
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      });
    });
  }

  function calibrate() {
    // WebGazer's precision measure: stare at the dot for 3 s; each estimate scores
    // 100 - (distance to the dot / half the window height * 100), clipped to [0, 100].
    var dot = $("target");
    var scores = [];
    var cx = window.innerWidth / 2;
    var cy = window.innerHeight / 2;
    dot.hidden = false;
    message("Look at the red dot for 3 seconds…");
    collect = function (x, y) {
      var d = Math.hypot(x - cx, y - cy);
      scores.push(Math.max(0, Math.min(100, 100 - (d / (window.innerHeight / 2)) * 100)));
    };
    setTimeout(function () {
      collect = null;
      dot.hidden = true;
      if (!scores.length) return message("No gaze estimates arrived: is the tracker running?");
      var precision = scores.reduce(function (a, b) { return a + b; }, 0) / scores.length;
      FedgazeCapture.setCalibration(precision).then(
        function () { message("Calibration precision: " + precision.toFixed(0) + "%"); },
        function (e) { message("Could not save the calibration: " + e.message); }
      );
    }, 3000);
  }
  var collect = null;

  function startCapture() {
    FedgazeCapture.start({
      endpoint: "",
      queryId: null,
      panels: { left: $("answer-left"), right: $("answer-right") },
      onStatus: function (st) {
        captureStatus = st;
        $("calibrate").hidden = st.gaze === "none";
        if (st.paused && !paused) setPaused(true);
        showStatus();
      },
      onGaze: function (x, y) {
        if (collect) collect(x, y);
      },
    });
  }

  function loadWebGazer() {
    return new Promise(function (resolve) {
      var tag = document.createElement("script");
      tag.src = "/vendor/webgazer.js";
      tag.onload = resolve;
      tag.onerror = resolve; // mouse-only capture still works
      document.head.appendChild(tag);
    });
  }

  document.querySelectorAll("[data-pref]").forEach(function (b) {
    b.addEventListener("click", function () {
      label(b, { preference: Number(b.dataset.pref), likert_left: null, likert_right: null });
    });
  });
  document.querySelectorAll("[data-likert]").forEach(function (b) {
    b.addEventListener("click", function () {
      label(b, { preference: null, likert_left: Number(b.dataset.likert), likert_right: null });
    });
  });
  $("next").addEventListener("click", function () {
    FedgazeCapture.flush();
    loadNext();
  });
  $("ask").addEventListener("submit", ask);
  $("calibrate").addEventListener("click", calibrate);

  api("GET", "/api/v1/status").then(function (r) {
    if (!r.ok) {
      $("status").textContent = "agent refused the page: " + r.body.error;
      return;
    }
    backend = r.body;
    var ready = backend.webgazer ? loadWebGazer() : Promise.resolve();
    ready.then(function () {
      startCapture();
      if (backend.paused) setPaused(true);
      else loadNext();
    });
  }, function () {
    $("status").textContent = "agent unreachable";
  });
  window.fedgazePage = { current: function () { return current; } };
})();
