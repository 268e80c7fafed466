// osprey console: expiry countdowns and live updates. The pages work without it; this
// only keeps them current. No framework, nothing fetched from outside this server.
"use strict";

(function () {
  const SOON_SECONDS = 120;

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
    return `${r} s`;
  }

  // How far the browser's clock is behind the server's (which decides expiry), measured
  // when the page arrived.
  const skew = (Date.parse(document.body.dataset.serverNow) - Date.now()) || 0;

  // Each countdown keeps the absolute time the server wrote, and says how long is left.
  function tick() {
    const now = Date.now() + skew;
    for (const el of document.querySelectorAll(".countdown[data-expires]")) {
      if (!el.dataset.at) el.dataset.at = el.textContent.trim();
      const left = (Date.parse(el.dataset.expires) - now) / 1000;
      if (left > 0) {
        el.textContent = `in ${duration(left)} (${el.dataset.at})`;
        el.classList.toggle("soon", left < SOON_SECONDS);
      } else if (!el.classList.contains("over")) {
        el.textContent = `expired (${el.dataset.at})`;
        el.classList.add("over");
        if (el.id === "countdown") expired();
      }
    }
  }

  // Past its expiry a request can no longer be approved or edited: say so at the buttons
  // (the server refuses anyway; this saves a shift leader a pointless click).
  function expired() {
    for (const button of document.querySelectorAll("button[data-expiring]")) {
      button.disabled = true;
      const note = document.createElement("p");
      note.className = "refusal";
      note.id = `${button.id}-expired`;
      note.textContent = "This request has expired: it can no longer be approved or edited.";
      button.setAttribute("aria-describedby", note.id);
      button.after(note);
    }
  }

  // -- live updates through the API's event stream (the session cookie authenticates it) --

  const live = document.body.dataset.live || "";
  const status = document.getElementById("live-status");
  const pending = new Set();
  let timer = null;

  function say(text) { if (status) status.textContent = text; }

  async function refresh(container) {
    // A keyboard user's place survives the refresh when the focused element has an id.
    const active = document.activeElement;
    const focused = active && container.contains(active) ? active.id : "";
    const response = await fetch(container.dataset.fragment, {
      credentials: "same-origin", headers: { Accept: "text/html" }, cache: "no-store" });
    if (response.status === 401) { window.location.reload(); return; }
    if (!response.ok) { say(`update failed (HTTP ${response.status})`); return; }
    const html = await response.text();
    if (container.innerHTML !== html) {
      container.innerHTML = html;
      const again = focused && document.getElementById(focused);
      if (again) again.focus();
      tick();
    }
  }

  // Bursts of events (a run moving through several states) cost one refresh.
  function schedule(container) {
    pending.add(container);
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      const batch = [...pending];
      pending.clear();
      for (const item of batch) refresh(item).catch((error) => say(`update failed: ${error}`));
    }, 150);
  }

  // ``event: run`` carries run_id; ``event: approval`` carries approval_id and run_id.
  function onEvent(message) {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    if (live === "approvals" || live === "runs" || live === `run:${event.run_id}`) {
      for (const container of document.querySelectorAll("[data-fragment]")) schedule(container);
    }
    if (live === `approval:${event.approval_id}` && !document.getElementById("changed")) {
      const note = document.createElement("p");
      note.className = "notice";
      note.id = "changed";
      note.setAttribute("role", "status");
      note.innerHTML = 'This request changed while the page was open. <a href="">Reload</a> to see it.';
      document.querySelector("main").prepend(note);
    }
  }

  function connect() {
    if (!live || !window.EventSource) return;
    // Starts at the present; after a dropped connection the browser resumes from the
    // last message's id (Last-Event-ID), so nothing in between is missed.
    const source = new EventSource("/api/v1/events");
    source.addEventListener("ready", () => say("live"));
    source.onerror = () => say(source.readyState === EventSource.CLOSED
      ? "live updates stopped: reload the page" : "reconnecting…");
    source.addEventListener("run", onEvent);
    source.addEventListener("approval", onEvent);
  }

  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, 1000);
    connect();
  });
})();
