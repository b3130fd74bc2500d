// Small progressive touches; every form works without them.
(function () {
  "use strict";

  // The language switch submits on change (its button stays for those without JavaScript).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // "Show a new image" asks for a new challenge (POST /captcha/new with the form's CSRF token)
  // and shows its image, instead of reloading the page (which the link does without JavaScript).
  document.querySelectorAll("[data-captcha-refresh]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var image = link.parentElement.querySelector(".captcha__image");
      var token = (link.closest("form") || document).querySelector("input[name=csrf_token]");
      if (!image || !token || !window.fetch) { return; }
      event.preventDefault();
      fetch("/captcha/new", {method: "POST", credentials: "same-origin", headers: {"X-CSRF-Token": token.value}})
        .then(function (response) {
          if (!response.ok) { throw new Error("no new image"); }
          return response.blob();
        })
        .then(function (blob) {
          if (image.dataset.objectUrl) { URL.revokeObjectURL(image.dataset.objectUrl); }
          image.dataset.objectUrl = URL.createObjectURL(blob);
          image.src = image.dataset.objectUrl;
          var input = link.parentElement.querySelector("input[name=captcha]");
          if (input) { input.value = ""; input.focus(); }
        })
        .catch(function () { window.location.reload(); });
    });
  });

  // An error summary takes the focus, so that a screen reader announces it first.
  var summary = document.querySelector("[data-focus]");
  if (summary) { summary.focus(); }
})();
