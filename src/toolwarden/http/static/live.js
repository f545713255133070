// Short polling for the approvals page: refetch this page's live region every few seconds.
// The region is left alone while someone is filling in a form, and a banner says so when the
// worker (which serves this page) stops answering.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var banner = document.getElementById("connection");
  if (!main || !live || !banner || !main.dataset.poll) { return; }
  var every = Number(main.dataset.poll) * 1000;
  var last = live.innerHTML;
  var submitting = false;

  live.addEventListener("submit", function () { submitting = true; });

  // Someone is deciding: a field of a form in the live region holds text.
  function typing() {
    if (submitting) { return true; }
    var fields = live.querySelectorAll("input[type=text], textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value.trim() !== "") { return true; }
    }
    return false;
  }

  function say(text) {
    banner.textContent = text;
    banner.hidden = !text;
  }

  function swap(html) {
    var focused = document.activeElement;
    var focusId = focused && live.contains(focused) ? focused.id : "";
    live.innerHTML = html;
    last = html;
    if (focusId) {
      var again = document.getElementById(focusId);
      if (again) { again.focus(); }
    }
  }

  function tick() {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected) { window.location.reload(); return null; }
        if (response.status >= 500) {
          say("Temporal or the run's worker is not answering; this page will update when it is back.");
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) { return; }
        if (banner.dataset.gone) { delete banner.dataset.gone; }
        if (html === last) { if (!typing()) { say(""); } return; }
        if (typing()) {
          say("Something changed; it will show once you finish this form (or clear it).");
        } else {
          say("");
          swap(html);
        }
      })
      .catch(function () {
        banner.dataset.gone = "1";
        say("The worker serving this page is not answering: updates are paused and resume when it is back.");
      })
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
})();
