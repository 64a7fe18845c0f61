/* The segment builder's live count (templates/contacts/_segment_builder.html): when a field inside an element
   with data-segment-builder changes, it sends that element's named fields as query arguments to its
   data-count-url (GET, the session's cookie) and writes the answer's "text" into its [data-segment-count]
   (a polite live region). Answers that arrive out of order are dropped: only the latest choice is shown.
   A [data-segment-pending] hint, if the page has one, is shown once the choice differs from what the list
   shows. Without JavaScript the form's submit shows the count with the list. No inline script (the CSP). */
(function () {
  "use strict";
  var WAIT_MS = 300;
  if (!window.fetch || !window.URLSearchParams) { return; }

  function query(builder) {
    var params = new URLSearchParams();
    var fields = builder.querySelectorAll("input[name], select[name], textarea[name]");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.disabled || field.name === "csrf_token" || field.type === "submit") { continue; }
      if ((field.type === "checkbox" || field.type === "radio") && !field.checked) { continue; }
      params.append(field.name, field.value);
    }
    return params.toString();
  }

  function attach(builder) {
    var url = builder.getAttribute("data-count-url");
    var out = builder.querySelector("[data-segment-count]");
    var pending = builder.querySelector("[data-segment-pending]");
    if (!url || !out) { return; }
    var shown = query(builder);
    var latest = 0;
    var timer = null;

    function count() {
      var asked = ++latest;
      var current = query(builder);
      if (pending) { pending.hidden = current === shown; }
      fetch(url + (url.indexOf("?") < 0 ? "?" : "&") + current,
            { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.json(); })
        .then(function (body) {
          if (asked !== latest) { return; }
          out.textContent = body.text || "";
          out.classList.toggle("field-error", !!body.problems);
        })
        .catch(function () { /* offline for a moment: the next change asks again */ });
    }

    function changed() {
      window.clearTimeout(timer);
      timer = window.setTimeout(count, WAIT_MS);
    }
    builder.addEventListener("change", changed);
    builder.addEventListener("input", changed);
  }

  var builders = document.querySelectorAll("[data-segment-builder]");
  for (var i = 0; i < builders.length; i++) { attach(builders[i]); }
})();
