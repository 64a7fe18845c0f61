/* The message template builder (templates/message_templates/edit.html): the preview follows the typing, and
   the emoji and {name} buttons insert at the cursor. Without this file every button posts the form and the
   server draws the same preview; nothing here is needed to build or save a template. */
(function () {
  "use strict";
  var builder = document.getElementById("builder");
  var preview = document.getElementById("preview");
  if (!builder || !preview) { return; }
  var sampleName = preview.getAttribute("data-sample-name");
  var emojiUrl = preview.getAttribute("data-emoji-url");
  var defaultProduct = preview.getAttribute("data-default-product");
  var tokens = /\{name\}|\{emoji:(?:([0-9a-f]{24})\/)?(\d{3})\}/g;

  function rich(target, text) {
    /* The owner's text as LINE shows it: emoji as pictures, {name} as a sample name (DOM nodes, never HTML). */
    target.textContent = "";
    var position = 0, found;
    tokens.lastIndex = 0;
    while ((found = tokens.exec(text)) !== null) {
      target.appendChild(document.createTextNode(text.slice(position, found.index)));
      if (found[0] === "{name}") {
        var name = document.createElement("span");
        name.className = "lt-name";
        name.textContent = sampleName;
        target.appendChild(name);
      } else {
        var picture = document.createElement("img");
        picture.className = "lt-emoji";
        picture.alt = "";
        picture.src = emojiUrl.replace("PRODUCT", found[1] || defaultProduct).replace("EMOJI", found[2]);
        target.appendChild(picture);
      }
      position = tokens.lastIndex;
    }
    target.appendChild(document.createTextNode(text.slice(position)));
  }

  function show(field) {
    var key = field.getAttribute("data-preview-text");
    var shown = preview.querySelectorAll('[data-shows="' + key + '"]');
    for (var i = 0; i < shown.length; i++) {
      if (shown[i].hasAttribute("data-rich")) { rich(shown[i], field.value); } else { shown[i].textContent = field.value; }
      shown[i].hidden = field.value.trim() === "" && !shown[i].hasAttribute("data-rich");
    }
  }

  builder.addEventListener("input", function (event) {
    if (event.target.hasAttribute("data-preview-text")) { show(event.target); }
  });

  builder.addEventListener("change", function (event) {
    var field = event.target;
    var key = field.getAttribute("data-preview-picture");
    if (!key || !field.files || !field.files[0] || !window.URL) { return; }
    var pictures = preview.querySelectorAll('[data-shows-picture="' + key + '"]');
    for (var i = 0; i < pictures.length; i++) {
      pictures[i].src = URL.createObjectURL(field.files[0]);
      pictures[i].hidden = false;
    }
  });

  builder.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-insert]") : null;
    if (!button) { return; }
    var field = document.getElementById(button.getAttribute("data-target"));
    if (!field) { return; }
    event.preventDefault();  /* inserted here, at the cursor, instead of at the end by the server */
    var text = button.getAttribute("data-insert");
    var start = field.selectionStart === undefined ? field.value.length : field.selectionStart;
    var end = field.selectionEnd === undefined ? start : field.selectionEnd;
    field.value = field.value.slice(0, start) + text + field.value.slice(end);
    field.focus();
    field.setSelectionRange(start + text.length, start + text.length);
    show(field);
  });
}());
