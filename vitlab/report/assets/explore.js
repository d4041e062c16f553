// vitlab embedding explorer: one canvas, every point; no network, no server.
// Every string from the data is shown with textContent (never innerHTML), so ids, class names and paths
// are text, not markup. window.vitlabExplorer exposes the state for tests and power users.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("vitlab-data").textContent);
  function decode(s, T) {
    var bin = atob(s), u = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return new T(u.buffer);
  }
  var n = D.n, K = D.k, xy = decode(D.xy, Float32Array), nn = decode(D.nn, Int32Array);
  var nnSim = decode(D.nnSim, Float32Array), PAL = D.palette, GREY = "#c3c9cf";
  var thumbs = new Map(), ids = new Map();
  D.thumbRows.forEach(function (r, j) { thumbs.set(r, D.thumbs[j]); });
  D.ids.forEach(function (s, i) { if (!ids.has(s)) ids.set(s, i); });
  var canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
  var tip = document.getElementById("tip"), status = document.getElementById("status");
  var hidden = new Set(), selected = new Uint8Array(n), nSelected = 0, current = -1, drawn = 0;
  var mode = "label", cols = null, order = null, view = {s: 1, tx: 0, ty: 0}, W = 0, H = 0;
  var PT = n > 50000 ? 2 : n > 5000 ? 3 : 4;
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function className(c) { return c >= 0 && c < D.classes.length ? D.classes[c] : (c < 0 ? "(none)" : String(c)); }
  function labelOf(i) { return D.labels ? D.labels[i] : -1; }

  // ---- colours: per mode a colour index per point, a palette, a legend and a drawing order
  var RAMP = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"];
  var MODES = {
    label: function () {
      return categorical(function (i) { return labelOf(i); }, D.classes, "(no label)");
    },
    split: function () {
      var s = D.split;
      return categorical(function (i) { return s.codes[i]; }, s.names, "(none)");
    },
    pred: function () {
      return categorical(function (i) { return D.pred[i]; }, D.classes, "train item: no prediction");
    },
    correct: function () {
      var names = ["correct", "wrong", "train item: no prediction"], cc = ["#2e9e4f", "#d62728", GREY];
      var c = new Uint16Array(n);
      for (var i = 0; i < n; i++) c[i] = D.pred[i] < 0 ? 2 : (D.pred[i] === labelOf(i) ? 0 : 1);
      return finish(c, cc, names, [2, 0, 1]);
    },
    dup: function () {
      return categorical(function (i) { return D.dup[i]; }, null, "in no duplicate group");
    },
    issue: function () {
      var c = new Uint16Array(n), s = D.issues.score;
      for (var i = 0; i < n; i++) c[i] = Math.min(7, Math.max(0, Math.floor(s[i] * 8)));
      var names = RAMP.map(function (_, b) { return (b / 8).toFixed(3) + " to " + ((b + 1) / 8).toFixed(3); });
      return finish(c, RAMP.slice(), names, [0, 1, 2, 3, 4, 5, 6, 7]);
    }
  };
  function categorical(get, names, noneName) {
    var c = new Uint16Array(n), m = 0, i;
    for (i = 0; i < n; i++) { var v = get(i); if (v > m) m = v; }
    var colours = [], labels = [];
    for (var j = 0; j <= m; j++) {
      colours.push(PAL[j % PAL.length]);
      labels.push(names ? className(j) : "group " + j + (D.dupKinds ? " (" + D.dupKinds[j] + ")" : ""));
    }
    colours.push(GREY); labels.push(noneName);
    for (i = 0; i < n; i++) { var x = get(i); c[i] = x >= 0 ? x : m + 1; }
    var layers = [m + 1];
    for (j = 0; j <= m; j++) layers.push(j);
    return finish(c, colours, labels, layers);
  }
  function finish(c, colours, labels, layers) {
    var count = new Array(colours.length).fill(0), i;
    for (i = 0; i < n; i++) count[c[i]]++;
    var rank = new Array(colours.length).fill(0);
    layers.forEach(function (b, r) { rank[b] = r; });
    var start = new Array(layers.length + 1).fill(0);
    for (i = 0; i < colours.length; i++) start[rank[i] + 1] += count[i];
    for (i = 1; i < start.length; i++) start[i] += start[i - 1];
    var o = new Int32Array(n), pos = start.slice();
    for (i = 0; i < n; i++) o[pos[rank[c[i]]]++] = i;
    return {c: c, colours: colours, packed: colours.map(packed), labels: labels, count: count, order: o};
  }

  // ---- view: fit the data, pan, zoom
  var bx0 = Infinity, bx1 = -Infinity, by0 = Infinity, by1 = -Infinity;
  for (var i0 = 0; i0 < n; i0++) {
    var X0 = xy[2 * i0], Y0 = xy[2 * i0 + 1];
    if (X0 < bx0) bx0 = X0; if (X0 > bx1) bx1 = X0; if (Y0 < by0) by0 = Y0; if (Y0 > by1) by1 = Y0;
  }
  if (!(bx1 > bx0)) { bx0 -= 1; bx1 += 1; }
  if (!(by1 > by0)) { by0 -= 1; by1 += 1; }
  function resize() {
    var r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    W = Math.max(1, r.width); H = Math.max(1, r.height);
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  function fit() {
    var pad = 16, s = Math.min((W - 2 * pad) / (bx1 - bx0), (H - 2 * pad) / (by1 - by0));
    view.s = s; view.tx = (W - s * (bx0 + bx1)) / 2; view.ty = (H + s * (by0 + by1)) / 2;
  }
  function sx(i) { return xy[2 * i] * view.s + view.tx; }
  function sy(i) { return -xy[2 * i + 1] * view.s + view.ty; }

  // ---- spatial grid (data coordinates) for hover and click
  var G = Math.max(1, Math.ceil(Math.sqrt(n / 4))), cw = (bx1 - bx0) / G, ch = (by1 - by0) / G;
  var cellStart = new Int32Array(G * G + 1), cellItems = new Int32Array(n);
  (function () {
    var cell = new Int32Array(n), i;
    for (i = 0; i < n; i++) {
      var gx = Math.min(G - 1, Math.floor((xy[2 * i] - bx0) / cw)), gy = Math.min(G - 1, Math.floor((xy[2 * i + 1] - by0) / ch));
      cell[i] = gy * G + gx; cellStart[cell[i] + 1]++;
    }
    for (i = 1; i <= G * G; i++) cellStart[i] += cellStart[i - 1];
    var pos = cellStart.slice(0, G * G);
    for (i = 0; i < n; i++) cellItems[pos[cell[i]]++] = i;
  })();
  function visible(i) { return !hidden.has(labelOf(i)); }
  function hit(px, py) {
    var R = 6, dx = (px - view.tx) / view.s, dy = (view.ty - py) / view.s, rd = R / view.s;
    var gx0 = Math.max(0, Math.floor((dx - rd - bx0) / cw)), gx1 = Math.min(G - 1, Math.floor((dx + rd - bx0) / cw));
    var gy0 = Math.max(0, Math.floor((dy - rd - by0) / ch)), gy1 = Math.min(G - 1, Math.floor((dy + rd - by0) / ch));
    var best = -1, bd = R * R;
    for (var gy = gy0; gy <= gy1; gy++) for (var gx = gx0; gx <= gx1; gx++) {
      var c = gy * G + gx;
      for (var p = cellStart[c]; p < cellStart[c + 1]; p++) {
        var i = cellItems[p];
        if (!visible(i)) continue;
        var ex = sx(i) - px, ey = sy(i) - py, d = ex * ex + ey * ey;
        if (d < bd || (d === bd && best >= 0 && i < best)) { bd = d; best = i; }
      }
    }
    return best;
  }

  // ---- drawing
  // Points are written straight into one pixel buffer (one putImageData per frame): a fillRect per point made a
  // full redraw of 1e5 points cost ~0.9 s in headless Chromium, the buffer a few milliseconds.
  var img = null, px32 = null;
  function packed(hex) {
    var v = parseInt(hex.slice(1), 16);
    return ((255 << 24) | ((v & 255) << 16) | (((v >> 8) & 255) << 8) | ((v >> 16) & 255)) >>> 0;
  }
  function draw() {
    var dpr = window.devicePixelRatio || 1, CW = canvas.width, CH = canvas.height;
    if (!img || img.width !== CW || img.height !== CH) { img = ctx.createImageData(CW, CH); px32 = new Uint32Array(img.data.buffer); }
    px32.fill(0xffffffff);
    var ps = Math.max(1, Math.round(PT * dpr)), half = ps >> 1, count = 0, o = cols.order, cc = cols.packed;
    var h = PT / 2, sdx = view.s * dpr, tdx = view.tx * dpr, tdy = view.ty * dpr;
    for (var p = 0; p < n; p++) {
      var i = o[p];
      if (!visible(i)) continue;
      var x0 = Math.round(xy[2 * i] * sdx + tdx) - half, y0 = Math.round(-xy[2 * i + 1] * sdx + tdy) - half;
      if (x0 + ps <= 0 || y0 + ps <= 0 || x0 >= CW || y0 >= CH) continue;
      var col = cc[cols.c[i]], xa = Math.max(0, x0), xb = Math.min(CW, x0 + ps), yb = Math.min(CH, y0 + ps);
      for (var yy = Math.max(0, y0); yy < yb; yy++) { var row = yy * CW; for (var xx = xa; xx < xb; xx++) px32[row + xx] = col; }
      count++;
    }
    ctx.putImageData(img, 0, 0);
    drawn = count;
    ctx.lineWidth = 1; ctx.strokeStyle = "#111";
    if (nSelected) {
      ctx.beginPath();
      for (var j = 0; j < n; j++) if (selected[j] && visible(j)) ctx.rect(sx(j) - h - 1, sy(j) - h - 1, PT + 2, PT + 2);
      ctx.stroke();
    }
    if (current >= 0) {
      ctx.strokeStyle = "#ff7f0e"; ctx.lineWidth = 2;
      for (var q = 0; q < K; q++) {
        var m = nn[current * K + q];
        if (m >= 0) { ctx.beginPath(); ctx.arc(sx(m), sy(m), PT + 3, 0, 2 * Math.PI); ctx.stroke(); }
      }
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2.5;
      ctx.beginPath(); ctx.arc(sx(current), sy(current), PT + 6, 0, 2 * Math.PI); ctx.stroke();
    }
    if (box) {
      ctx.strokeStyle = "#4a7fc1"; ctx.lineWidth = 1; ctx.setLineDash([4, 3]);
      ctx.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0); ctx.setLineDash([]);
    }
    canvas.setAttribute("data-drawn", String(drawn));
    status.textContent = drawn.toLocaleString("en") + " of " + n.toLocaleString("en") + " points drawn" +
      (nSelected ? " · " + nSelected.toLocaleString("en") + " selected" : "");
  }
  var pending = false;
  function redraw() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); } }

  // ---- item views
  function image(i, cls) {
    var u = thumbs.get(i);
    if (!u) return el("div", "no thumbnail", "noimg");
    var im = el("img", null, cls); im.src = u; im.alt = D.ids[i]; return im;
  }
  function facts(i) {
    var rows = [["id", D.ids[i]]];
    if (D.labels) rows.push(["label", className(labelOf(i))]);
    if (D.pred) rows.push(["prediction", D.pred[i] >= 0 ? className(D.pred[i]) + (D.pred[i] === labelOf(i) ? " (correct)" : " (wrong)") : "— (train item)"]);
    if (D.split) rows.push(["split", D.split.names[D.split.codes[i]]]);
    if (D.groups) rows.push(["group", D.groups[i]]);
    if (D.dup) rows.push(["duplicate group", D.dup[i] >= 0 ? String(D.dup[i]) : "—"]);
    if (D.issues) rows.push(["label issue", (D.issues.flag[i] ? "FLAGGED (rank " + (D.issues.rank[i] + 1) + "), " : "") +
      "score " + D.issues.score[i].toFixed(3) + ", suggested " + className(D.issues.suggested[i])]);
    if (D.paths) rows.push(["path", D.paths[i]]);
    var t = el("table", null, "kv");
    rows.forEach(function (r) { var tr = el("tr"); tr.appendChild(el("td", r[0])); tr.appendChild(el("td", r[1])); t.appendChild(tr); });
    return t;
  }
  function showTip(i, px, py) {
    tip.textContent = "";
    tip.appendChild(image(i));
    tip.appendChild(facts(i));
    tip.style.display = "block";
    var bw = canvas.clientWidth, left = px + 14, top = py + 14;
    if (left + 250 > bw) left = Math.max(0, px - 254);
    tip.style.left = left + "px"; tip.style.top = Math.max(0, Math.min(top, canvas.clientHeight - 200)) + "px";
    tip.setAttribute("data-row", String(i));
  }
  function select(i, centre) {
    current = i;
    var p = document.getElementById("item");
    p.textContent = "";
    if (i < 0) { p.appendChild(el("p", "Click a point to see it and its nearest neighbours.", "note")); redraw(); return; }
    var d = el("div", null, "item"); d.appendChild(image(i)); p.appendChild(d); p.appendChild(facts(i));
    p.appendChild(el("h2", "Nearest neighbours (cosine)"));
    var ol = el("ol", null, "nbs");
    ol.id = "neighbours";
    for (var q = 0; q < K; q++) {
      var m = nn[i * K + q];
      if (m < 0) continue;
      var li = el("li", null, "nb"); li.setAttribute("data-row", String(m));
      li.appendChild(image(m));
      var txt = el("div"); txt.appendChild(el("div", D.ids[m], "nbid"));
      txt.appendChild(el("div", (D.labels ? className(labelOf(m)) + " · " : "") + "similarity " + nnSim[i * K + q].toFixed(4), "sim"));
      li.appendChild(txt);
      li.addEventListener("click", (function (r) { return function () { select(r, true); }; })(m));
      ol.appendChild(li);
    }
    p.appendChild(ol);
    if (centre) { view.tx += W / 2 - sx(i); view.ty += H / 2 - sy(i); }
    redraw();
  }

  // ---- mouse: hover, click, pan (drag), zoom (wheel), box selection (shift + drag)
  var drag = null, box = null;
  function local(ev) { var r = canvas.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; }
  canvas.addEventListener("mousedown", function (ev) {
    var p = local(ev);
    drag = {x: p[0], y: p[1], tx: view.tx, ty: view.ty, moved: false, shift: ev.shiftKey};
  });
  window.addEventListener("mousemove", function (ev) {
    var p = local(ev);
    if (drag) {
      if (Math.abs(p[0] - drag.x) + Math.abs(p[1] - drag.y) > 3) drag.moved = true;
      if (drag.moved) {
        tip.style.display = "none";
        if (drag.shift) box = {x0: Math.min(drag.x, p[0]), y0: Math.min(drag.y, p[1]), x1: Math.max(drag.x, p[0]), y1: Math.max(drag.y, p[1])};
        else { view.tx = drag.tx + p[0] - drag.x; view.ty = drag.ty + p[1] - drag.y; }
        redraw();
      }
      return;
    }
    if (ev.target !== canvas) { tip.style.display = "none"; return; }
    var i = hit(p[0], p[1]);
    if (i >= 0) showTip(i, p[0], p[1]); else tip.style.display = "none";
  });
  window.addEventListener("mouseup", function (ev) {
    if (!drag) return;
    var p = local(ev), d = drag;
    drag = null;
    if (box) {
      for (var i = 0; i < n; i++) {
        var x = sx(i), y = sy(i);
        if (visible(i) && !selected[i] && x >= box.x0 && x <= box.x1 && y >= box.y0 && y <= box.y1) { selected[i] = 1; nSelected++; }
      }
      box = null; redraw(); return;
    }
    if (!d.moved && ev.target === canvas) select(hit(p[0], p[1]), false);
  });
  canvas.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  canvas.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var p = local(ev), f = Math.exp(-ev.deltaY * 0.0015);
    view.tx = p[0] - (p[0] - view.tx) * f; view.ty = p[1] - (p[1] - view.ty) * f; view.s *= f;
    tip.style.display = "none"; redraw();
  }, {passive: false});

  // ---- controls: colour, legend, class filter, find, selection and export
  function legend() {
    var L = document.getElementById("legend");
    L.textContent = "";
    if (mode === "issue") {
      var r = el("div", null, "ramp"); r.style.background = "linear-gradient(to right," + RAMP.join(",") + ")";
      L.appendChild(r); L.appendChild(el("div", "0: the given label fits · 1: probably wrong (1 − self-confidence)", "note"));
      var f = 0; for (var i = 0; i < n; i++) f += D.issues.flag[i];
      L.appendChild(el("div", f + " flagged by cleanlab", "note")); return;
    }
    var used = cols.labels.map(function (_, j) { return j; }).filter(function (j) { return cols.count[j] > 0; });
    var shown = used.length > 40 ? used.slice().sort(function (a, b) { return cols.count[b] - cols.count[a]; }).slice(0, 30) : used;
    shown.forEach(function (j) {
      var d = el("div"), s = el("span", null, "sw"); s.style.background = cols.colours[j];
      d.appendChild(s); d.appendChild(document.createTextNode(cols.labels[j] + " (" + cols.count[j] + ")")); L.appendChild(d);
    });
    if (shown.length < used.length) L.appendChild(el("div", "… and " + (used.length - shown.length) + " more (the largest shown)", "note"));
  }
  function setMode(m) {
    mode = m; cols = MODES[m](); legend(); redraw();
    document.getElementById("colour").value = m;
  }
  var sel = document.getElementById("colour");
  sel.addEventListener("change", function () { setMode(sel.value); });
  var C = document.getElementById("classes");
  function classBoxes() {
    var seen = new Set(); for (var i = 0; i < n; i++) seen.add(labelOf(i));
    Array.from(seen).sort(function (a, b) { return a - b; }).forEach(function (c) {
      var lab = el("label"), cb = el("input"); cb.type = "checkbox"; cb.checked = true; cb.value = String(c);
      cb.addEventListener("change", function () { if (cb.checked) hidden.delete(c); else hidden.add(c); tip.style.display = "none"; redraw(); });
      lab.appendChild(cb); lab.appendChild(document.createTextNode(" " + (D.labels ? className(c) : "all items"))); C.appendChild(lab);
    });
  }
  function setAll(on) {
    C.querySelectorAll("input").forEach(function (cb) { cb.checked = on; var c = Number(cb.value); if (on) hidden.delete(c); else hidden.add(c); });
    redraw();
  }
  document.getElementById("cls-all").addEventListener("click", function () { setAll(true); });
  document.getElementById("cls-none").addEventListener("click", function () { setAll(false); });
  var findBox = document.getElementById("find"), found = document.getElementById("found");
  function find(s) {
    var i = ids.has(s) ? ids.get(s) : -1;
    found.textContent = i < 0 ? "no item with id " + JSON.stringify(s) : "";
    if (i >= 0) select(i, true);
    return i;
  }
  findBox.addEventListener("keydown", function (ev) { if (ev.key === "Enter") find(findBox.value); });
  document.getElementById("find-go").addEventListener("click", function () { find(findBox.value); });
  document.getElementById("sel-visible").addEventListener("click", function () {
    for (var i = 0; i < n; i++) if (visible(i) && !selected[i]) { selected[i] = 1; nSelected++; }
    redraw();
  });
  document.getElementById("fit").addEventListener("click", function () { fit(); redraw(); });
  document.getElementById("sel-clear").addEventListener("click", function () { selected.fill(0); nSelected = 0; redraw(); });
  function csvField(v) { v = String(v); return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
  function manifest() {
    var head = [];
    if (D.paths) head.push("path");
    if (D.labels) head.push("label");
    if (D.split) head.push("split");
    if (D.groups) head.push("group");
    head.push("id");
    var lines = [head.join(",")];
    for (var i = 0; i < n; i++) {
      if (!selected[i]) continue;
      var row = [];
      if (D.paths) row.push(D.paths[i]);
      if (D.labels) row.push(className(labelOf(i)));
      if (D.split) row.push(D.split.names[D.split.codes[i]]);
      if (D.groups) row.push(D.groups[i]);
      row.push(D.ids[i]);
      lines.push(row.map(csvField).join(","));
    }
    return lines.join("\r\n") + "\r\n";
  }
  document.getElementById("export").addEventListener("click", function () {
    if (!nSelected) { found.textContent = "nothing selected: shift + drag on the map, or Select visible"; return; }
    var a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([manifest()], {type: "text/csv"}));
    a.download = "selection.csv"; document.body.appendChild(a); a.click(); a.remove();
  });
  var ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(function () { resize(); redraw(); }) : null;

  resize(); fit(); classBoxes(); setMode("label"); select(-1); draw();
  if (ro) ro.observe(canvas);
  window.vitlabExplorer = {
    n: n, k: K,
    get drawn() { return drawn; },
    get selectedCount() { return nSelected; },
    screenPos: function (i) { return [sx(i), sy(i)]; },
    select: function (i) { select(i, false); }, find: find, setColour: setMode, manifest: manifest,
    fit: function () { fit(); draw(); },
    redrawNow: draw
  };
  document.body.setAttribute("data-ready", "1");
})();
