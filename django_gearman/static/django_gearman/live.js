// Refresh a Gearman admin page's tables in place: fetch the page's fragment every
// data-refresh-seconds and swap it in. A failed fetch keeps the last tables and says so.
"use strict";
(function () {
  function start() {
    const live = document.getElementById("gearman-live");
    if (!live) return;
    const seconds = Number(live.dataset.refreshSeconds || 0);
    const state = document.getElementById("gearman-refresh-state");
    const toggle = document.getElementById("gearman-autorefresh");
    if (!seconds) return;
    let timer = null;
    let busy = false;

    function say(text, failed) {
      if (!state) return;
      state.textContent = text;
      state.classList.toggle("gearman-stale", Boolean(failed));
    }

    async function refresh() {
      if (busy || document.hidden || (toggle && !toggle.checked)) return;
      busy = true;
      try {
        const response = await fetch(live.dataset.fragmentUrl, {
          credentials: "same-origin",
          headers: { "X-Requested-With": "XMLHttpRequest" },
        });
        if (!response.ok) throw new Error("HTTP " + response.status);
        live.innerHTML = await response.text();
        live.dataset.refreshes = String(Number(live.dataset.refreshes || 0) + 1);
        say("Updated " + new Date().toLocaleTimeString(), false);
      } catch (error) {
        say("Refresh failed (" + error.message + "): showing the last tables", true);
      } finally {
        busy = false;
      }
    }

    function schedule() {
      if (timer) clearInterval(timer);
      timer = setInterval(refresh, seconds * 1000);
    }

    if (toggle) toggle.addEventListener("change", function () { if (toggle.checked) refresh(); });
    document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
    schedule();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
