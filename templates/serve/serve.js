// dlg serve: keeps a page's live part up to date from its server-sent events. The HTML
// comes from the viewer, rendered with autoescape; the page's policy runs no other script.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.events || !window.EventSource) {
    return;
  }
  var source = new EventSource(live.dataset.events);
  var updates = 0;
  source.addEventListener("update", function (e) {
    live.innerHTML = e.data;
    updates += 1;
    document.body.dataset.updates = String(updates);
  });
  source.addEventListener("end", function () {
    source.close();
    document.body.dataset.live = "ended";
  });
  document.body.dataset.live = "following";
})();
