/* Small progressive enhancements; every page works without them. */
(function () {
  "use strict";

  function focusErrorSummary() {
    var summary = document.querySelector("[data-autofocus]");
    if (summary) { summary.focus(); }
  }

  /* A link in the error summary moves focus into its field (a plain #anchor would only scroll there),
     with the field's label kept in view above it. */
  function linkSummaryToFields() {
    document.querySelectorAll(".error-summary a[href^='#']").forEach(function (link) {
      link.addEventListener("click", function (event) {
        var field = document.getElementById(link.getAttribute("href").slice(1));
        if (!field) { return; }
        event.preventDefault();
        var label = document.querySelector("label[for='" + field.id + "']") || field;
        label.scrollIntoView({ block: "start" });
        field.focus({ preventScroll: true });
      });
    });
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

  /* The friend test page asks the server every few seconds until the first follow arrives, and redraws the
     progress rail and the step's status from the server's page whenever the verdict changes, so the whole
     page agrees without a reload. */
  function refreshStatus() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        [".rail", "main .status"].forEach(function (selector) {
          var now = document.querySelector(selector), then = fresh.querySelector(selector);
          if (now && then) { now.replaceWith(document.importNode(then, true)); }
        });
      })
      .catch(function () { /* the live box already says it worked */ });
  }

  function pollFriend(box) {
    var url = box.getAttribute("data-poll");
    var delay = 3000;
    /* After the first follow, one more look: the friend's LINE name arrives a moment after the event. */
    var settleLooks = 1;
    function tick() {
      fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          if (box.innerHTML.trim() !== data.html.trim()) { box.innerHTML = data.html; }
          /* A friend's message proves the webhook, but no "new friend" notice will come: show how to send one. */
          if (data.reason === "friend_message_received") {
            var hint = document.getElementById("already-friend");
            if (hint) { hint.open = true; }
          }
          /* Whenever the verdict changes, the status box and the rail are redrawn with it: the live box and
             the status above it never say two different things. */
          if (data.reason !== box.getAttribute("data-reason")) {
            box.setAttribute("data-reason", data.reason);
            refreshStatus();
          } else if (data.done) {
            settleLooks -= 1;
          }
          if (data.done) { box.setAttribute("data-done", "true"); }
        })
        .catch(function () { /* offline for a moment: try again next tick */ })
        .then(function () {
          if (box.getAttribute("data-done") !== "true" || settleLooks > 0) { setTimeout(tick, delay); }
        });
    }
    setTimeout(tick, delay);
  }

  /* The skip link moves focus to the step's content without putting "#…" in the address: a form posted from
     there would otherwise bring the fragment back, and the browser's jump to it would steal the focus the
     answer's message must get. */
  function skipWithoutFragment() {
    var link = document.querySelector(".skip-link");
    if (!link) { return; }
    link.addEventListener("click", function (event) {
      var target = document.getElementById(link.getAttribute("href").slice(1));
      if (!target) { return; }
      event.preventDefault();
      target.focus();
    });
  }

  /* A masked field can be shown to compare it with LINE's screen (the button exists only with JavaScript). */
  function revealButtons() {
    document.querySelectorAll("[data-reveal]").forEach(function (button) {
      var input = document.querySelector(button.getAttribute("data-reveal"));
      if (!input) { return; }
      button.hidden = false;
      button.addEventListener("click", function () {
        var shown = input.type === "password";
        input.type = shown ? "text" : "password";
        button.setAttribute("aria-pressed", shown ? "true" : "false");
        button.textContent = button.getAttribute(shown ? "data-hide" : "data-show");
      });
    });
  }

  /* The form message's preview bubble follows its text box as the owner types; an empty box sends the
     default text, so the bubble shows that. Without the script the bubble shows the saved text. */
  function followPreviews() {
    document.querySelectorAll("[data-preview-of]").forEach(function (bubble) {
      var box = document.querySelector(bubble.getAttribute("data-preview-of"));
      if (!box) { return; }
      box.addEventListener("input", function () {
        bubble.textContent = box.value.trim() ? box.value : bubble.getAttribute("data-preview-default");
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    followPreviews();
    focusErrorSummary();
    revealButtons();
    skipWithoutFragment();
    linkSummaryToFields();
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () { copyText(button); });
    });
    var box = document.querySelector("[data-poll]");
    if (box && box.getAttribute("data-done") !== "true") { pollFriend(box); }
  });
})();
