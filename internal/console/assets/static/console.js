// The Pairing page asks for the pending requests every 3 s and adds the new
// rows (rendered by the server) and drops the decided ones, keeping whatever
// is being typed into the rows that stay. Nothing else needs a script.
"use strict";
(function () {
  var body = document.getElementById("pending-rows");
  if (!body) return;
  function poll() {
    fetch(body.dataset.src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var t = document.createElement("template");
        t.innerHTML = html;
        var fresh = {};
        t.content.querySelectorAll("tr[data-id]").forEach(function (tr) { fresh[tr.dataset.id] = tr; });
        body.querySelectorAll("tr").forEach(function (tr) {
          if (!tr.dataset.id || !fresh[tr.dataset.id]) tr.remove();
          else delete fresh[tr.dataset.id];
        });
        Object.keys(fresh).forEach(function (id) { body.appendChild(fresh[id]); });
        if (!body.querySelector("tr")) body.appendChild(t.content.querySelector("tr.empty"));
      })
      .catch(function () {})
      .then(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 3000);
})();
