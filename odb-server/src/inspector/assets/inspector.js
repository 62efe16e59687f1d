// The ODB inspector's only script: on the overview page, follows the live feed (/events) and
// shows each commit as a line and the live figures. Text from the server is only ever set as
// text (textContent), never parsed as markup.
"use strict";

(function () {
  const feed = document.getElementById("feed");
  if (!feed || typeof EventSource === "undefined") {
    return;
  }
  const MAX_LINES = 200;
  const state = document.getElementById("feed-state");
  const figures = {
    commits_per_second: "m-rate",
    tid: "m-tid",
    connections: "m-connections",
    objects: "m-objects",
    outbound_bytes: "m-outbound",
  };

  function line(text, kind) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text;
    feed.insertBefore(item, feed.firstChild);
    while (feed.childElementCount > MAX_LINES) {
      feed.removeChild(feed.lastChild);
    }
  }

  const events = new EventSource("/events");
  events.addEventListener("open", function () {
    state.textContent = "Live.";
    state.className = "live";
  });
  events.addEventListener("error", function () {
    state.textContent = "Disconnected; reconnecting…";
    state.className = "down";
  });
  events.addEventListener("commit", function (e) {
    line(e.data, "commit");
  });
  events.addEventListener("lag", function (e) {
    line(e.data, "lag");
  });
  events.addEventListener("stats", function (e) {
    let stats;
    try {
      stats = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    for (const key in figures) {
      const element = document.getElementById(figures[key]);
      if (element && key in stats) {
        element.textContent = String(stats[key]);
      }
    }
  });
})();
