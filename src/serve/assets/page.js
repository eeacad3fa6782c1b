// emoknow serve: small conveniences. Every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Search: ticking an emotion runs the search again (the form is a plain GET form).
  document.querySelectorAll("form.search input[type=checkbox]").forEach(function (box) {
    box.addEventListener("change", function () {
      if (box.form.requestSubmit) box.form.requestSubmit(); else box.form.submit();
    });
  });
  // "/" focuses the search box; Ctrl+Enter (or Cmd+Enter) submits the classify text box.
  document.addEventListener("keydown", function (e) {
    var t = e.target && e.target.tagName;
    if (e.key === "/" && t !== "INPUT" && t !== "TEXTAREA") {
      var k = document.getElementById("keyword");
      if (k) { e.preventDefault(); k.focus(); k.select(); }
    }
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && t === "TEXTAREA" && e.target.form) {
      e.preventDefault();
      e.target.form.submit();
    }
  });
});
