/* The renewal pages' progressive parts; every form works without them.
   - [data-countdown]: the seconds an e-mail code stays valid, counted down;
   - .photo-form: a preview of the chosen photo (an object URL), "upload again" to choose another;
   - [data-poll]: ask the renewal's state every few seconds and reload the page when it changes. */
(function () {
  "use strict";

  function countdowns() {
    document.querySelectorAll("[data-countdown]").forEach(function (timer) {
      var left = parseInt(timer.getAttribute("data-countdown"), 10) || 0;
      var seconds = timer.querySelector(".seconds");
      timer.hidden = false;
      var tick = function () {
        if (left <= 0) {
          timer.textContent = timer.getAttribute("data-expired");
          return;
        }
        seconds.textContent = String(left);
        left -= 1;
        window.setTimeout(tick, 1000);
      };
      tick();
    });
  }

  function photoPreview() {
    document.querySelectorAll(".photo-form").forEach(function (form) {
      var input = form.querySelector("input[type=file]");
      var figure = form.querySelector(".preview");
      var image = figure.querySelector("img");
      var again = form.querySelector(".again");
      var shown = null;
      input.addEventListener("change", function () {
        if (shown) { URL.revokeObjectURL(shown); shown = null; }
        var file = input.files && input.files[0];
        if (!file) { figure.hidden = true; again.hidden = true; return; }
        shown = URL.createObjectURL(file);
        image.src = shown;  /* TIFF has no preview in most browsers: the file is still sent */
        figure.hidden = false;
        again.hidden = false;
      });
      again.addEventListener("click", function () {
        input.value = "";
        figure.hidden = true;
        again.hidden = true;
        input.click();
      });
    });
  }

  function poll() {
    document.querySelectorAll("[data-poll]").forEach(function (element) {
      var url = element.getAttribute("data-poll");
      var state = element.getAttribute("data-state");
      var every = (parseInt(element.getAttribute("data-interval"), 10) || 3) * 1000;
      var ask = function () {
        fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
          .then(function (response) { return response.ok ? response.json() : null; })
          .then(function (body) {
            if (body && body.state !== state) { window.location.reload(); return; }
            window.setTimeout(ask, every);
          })
          .catch(function () { window.setTimeout(ask, every * 2); });
      };
      window.setTimeout(ask, every);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    countdowns();
    photoPreview();
    poll();
  });
}());
