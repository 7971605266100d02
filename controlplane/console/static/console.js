// The spirl console's only script (served from the package; the page's CSP allows no other).
// 1. Live regions: an element with data-live-url is re-fetched every data-live-ms and its
//    content replaced when it changed; <details data-keep> stay open across refreshes.
// 2. Key timeline: clicking a key bar shows everything about the key below the picture.
"use strict";

(function () {
  function setStatus(name, text, failed) {
    document.querySelectorAll('[data-live-status="' + name + '"]').forEach(function (el) {
      el.textContent = text;
      el.classList.toggle("failed", !!failed);
    });
  }

  function startLive(el) {
    var url = el.getAttribute("data-live-url");
    var every = parseInt(el.getAttribute("data-live-ms") || "3000", 10);
    var name = el.getAttribute("data-live-name") || "";
    var last = null;
    function refresh() {
      fetch(url, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
        .then(function (response) {
          if (response.status === 401) {
            window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
            throw new Error("signed out");
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          if (html !== last) {
            var open = {};
            el.querySelectorAll("details[data-keep][open]").forEach(function (d) {
              open[d.getAttribute("data-keep")] = true;
            });
            el.innerHTML = html;
            el.querySelectorAll("details[data-keep]").forEach(function (d) {
              if (open[d.getAttribute("data-keep")]) { d.open = true; }
            });
            last = html;
            el.dispatchEvent(new CustomEvent("console:refreshed"));
          }
          setStatus(name, "live · " + new Date().toLocaleTimeString(), false);
        })
        .catch(function (err) { setStatus(name, "live updates paused (" + err.message + ")", true); })
        .finally(function () { window.setTimeout(refresh, every); });
    }
    window.setTimeout(refresh, every);
  }

  function showKey(event) {
    var bar = event.target.closest ? event.target.closest("rect.key") : null;
    var panel = document.getElementById("key-detail");
    var box = document.getElementById("timeline");
    if (!bar || !panel || !box) { return; }
    document.querySelectorAll("rect.key.selected").forEach(function (r) { r.classList.remove("selected"); });
    bar.classList.add("selected");
    var kid = bar.getAttribute("data-kid");
    box.setAttribute("data-selected", kid);
    panel.hidden = false;
    panel.textContent = kid;
    fetch(box.getAttribute("data-key-url") + encodeURIComponent(kid),
          { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) { panel.innerHTML = html; })
      .catch(function (err) { panel.textContent = kid + ": " + err.message; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-url]").forEach(startLive);
    var box = document.getElementById("timeline");
    if (box) {
      box.addEventListener("click", showKey);
      // a live refresh redraws the picture: keep the clicked key marked
      box.addEventListener("console:refreshed", function () {
        var selected = box.getAttribute("data-selected");
        box.querySelectorAll("rect.key").forEach(function (r) {
          if (r.getAttribute("data-kid") === selected) { r.classList.add("selected"); }
        });
      });
    }
  });
})();
