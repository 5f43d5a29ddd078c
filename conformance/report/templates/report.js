"use strict";
(function () {
  // ---- module tree: rows (case, mode, module) aggregated into a path tree for the selected case and mode ----
  var data = JSON.parse(document.getElementById("tree-data").textContent);
  var C = {}; data.columns.forEach(function (name, i) { C[name] = i; });
  var FAILING = { fail: 1, error: 1 };
  var INF = 1e299;
  var el = function (id) { return document.getElementById(id); };
  var root = el("tree-root"), info = el("tree-info");
  var caseSel = el("tree-case"), modeSel = el("tree-mode"), sortSel = el("tree-sort");
  var filterBox = el("tree-filter"), failingBox = el("tree-failing");
  var expanded = {}, firstBuild = true, tree = null, MAX_ROWS = 4000;

  function segments(key) {
    var colon = key.indexOf(":");
    var module = colon < 0 ? key : key.slice(0, colon);
    var out = [];
    (module ? module.split(".") : []).forEach(function (part) {
      if (/^\d+$/.test(part) && out.length) out[out.length - 1] += "." + part; else out.push(part);
    });
    if (colon >= 0) out.push(key.slice(colon));
    return out;
  }
  function newAgg() {
    return { status: 0, margin: 0, rel: null, abs: null, mtRel: null, mtAbs: null, thrRel: null, thrAbs: null,
             calls: 0, tensors: 0, fails: 0, seq: Infinity, worst: "" };
  }
  function maxOf(a, b) { return b === null || b === undefined ? a : (a === null || b > a ? b : a); }
  function merge(agg, r, key) {
    agg.status = Math.max(agg.status, r[C.status]);
    if (r[C.margin] !== null && (r[C.margin] > agg.margin || !agg.worst)) {
      agg.margin = Math.max(agg.margin, r[C.margin]);
      agg.thrRel = r[C.thr_rel_l2]; agg.thrAbs = r[C.thr_max_abs];
      agg.worst = data.cases[r[C.case]] + " · " + data.modes[r[C.mode]] + " · " + key + r[C.worst];
    }
    agg.rel = maxOf(agg.rel, r[C.rel_l2]); agg.abs = maxOf(agg.abs, r[C.max_abs]);
    agg.mtRel = maxOf(agg.mtRel, r[C.min_tol_rel_l2]); agg.mtAbs = maxOf(agg.mtAbs, r[C.min_tol_max_abs]);
    agg.calls += r[C.calls]; agg.tensors += r[C.tensors]; agg.fails += r[C.fails];
    agg.seq = Math.min(agg.seq, r[C.seq]);
  }
  function matcher(text) {
    text = text.trim().toLowerCase();
    if (!text) return null;
    if (text.indexOf("*") >= 0 || text.indexOf("?") >= 0) {
      var re = new RegExp("^" + text.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
      return function (key) { return re.test(key.toLowerCase()); };
    }
    return function (key) { return key.toLowerCase().indexOf(text) >= 0; };
  }
  function build() {
    var ci = caseSel.value === "" ? -1 : +caseSel.value, mi = modeSel.value === "" ? -1 : +modeSel.value;
    var match = matcher(filterBox.value), onlyFailing = failingBox.checked;
    var top = { name: "", path: "", children: {}, agg: newAgg(), own: null, hit: false };
    var hits = 0;
    data.rows.forEach(function (r) {
      if ((ci >= 0 && r[C.case] !== ci) || (mi >= 0 && r[C.mode] !== mi)) return;
      var key = data.keys[r[C.key]];
      if (onlyFailing && !FAILING[data.statuses[r[C.status]]]) return;
      if (match && !match(key)) return;
      hits += 1;
      var node = top, path = "";
      merge(top.agg, r, key);
      segments(key).forEach(function (seg) {
        path = path ? (seg.charAt(0) === ":" ? path + seg : path + "." + seg) : seg;
        if (!node.children[seg]) node.children[seg] = { name: seg, path: path, children: {}, agg: newAgg(), own: null, hit: false };
        node = node.children[seg];
        merge(node.agg, r, key);
      });
      if (!node.own) node.own = newAgg();
      merge(node.own, r, key);
      node.hit = !!match;
    });
    tree = top;
    if (firstBuild || match || onlyFailing) autoExpand(top, !!(match || onlyFailing));
    firstBuild = false;
    render();
    // hits counts results (one per case, mode and module), not the rows drawn: parents are shown for context
    info.textContent = hits + (match || onlyFailing ? " matching" : "") + " module result(s)" +
      (ci >= 0 ? " in " + data.cases[ci] : " over " + data.cases.length + " case(s)") +
      (match || onlyFailing ? ", shown with the modules that contain them" : "");
  }
  function autoExpand(node, everything) {
    Object.keys(node.children).forEach(function (k) {
      var child = node.children[k];
      if (everything || child.agg.fails > 0) expanded[child.path] = true;
      autoExpand(child, everything);
    });
  }
  function sorted(node) {
    var kids = Object.keys(node.children).map(function (k) { return node.children[k]; });
    var mode = sortSel.value;
    var natural = function (a, b) { return a.name.localeCompare(b.name, undefined, { numeric: true }); };
    kids.sort(function (a, b) {
      if (mode === "margin") return (b.agg.margin - a.agg.margin) || natural(a, b);
      if (mode === "rel") return ((b.agg.rel || 0) - (a.agg.rel || 0)) || natural(a, b);
      if (mode === "name") return natural(a, b);
      return (a.agg.seq - b.agg.seq) || natural(a, b);
    });
    return kids;
  }
  function num(v) {
    if (v === null || v === undefined) return "—";
    if (v >= INF) return "∞";
    if (v === 0) return "0";
    var a = Math.abs(v);
    return (a >= 1e-3 && a < 1e4) ? String(+v.toPrecision(3)) : v.toExponential(2);
  }
  function colour(agg) {
    var status = data.statuses[agg.status];
    if (FAILING[status]) return "hsl(0,75%,45%)";
    if (status === "not_covered" || status === "interface_mismatch") return "#9e9e9e";
    if (status === "xfail") return "#8e6bbf";
    if (!(agg.margin > 0)) return "hsl(120,55%,40%)";
    var t = Math.min(1, Math.max(0, (Math.log10(agg.margin) + 1.5) / 1.5));  // green below 0.03, red at 1
    return "hsl(" + Math.round(120 * (1 - t)) + ",70%," + (42 - 6 * t) + "%)";
  }
  function barWidth(m) {
    if (!(m > 0)) return 2;
    return Math.round(2 + 88 * Math.min(1, Math.max(0, (Math.log10(m) + 6) / 6)));
  }
  function cell(cls, text, title) {
    var span = document.createElement("span");
    span.className = cls; span.textContent = text;
    if (title) span.title = title;
    return span;
  }
  function rowFor(node, depth) {
    var row = document.createElement("div");
    var hasKids = Object.keys(node.children).length > 0, open = !!expanded[node.path];
    var agg = node.agg, status = data.statuses[agg.status];
    row.className = "tree-row tree-cols s-" + status + (node.hit ? " hit" : "");
    row.setAttribute("role", "treeitem");
    row.dataset.path = node.path;
    row.dataset.status = status;
    var name = document.createElement("span");
    name.className = "name"; name.style.paddingLeft = (depth * 14) + "px"; name.title = node.path;
    var toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "toggle" + (hasKids ? "" : " leaf");
    toggle.textContent = hasKids ? (open ? "▾" : "▸") : "·";
    if (hasKids) {
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      toggle.addEventListener("click", function () { expanded[node.path] = !expanded[node.path]; render(); });
    }
    name.appendChild(toggle);
    var sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = colour(agg);
    name.appendChild(sw);
    name.appendChild(node.own ? document.createElement("b") : document.createElement("span")).textContent = node.name;
    row.appendChild(name);
    row.appendChild(cell("status", status.replace("_", " ")));
    var m = document.createElement("span");
    var bar = document.createElement("span"); bar.className = "bar"; bar.style.width = barWidth(agg.margin) + "px"; bar.style.background = colour(agg);
    m.appendChild(bar); m.appendChild(document.createTextNode(num(agg.margin))); m.title = "worst: " + agg.worst;
    row.appendChild(m);
    row.appendChild(cell("num", num(agg.rel)));
    row.appendChild(cell("num", num(agg.abs)));
    row.appendChild(cell("num", num(agg.thrRel) + " / " + num(agg.thrAbs), "tolerance of the worst tensor"));
    row.appendChild(cell("num", num(agg.mtRel) + " / " + num(agg.mtAbs), "every tensor would pass with these"));
    row.appendChild(cell("num", String(agg.calls)));
    row.appendChild(cell("num", String(agg.tensors)));
    row.appendChild(cell("num", String(agg.fails)));
    return row;
  }
  function render() {
    var frag = document.createDocumentFragment(), count = 0;
    (function walk(node, depth) {
      sorted(node).forEach(function (child) {
        if (count >= MAX_ROWS) return;
        frag.appendChild(rowFor(child, depth)); count += 1;
        if (expanded[child.path]) walk(child, depth + 1);
      });
    })(tree, 0);
    root.textContent = "";
    if (count === 0) root.appendChild(cell("muted", "no module matches"));
    root.appendChild(frag);
    if (count >= MAX_ROWS) root.appendChild(cell("muted", "first " + MAX_ROWS + " rows shown: narrow the filter"));
  }
  function setAll(open) {
    (function walk(node) {
      Object.keys(node.children).forEach(function (k) {
        var child = node.children[k];
        if (Object.keys(child.children).length) { if (open) expanded[child.path] = true; else delete expanded[child.path]; }
        walk(child);
      });
    })(tree);
    render();
  }
  [caseSel, modeSel, failingBox].forEach(function (x) { x.addEventListener("change", build); });
  sortSel.addEventListener("change", render);
  var timer = null;
  filterBox.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(build, 150); });
  el("tree-expand").addEventListener("click", function () { setAll(true); });
  el("tree-collapse").addEventListener("click", function () { setAll(false); });
  Array.prototype.forEach.call(document.querySelectorAll(".tree-link"), function (a) {
    a.addEventListener("click", function () {
      filterBox.value = a.dataset.treeKey;
      var i = data.cases.indexOf(a.dataset.treeCase);
      caseSel.value = i >= 0 ? String(i) : "";
      build();
    });
  });
  build();

  // ---- case panels ----
  function cases(open) {
    Array.prototype.forEach.call(document.querySelectorAll("details.case"), function (d) { d.open = open; });
  }
  el("open-all").addEventListener("click", function () { cases(true); });
  el("close-all").addEventListener("click", function () { cases(false); });
})();
