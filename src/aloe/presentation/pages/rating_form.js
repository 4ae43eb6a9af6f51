(function () {
  "use strict";
  var meta = JSON.parse(document.getElementById("kit-meta").textContent);
  var allowed = meta.categories.map(String);
  var sections = Array.prototype.slice.call(
    document.querySelectorAll("section.item[data-item]"));
  var rater = document.getElementById("rater");
  var status = document.getElementById("status");
  var note = document.getElementById("storage-note");
  var lastSeen = -1;
  var warned = false;

  function openStore() {
    try {
      var store = window.localStorage, probe = meta.store + ":probe";
      store.setItem(probe, "1");
      store.removeItem(probe);
      return store;
    } catch (error) {
      return null;
    }
  }
  var store = openStore();

  function warnOnce() {
    if (warned) { return; }
    warned = true;
    note.className = "warn";
    note.textContent = "This browser does not let the page keep your ratings: they will " +
      "not survive a reload, so download them before you close the page.";
  }

  function checked(section) {
    return section.querySelector('input[type="radio"]:checked');
  }

  function collect() {
    var ratings = {}, missing = 0;
    sections.forEach(function (section) {
      var picked = checked(section);
      if (picked) { ratings[section.dataset.item] = Number(picked.value); } else { missing += 1; }
    });
    return {ratings: ratings, missing: missing};
  }

  function refresh() {
    var done = 0;
    sections.forEach(function (section) {
      var rated = Boolean(checked(section));
      section.classList.toggle("unrated", !rated);
      if (rated) { done += 1; }
    });
    document.getElementById("count").textContent = done + " of " + sections.length + " rated";
    document.getElementById("next-unrated").disabled = done === sections.length;
  }

  function save() {
    if (!store) { return; }
    try {
      store.setItem(meta.store, JSON.stringify(
        {kit: meta.kit, ratings: collect().ratings, rater: rater.value}));
    } catch (error) {
      warnOnce();
    }
  }

  function restore() {
    var saved = null;
    sections.forEach(function (section) {
      var picked = checked(section);
      if (picked) { picked.checked = false; }
    });
    try {
      saved = store ? JSON.parse(store.getItem(meta.store) || "null") : null;
    } catch (error) {
      saved = null;
    }
    if (!saved || typeof saved !== "object") { return; }
    var ratings = saved.ratings && typeof saved.ratings === "object" ? saved.ratings : {};
    sections.forEach(function (section) {
      var id = section.dataset.item;
      if (!Object.prototype.hasOwnProperty.call(ratings, id)) { return; }
      var value = String(ratings[id]);
      if (allowed.indexOf(value) < 0) { return; }
      section.querySelectorAll('input[type="radio"]').forEach(function (box) {
        box.checked = box.value === value;
      });
    });
    if (typeof saved.rater === "string") { rater.value = saved.rater.slice(0, 200); }
  }

  function nextUnrated() {
    var order = sections.slice(lastSeen + 1).concat(sections.slice(0, lastSeen + 1));
    var target = order.filter(function (section) { return !checked(section); })[0];
    if (!target) { return; }
    lastSeen = sections.indexOf(target);
    target.scrollIntoView({block: "start"});
    target.querySelector('input[type="radio"]').focus({preventScroll: true});
  }

  function clearSaved() {
    var n = Object.keys(collect().ratings).length;
    if (!window.confirm("Clear the " + n + " rating(s) and the name kept for this kit in " +
                        "this browser? They cannot be brought back.")) { return; }
    if (store) {
      try { store.removeItem(meta.store); } catch (error) { warnOnce(); }
    }
    sections.forEach(function (section) {
      var picked = checked(section);
      if (picked) { picked.checked = false; }
    });
    rater.value = "";
    lastSeen = -1;
    refresh();
    status.textContent = "Cleared.";
  }

  function download() {
    var name = rater.value.trim();
    if (!name) { status.textContent = "Please type your name or initials first."; return; }
    var got = collect();
    var data = {kit: meta.kit, variant: meta.variant, protocol: meta.protocol, rater: name,
                ratings: got.ratings};
    var blob = new Blob([JSON.stringify(data, null, 1)], {type: "application/json"});
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "ratings-" + meta.kit + "-" + name.replace(/[^A-Za-z0-9_-]/g, "_") + ".json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    status.textContent = "Saved " + Object.keys(got.ratings).length + " rating(s)" +
      (got.missing ? "; " + got.missing + " item(s) left unrated" : "") + ".";
  }

  if (store) {
    note.textContent = "Your ratings are kept in this browser as you go: you can close the " +
      "page and come back to it.";
  } else {
    warnOnce();
  }
  restore();
  refresh();
  document.addEventListener("change", function (event) {
    var section = event.target.closest && event.target.closest("section.item[data-item]");
    if (!section || event.target.type !== "radio") { return; }
    lastSeen = sections.indexOf(section);
    save();
    refresh();
  });
  rater.addEventListener("input", save);
  window.addEventListener("storage", function (event) {
    if (event.key === meta.store) { restore(); refresh(); }
  });
  document.getElementById("next-unrated").addEventListener("click", nextUnrated);
  document.getElementById("clear-saved").addEventListener("click", clearSaved);
  document.getElementById("save").addEventListener("click", download);
})();
