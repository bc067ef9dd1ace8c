// Jobtracker's own script: poll only while the page's socket is down, catch up once
// it (re)opens, count down the waits, and show times as "2 min ago" with the exact
// local time on hover.
(function () {
  let socketOpen = false;
  window.jtPolling = () => !socketOpen;
  document.addEventListener("htmx:wsOpen", () => {
    socketOpen = true;
    // What changed before the socket was open was pushed to nobody: fetch it once.
    for (const el of document.querySelectorAll("[hx-trigger*='jt:resync']")) {
      htmx.trigger(el, "jt:resync");
    }
  });
  document.addEventListener("htmx:wsClose", () => { socketOpen = false; });
  // A poll (hx-trigger "every 2s") goes out only while the socket is down. Said here,
  // not as an hx-trigger filter: htmx evaluates filters as code, which the page's
  // Content-Security-Policy (no 'unsafe-eval') does not allow.
  document.addEventListener("htmx:confirm", (e) => {
    const polled = !e.detail.triggeringEvent && /^every /.test(e.detail.elt.getAttribute("hx-trigger") || "");
    if (polled && socketOpen) e.preventDefault();
  });

  // A part of the page only moves forward: an answer older than what it shows (an
  // HTTP response overtaken by a push, or the other way round) is dropped.
  const version = (el) => Number((el && el.dataset && el.dataset.version) || 0);
  document.addEventListener("htmx:oobBeforeSwap", (e) => {
    const incoming = e.detail.fragment.firstElementChild || e.detail.fragment;
    if (version(incoming) < version(e.detail.target)) e.detail.shouldSwap = false;
    // A job's row with a new status or stage: "jt:job-<id>" makes its page's timeline
    // fetch itself again (pushes carry rows, not timelines).
    if (e.detail.shouldSwap && incoming.dataset.step !== e.detail.target.dataset.step) {
      setTimeout(() => htmx.trigger(document.body, `jt:${e.detail.target.id}`));
    }
  });
  // A job page's timeline that arrives older than the job's row (the push of the row's
  // newer step came while this fetch was in flight, and its own fetch was dropped with the
  // element this one replaced) fetches itself once more.
  document.addEventListener("htmx:load", (e) => {
    const history = e.target;
    if (!history.id || !history.id.startsWith("job-history-")) return;
    const row = document.getElementById(`job-${history.id.slice("job-history-".length)}`);
    if (version(history) < version(row)) {
      setTimeout(() => htmx.trigger(document.body, `jt:${row.id}`));
    }
  });
  document.addEventListener("htmx:beforeSwap", (e) => {
    const found = /data-version="(\d+)"/.exec(e.detail.serverResponse || "");
    if (found && Number(found[1]) < version(e.detail.target)) e.detail.shouldSwap = false;
  });

  // htmx swaps no 4xx answer. A part that shows its own refusals ("no one has this
  // username", "the last owner") answers them with itself, marked data-shows-refusals:
  // that answer is swapped in like a success. Any other error page is not.
  document.addEventListener("htmx:beforeSwap", (e) => {
    const status = e.detail.xhr.status;
    if (status >= 400 && status < 500 && /\bdata-shows-refusals\b/.test(e.detail.serverResponse || "")) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  function about(seconds) {  // the same words as processing/web/display.py's about()
    if (seconds < 45) return "less than a minute";
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `about ${minutes} min`;
    const hours = Math.floor(minutes / 60), rest = minutes % 60;
    return rest ? `about ${hours} h ${rest} min` : `about ${hours} h`;
  }
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
  function ago(date) {
    const seconds = (date - Date.now()) / 1000;
    if (Math.abs(seconds) < 60) return relative.format(Math.round(seconds), "second");
    if (Math.abs(seconds) < 3600) return relative.format(Math.round(seconds / 60), "minute");
    if (Math.abs(seconds) < 86400) return relative.format(Math.round(seconds / 3600), "hour");
    return date.toLocaleString();
  }
  function tick() {
    for (const el of document.querySelectorAll("[data-until]")) {
      const left = Math.max(0, (Date.parse(el.dataset.until) - Date.now()) / 1000);
      el.textContent = el.dataset.format === "retry"
        ? `next attempt in ${Math.round(left)} s` : `${about(left)} left`;
    }
    for (const el of document.querySelectorAll("time[data-relative]")) {
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) continue;
      el.textContent = ago(date);
      el.title = date.toLocaleString();
    }
  }
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSettle", tick);
  document.addEventListener("htmx:wsAfterMessage", tick);
  setInterval(tick, 1000);
})();
