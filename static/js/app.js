/* Small progressive enhancements; every page works without them. */
(function () {
  "use strict";

  function focusErrorSummary() {
    var summary = document.querySelector("[data-autofocus]");
    if (summary) { summary.focus(); }
  }

  /* Copy buttons are an extra: the text stays visible and selectable, since the clipboard needs HTTPS. */
  function copyText(button) {
    var target = document.querySelector(button.getAttribute("data-copy"));
    if (!target) { return; }
    var text = target.value !== undefined ? target.value : target.textContent.trim();
    var status = button.parentNode.querySelector(".copy-status");
    function say(message) { if (status) { status.textContent = message; } }
    function selectIt() {
      if (target.select) { target.select(); } else {
        var range = document.createRange(); range.selectNodeContents(target);
        var sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
      }
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { say(button.getAttribute("data-copied") || document.documentElement.getAttribute("data-copied")); },
        function () { selectIt(); say(document.documentElement.getAttribute("data-select")); });
    } else {
      selectIt();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      say(document.documentElement.getAttribute(ok ? "data-copied" : "data-select"));
    }
  }

  /* The friend test page asks the server every few seconds until the first follow arrives. */
  function pollFriend(box) {
    var url = box.getAttribute("data-poll");
    var delay = 3000;
    function tick() {
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          if (box.innerHTML.trim() !== data.html.trim()) { box.innerHTML = data.html; }
          if (data.done) {
            box.setAttribute("data-done", "true");
            var rail = document.querySelector(".rail-item.current");
            if (rail) { rail.classList.remove("state-todo"); rail.classList.add("state-done"); }
            var status = document.querySelector(".status");
            if (status) { status.setAttribute("data-reason", "follow_received"); }
          }
        })
        .catch(function () { /* offline for a moment: try again next tick */ })
        .then(function () { if (box.getAttribute("data-done") !== "true") { setTimeout(tick, delay); } });
    }
    setTimeout(tick, delay);
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusErrorSummary();
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () { copyText(button); });
    });
    var box = document.querySelector("[data-poll]");
    if (box && box.getAttribute("data-done") !== "true") { pollFriend(box); }
  });
})();
