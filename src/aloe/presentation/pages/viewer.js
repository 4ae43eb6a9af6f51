// Every value from the data reaches the page through text nodes (`el`, `textContent`): never
// as markup, so no text an LLM wrote can add an element or run a script.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("viewer-data").textContent);
  var PAGE = data.page_rows;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      if (arguments[i]) { parent.appendChild(arguments[i]); }
    }
    return parent;
  }
  function count(n) { return n.toLocaleString("en-US"); }
  function distinct(rows, key) {
    var seen = {}, out = [];
    rows.forEach(function (r) {
      var v = r[key];
      if (v !== null && v !== undefined && !seen.hasOwnProperty(String(v))) {
        seen[String(v)] = true; out.push(v);
      }
    });
    return out;
  }
  function badge(score, scale) {  // coloured from the scale's floor (red) to its top (green)
    var top = scale ? scale[scale.length - 1] : 5, low = scale ? scale[0] : 1;
    var step = score === null ? "none" : Math.round(1 + 4 * (score - low) / ((top - low) || 1));
    return el("span", "score s" + step, score === null ? "–" : score);
  }
  function flag(text) { return el("span", "flag", text); }
  function missing(text) { return text === null || text === undefined ? "(not recorded)" : text; }

  // -- one filterable list --------------------------------------------------------------------
  function View(name, rows, noun, filters, draw, personas) {
    var self = this;
    this.name = name; this.rows = rows; this.noun = noun; this.draw = draw;
    this.personas = personas; this.controls = {}; this.shown = 0; this.matching = rows;
    var box = document.getElementById(name + "-filters");
    filters.forEach(function (f) {
      var select = el("select");
      select.id = name + "-" + f.key;
      select.setAttribute("data-filter", f.key);
      add(select, option("", "all"));
      f.values.forEach(function (v) { add(select, option(String(v), f.label(v))); });
      select.addEventListener("change", function () { self.apply(); });
      self.controls[f.key] = {node: select, match: f.match};
      var label = el("label", null, f.title + " ");
      add(box, add(label, select));
    });
    var search = el("input");
    search.type = "search"; search.id = name + "-search";
    search.placeholder = "words in a message, reply or answer";
    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer); timer = setTimeout(function () { self.apply(); }, 200);
    });
    this.search = search;
    add(box, add(el("label", null, "text "), search));
    var reset = el("button", null, "clear filters");
    reset.type = "button";
    reset.addEventListener("click", function () { self.set({}); });
    add(box, reset);
    this.body = document.getElementById(name + "-rows");
    this.status = document.getElementById(name + "-status");
    this.personaBox = document.getElementById(name + "-who");
    this.more = document.getElementById(name + "-more");
    this.more.addEventListener("click", function () { self.page(); });
    this.apply();
  }
  function option(value, text) {
    var node = el("option", null, text);
    node.value = value;
    return node;
  }
  View.prototype.set = function (values) {  // set several filters at once, the rest to all
    var self = this;
    Object.keys(this.controls).forEach(function (key) {
      self.controls[key].node.value = values.hasOwnProperty(key) ? String(values[key]) : "";
    });
    this.search.value = "";
    this.apply();
    this.status.scrollIntoView({block: "nearest"});
  };
  View.prototype.apply = function () {
    var self = this, wanted = [];
    Object.keys(this.controls).forEach(function (key) {
      var c = self.controls[key];
      if (c.node.value !== "") { wanted.push({value: c.node.value, match: c.match}); }
    });
    var words = this.search.value.trim().toLowerCase();
    this.matching = this.rows.filter(function (r) {
      for (var i = 0; i < wanted.length; i++) {
        if (!wanted[i].match(r, wanted[i].value)) { return false; }
      }
      return !words || self.haystack(r).indexOf(words) >= 0;
    });
    this.body.textContent = "";
    this.shown = 0;
    this.page();
    this.showPersona();
  };
  View.prototype.haystack = function (r) {
    if (r._text === undefined) {
      var parts = [];
      Object.keys(r).forEach(function (k) {
        var v = r[k];
        if (typeof v === "string") { parts.push(v); }
        else if (Array.isArray(v)) { parts.push(JSON.stringify(v)); }
      });
      Object.defineProperty(r, "_text", {value: parts.join("\n").toLowerCase()});
    }
    return r._text;
  };
  View.prototype.page = function () {
    var end = Math.min(this.shown + PAGE, this.matching.length);
    var fragment = document.createDocumentFragment();
    for (var i = this.shown; i < end; i++) {
      var tr = this.draw(this.matching[i], this);
      tr.className = (tr.className ? tr.className + " " : "") + "row";
      fragment.appendChild(tr);
    }
    this.body.appendChild(fragment);
    this.shown = end;
    var total = this.rows.length, n = this.matching.length;
    var text;
    if (!total) {
      text = "Nothing to show: " + (this.name === "benchmark"
        ? "the run has no evaluation records yet (stage 5)."
        : "the run has no conversation trees yet (stage 2).");
    } else if (n === total) {
      text = "Showing " + count(this.shown) + " of " + count(total) + " " + this.noun + ".";
    } else {
      text = "Showing " + count(this.shown) + " of " + count(n) + " matching " + this.noun +
        " (" + count(total) + " in all).";
    }
    this.status.textContent = text;
    var left = n - this.shown;
    this.more.hidden = left <= 0;
    this.more.textContent = "Show " + count(Math.min(PAGE, left)) + " more (" + count(left) +
      " not shown)";
  };
  View.prototype.showPersona = function () {
    this.personaBox.textContent = "";
    var id = this.controls.persona.node.value;
    var p = id ? this.personas[id] : null;
    if (!p) { return; }
    add(this.personaBox, add(el("div", "persona"),
      add(el("div"), el("b", null, "Persona " + id + ". "), el("i", null, "Profile: "),
          document.createTextNode(p.profile)),
      add(el("div"), el("i", null, "Personality: "), document.createTextNode(p.personality))));
  };

  function cell(cls) { return el("td", cls); }
  function personaLink(view, values, text) {
    var b = el("button", "link", text);
    b.type = "button";
    b.title = "show this whole conversation";
    b.addEventListener("click", function () { view.set(values); });
    return b;
  }

  // -- benchmark conversations ----------------------------------------------------------------
  function drawBenchmark(r, view) {
    var tr = el("tr");
    var meta = cell("meta");
    add(meta, el("div", null, r.model), personaLink(view, {variant: r.variant, model: r.model,
        persona: r.persona}, r.persona), el("div", null, "turn " + r.turn));
    if (multipleVariants) { add(meta, el("div", "sub", r.variant)); }
    if (r.users && r.users !== "live") { add(meta, el("div", "sub", "users: " + r.users)); }
    if (r.shifted) { add(meta, el("div", "sub", "after the preference shift")); }
    var reply = cell();
    add(reply, document.createTextNode(missing(r.reply)));
    if (r.truncated) { add(reply, el("div", "hint", "(cut at the token limit)")); }
    var judge = cell();
    add(judge, badge(r.score, data.scales[r.variant]));
    if (r.score === null) { add(judge, flag("no readable score")); }
    if (r.expected !== null) { add(judge, flag("expected " + r.expected.toFixed(2))); }
    if (r.attempts > 1) { add(judge, flag("asked " + r.attempts + " times")); }
    add(judge, el("div", "reason", missing(r.reason)));
    return add(tr, meta, add(cell(), document.createTextNode(missing(r.user))), reply, judge);
  }

  // -- training trees -------------------------------------------------------------------------
  var VERDICTS = {hinted: "hinted preferred", plain: "plain preferred",
                  inconsistent: "inconsistent (the votes disagree)",
                  unparseable: "unparseable (no vote read)", dropped: "conversation dropped"};
  function drawTree(r, view) {
    var tr = el("tr");
    var meta = cell("meta");
    add(meta, el("div", null, r.conv), personaLink(view, {persona: r.persona}, r.persona),
        el("div", null, r.turn === null ? "" : "turn " + r.turn),
        r.model ? el("div", "sub", r.model) : null);
    if (r.dropped) {
      var note = cell();
      note.colSpan = 4;
      add(note, el("b", null, "Dropped: "), document.createTextNode(r.dropped));
      return add(tr, meta, note);
    }
    var user = add(cell(), document.createTextNode(missing(r.user)));
    add(user, el("div", "hint", r.parsed
      ? "inferred so far: " + (r.inferred_profile || "none") + " / " +
        (r.inferred_personality || "none")
      : "inferred so far: (the inducer's answer could not be read)"));
    var branches = ["hinted", "plain"].map(function (b) {
      var td = cell(r.preferred === b ? "preferred" : null);
      if (r.preferred === b) { add(td, el("span", "badge", "preferred")); }
      if (r.continued === b) { add(td, el("span", "badge cont", "continued")); }
      if (r.preferred === b || r.continued === b) { add(td, el("br")); }
      add(td, document.createTextNode(missing(r[b])));
      return td;
    });
    var verdict = cell();
    add(verdict, el("b", null, VERDICTS[r.preferred] || String(r.preferred)),
        el("div", "sub", "rule: " + r.rule + (r.p_hinted !== null
          ? "; P(hinted) " + r.p_hinted.toFixed(2) : "")));
    if (r.note) { add(verdict, el("div", "sub", r.note)); }
    r.votes.forEach(function (v, i) {
      add(verdict, el("div", "answer", "vote " + (i + 1) + " (" + v.first + " shown first): " +
        (v.pick ? "picked " + v.pick : "no pick") + (v.answers.length
          ? " · answer: " + v.answers[v.answers.length - 1] : "")));
    });
    return add(tr, meta, user, branches[0], branches[1], verdict);
  }

  // -- the filters ----------------------------------------------------------------------------
  function same(key) {
    return function (r, value) { return String(r[key]) === value; };
  }
  function plain(v) { return String(v); }
  var bench = data.benchmark, trees = data.trees;
  var variantNames = Object.keys(data.scales);
  var multipleVariants = variantNames.length > 1;
  var scores = [];
  variantNames.forEach(function (v) {
    data.scales[v].forEach(function (s) { if (scores.indexOf(s) < 0) { scores.push(s); } });
  });
  scores.sort(function (a, b) { return a - b; });
  var benchFilters = [
    {key: "model", title: "model", values: distinct(bench, "model"), label: plain,
     match: same("model")},
    {key: "persona", title: "persona", values: distinct(bench, "persona"), label: plain,
     match: same("persona")},
    {key: "turn", title: "turn", values: distinct(bench, "turn").sort(function (a, b) {
      return a - b; }), label: plain, match: same("turn")},
    {key: "score", title: "score", values: scores.concat(["none"]),
     label: function (v) { return v === "none" ? "no score" : String(v); },
     match: function (r, v) { return v === "none" ? r.score === null : String(r.score) === v; }}];
  if (multipleVariants) {
    benchFilters.unshift({key: "variant", title: "evaluation", values: variantNames,
                          label: plain, match: same("variant")});
  }
  var treeFilters = [
    {key: "model", title: "assistant model", values: distinct(trees, "model"), label: plain,
     match: same("model")},
    {key: "persona", title: "persona", values: distinct(trees, "persona"), label: plain,
     match: same("persona")},
    {key: "turn", title: "turn", values: distinct(trees, "turn").sort(function (a, b) {
      return a - b; }), label: plain, match: same("turn")},
    {key: "verdict", title: "verdict", values: Object.keys(VERDICTS).filter(function (v) {
      return trees.some(function (r) { return r.preferred === v; }); }),
     label: function (v) { return VERDICTS[v]; }, match: same("preferred")}];

  var views = {
    benchmark: new View("benchmark", bench, "turns", benchFilters, drawBenchmark,
                        data.personas.benchmark),
    trees: new View("trees", trees, "turns", treeFilters, drawTree, data.personas.training)};
  window.aloeViewer = views;  // for a reader's console, and the page's tests

  function show(name) {
    Object.keys(views).forEach(function (key) {
      document.getElementById(key).hidden = key !== name;
      document.getElementById("tab-" + key).setAttribute("aria-selected", String(key === name));
    });
  }
  Object.keys(views).forEach(function (key) {
    document.getElementById("tab-" + key).addEventListener("click", function () { show(key); });
  });
  var asked = window.location.hash.replace("#", "");
  show(views.hasOwnProperty(asked) ? asked : (bench.length || !trees.length ? "benchmark"
                                                                              : "trees"));
})();
