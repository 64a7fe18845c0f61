/* The conversation page refreshes its messages by itself: every few seconds it asks the server for the list
   (GET …/messages, the same HTML the page draws) and swaps it in when its data-version changed. Without
   JavaScript the page works as before, with its "Refresh the conversation" link. No inline script: the CSP
   allows scripts from this site only. */
(function () {
  "use strict";
  var EVERY_MS = 5000;
  var list = document.querySelector("ol.messages[data-poll-url]");
  if (!list || !window.fetch || !window.DOMParser) { return; }
  var news = document.getElementById("conversation-news");

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("ol.messages[data-poll-url]");
    if (!fresh || fresh.getAttribute("data-version") === list.getAttribute("data-version")) { return; }
    if (list.contains(document.activeElement)) { return; }  /* never pull a button from under the keyboard */
    var follow = nearBottom();
    var adopted = document.importNode(fresh, true);
    list.parentNode.replaceChild(adopted, list);
    list = adopted;
    if (news) { news.textContent = news.getAttribute("data-news"); }
    if (follow) { list.lastElementChild && list.lastElementChild.scrollIntoView({ block: "nearest" }); }
  }

  function poll() {
    if (document.hidden) { later(); return; }
    fetch(list.getAttribute("data-poll-url"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html) { swap(html); } })
      .catch(function () { /* offline for a moment: the next round tries again */ })
      .then(later);
  }

  function later() { window.setTimeout(poll, EVERY_MS); }
  later();
})();
