// Review page logic: a virtualised grid (only rows in view are in the DOM), keyboard focus, reject toggles kept in
// localStorage, export/import of the review file {"version": 1, "rejected": [face ids]}.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("review-data").textContent);
  const COL = {};
  DATA.columns.forEach((c, i) => { COL[c] = i; });
  const faces = DATA.rows.map((r, k) => {
    const f = { k: k };
    for (const c of DATA.columns) f[c] = r[COL[c]];
    f.abs_yaw = f.yaw == null ? null : Math.abs(f.yaw);
    f.filtered = f.status === "rejected" && f.reason !== "review"; // rejected by a curation filter, not by review
    return f;
  });
  const missing = new Set(DATA.missing);
  // Sheet layout (see iter_sprite_sheets in review.py): face j of a sheet sits in a STRIDE-px square, PAD px inside it.
  const SIDE = DATA.sheets.side, PX = DATA.sheets.thumb_px, PAD_PX = DATA.sheets.pad_px, PER = SIDE * SIDE;
  const STRIDE = PX + 2 * PAD_PX;
  const sheetRows = DATA.sheets.srcs.map((_, i) => Math.ceil(Math.min(PER, faces.length - i * PER) / SIDE));
  const sheetCols = DATA.sheets.srcs.map((_, i) => (sheetRows[i] > 1 ? SIDE : Math.min(PER, faces.length - i * PER)));
  const STORE_KEY = "ptt-faces-review:" + DATA.page_id;
  const HDR_H = 30, GAP = 6, PAD = 10;

  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), canvas = $("canvas");

  // ------------------------------------------------------------ state
  let rejected = new Set(DATA.initial_rejected);
  let restored = false;
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
    if (saved && Array.isArray(saved.rejected)) { rejected = new Set(saved.rejected); restored = true; }
  } catch (e) { /* no localStorage on this origin: decisions live until the tab closes */ }

  let view = { show: "kept", group: "pose", sort: "blur_var", asc: true, zoom: 96 };
  let order = [];   // display order: indices into faces
  let rows = [];    // {type: "h"|"f", y, h, label?, start?, end?}
  let rowOf = [];   // order position -> index into rows
  let cols = 1, cell = 100, totalH = 0, focus = -1;

  function persist() {
    try { localStorage.setItem(STORE_KEY, JSON.stringify({ rejected: [...rejected].sort() })); } catch (e) { /* ignore */ }
  }

  // ------------------------------------------------------------ sprites
  function sheetCss() {
    const s = view.zoom / PX;
    let css = "";
    DATA.sheets.srcs.forEach((src, i) => {
      css += `.s${i}{background-image:url("${src}");background-size:${sheetCols[i] * STRIDE * s}px ${sheetRows[i] * STRIDE * s}px}\n`;
    });
    $("sheet-css").textContent = css;
  }
  function spriteStyle(k, size) {
    const j = k % PER, s = size / PX;
    return `background-position:${-((j % SIDE) * STRIDE + PAD_PX) * s}px ${-(Math.floor(j / SIDE) * STRIDE + PAD_PX) * s}px;`;
  }

  // ------------------------------------------------------------ layout
  function fmt(v, d) { return v == null ? "n/a" : Number(v).toFixed(d); }
  function visible(f) {
    if (view.show === "kept") return !f.filtered;
    if (view.show === "filtered") return f.filtered;
    return true;
  }
  function groupKeyFn() {
    const g = view.group;
    if (g === "none") return () => ({ key: "", label: "all faces", rank: 0 });
    if (g === "reason") return (f) => {
      const r = rejected.has(f.face_id) && !f.filtered ? "review" : (f.status === "kept" ? "kept" : (f.reason || "rejected"));
      return { key: r, label: r === "kept" ? "kept" : "rejected: " + r, rank: r === "kept" ? 0 : 1 };
    };
    if (g === "blur_var" || g === "face_score") return decileFn(g);
    return (f) => { const v = f[g] == null ? "unknown" : String(f[g]); return { key: v, label: g + ": " + v, rank: 0 }; };
  }
  function decileFn(metric) {
    const vals = faces.filter(visible).map((f) => f[metric]).filter((v) => v != null).sort((a, b) => a - b);
    const n = vals.length;
    const cuts = [];
    for (let q = 1; q < 10; q++) cuts.push(vals[Math.min(n - 1, Math.floor((q * n) / 10))]);
    const name = metric === "blur_var" ? "blur variance" : "face score";
    return (f) => {
      const v = f[metric];
      if (v == null || !n) return { key: "unknown", label: name + ": unknown", rank: 99 };
      let q = 0;
      while (q < 9 && v >= cuts[q]) q++;
      const lo = q === 0 ? vals[0] : cuts[q - 1], hi = q === 9 ? vals[n - 1] : cuts[q];
      const d = metric === "blur_var" ? 0 : 3;
      return { key: "q" + q, label: `${name} decile ${q + 1} (${fmt(lo, d)} to ${fmt(hi, d)})`, rank: q };
    };
  }
  function sortFn() {
    const key = view.sort, dir = view.asc ? 1 : -1;
    return (a, b) => {
      const x = a[key], y = b[key];
      if (x == null && y == null) return a.k - b.k;
      if (x == null) return 1;   // unknown values last, whatever the direction
      if (y == null) return -1;
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.k - b.k;
    };
  }

  function layout(keepFace) {
    const keyOf = groupKeyFn();
    const groups = new Map();
    for (const f of faces) {
      if (!visible(f)) continue;
      const g = keyOf(f);
      if (!groups.has(g.key)) groups.set(g.key, { g: g, items: [] });
      groups.get(g.key).items.push(f);
    }
    const ordered = [...groups.values()].sort((a, b) => a.g.rank - b.g.rank || (a.g.key < b.g.key ? -1 : a.g.key > b.g.key ? 1 : 0));
    const cmp = sortFn();
    cell = view.zoom + 4;  // 2 px border each side
    const width = grid.clientWidth - 2 * PAD;
    cols = Math.max(1, Math.floor((width + GAP) / (cell + GAP)));
    order = []; rows = []; rowOf = [];
    let y = 0;
    for (const { g, items } of ordered) {
      items.sort(cmp);
      const nrej = items.reduce((s, f) => s + (rejected.has(f.face_id) ? 1 : 0), 0);
      rows.push({ type: "h", y: y, h: HDR_H, label: g.label, count: items.length, nrej: nrej });
      y += HDR_H;
      for (let i = 0; i < items.length; i += cols) {
        const start = order.length;
        for (const f of items.slice(i, i + cols)) { rowOf.push(rows.length); order.push(f.k); }
        rows.push({ type: "f", y: y, h: cell + GAP, start: start, end: order.length });
        y += cell + GAP;
      }
    }
    totalH = y + PAD;
    canvas.style.height = totalH + "px";
    sheetCss();
    if (keepFace != null) {
      const pos = order.indexOf(keepFace);
      focus = pos >= 0 ? pos : Math.min(focus, order.length - 1);
    } else if (focus >= order.length) {
      focus = order.length - 1;
    }
    if (focus >= 0) scrollToFocus();
    render();
    updateCounts();
    showInfo();
  }

  // ------------------------------------------------------------ render (only rows in view)
  function firstRowAt(y) {
    let lo = 0, hi = rows.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (rows[mid].y + rows[mid].h <= y) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  function render() {
    const top = grid.scrollTop - 200, bottom = grid.scrollTop + grid.clientHeight + 200;
    let out = "";
    for (let r = rows.length ? firstRowAt(Math.max(0, top)) : 0; r < rows.length && rows[r].y < bottom; r++) {
      const row = rows[r];
      if (row.type === "h") {
        const rej = row.nrej ? `, ${row.nrej} marked rejected` : "";
        out += `<div class="hdr" style="top:${row.y}px;height:${row.h}px">${esc(row.label)} <span>(${row.count}${rej})</span></div>`;
        continue;
      }
      for (let p = row.start; p < row.end; p++) {
        const f = faces[order[p]];
        const x = PAD + (p - row.start) * (cell + GAP);
        let cls = "cell s" + Math.floor(f.k / PER);
        if (rejected.has(f.face_id)) cls += " rej";
        if (f.filtered) cls += " filt";
        if (p === focus) cls += " focus";
        if (missing.has(f.face_id)) cls += " missing";
        const tag = f.filtered ? `<span class="tag">${esc(f.reason || "rejected")}</span>` : "";
        out += `<div class="${cls}" data-p="${p}" data-face-id="${esc(f.face_id)}" title="${esc(f.face_id)}" ` +
          `style="left:${x}px;top:${row.y}px;width:${cell}px;height:${cell}px;${spriteStyle(f.k, view.zoom)}">` +
          `${tag}</div>`;
      }
    }
    canvas.innerHTML = out;
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  let pending = false;
  grid.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  });
  // The grid changes size with the window and when the help text opens: new column count, new rows in view.
  let resizeTimer = 0, lastWidth = -1;
  new ResizeObserver(() => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (grid.clientWidth !== lastWidth) { lastWidth = grid.clientWidth; layout(focus >= 0 ? order[focus] : null); }
      else render();
    }, 50);
  }).observe(grid);

  // ------------------------------------------------------------ focus, toggles, info
  function scrollToFocus() {
    const row = rows[rowOf[focus]];
    if (!row) return;
    const prev = rows[rowOf[focus] - 1];
    const top = prev && prev.type === "h" ? prev.y : row.y;  // show the group header above the first row
    if (top < grid.scrollTop) grid.scrollTop = top;
    else if (row.y + row.h > grid.scrollTop + grid.clientHeight) grid.scrollTop = row.y + row.h - grid.clientHeight;
  }
  function setFocus(p) {
    if (!order.length) return;
    focus = Math.max(0, Math.min(order.length - 1, p));
    scrollToFocus();
    render();
    showInfo();
  }
  function toggle(p) {
    const f = faces[order[p]];
    if (rejected.has(f.face_id)) rejected.delete(f.face_id); else rejected.add(f.face_id);
    persist();
    let hdr = null;  // refresh the group headers' counts without a new layout
    for (const row of rows) {
      if (row.type === "h") { hdr = row; hdr.nrej = 0; continue; }
      for (let q = row.start; q < row.end; q++) if (rejected.has(faces[order[q]].face_id)) hdr.nrej++;
    }
    render();
    updateCounts();
    showInfo();
  }
  function moveVert(dir) {
    if (focus < 0) return setFocus(0);
    let r = rowOf[focus] + dir;
    while (r >= 0 && r < rows.length && rows[r].type !== "f") r += dir;
    if (r < 0 || r >= rows.length) return;
    const col = focus - rows[rowOf[focus]].start;
    setFocus(Math.min(rows[r].start + col, rows[r].end - 1));
  }
  function showInfo() {
    const big = $("big"), meta = $("meta");
    if (focus < 0 || !order.length) { big.className = ""; meta.textContent = "Click a face or press an arrow key."; return; }
    const f = faces[order[focus]];
    big.className = "s" + Math.floor(f.k / PER) + (rejected.has(f.face_id) ? " rej" : "");
    const sh = Math.floor(f.k / PER), s = 128 / PX;
    big.style.cssText = spriteStyle(f.k, 128) + `background-size:${sheetCols[sh] * STRIDE * s}px ${sheetRows[sh] * STRIDE * s}px`;
    const state = rejected.has(f.face_id) ? '<b style="color:#ff7b7b">REJECTED in review</b>' :
      (f.filtered ? `rejected by filter <b>${esc(f.reason || "?")}</b>` : "<b>kept</b>");
    const url = f.image_url && /^https?:\/\//.test(f.image_url) ?
      `<a href="${esc(f.image_url)}" target="_blank" rel="noreferrer noopener">${esc(f.image_url)}</a>` : esc(f.image_url || "n/a");
    meta.innerHTML = `<b>${esc(f.face_id)}</b> (${focus + 1} of ${order.length}) · ${state}<br>` +
      `pose ${esc(f.pose || "n/a")}, yaw ${fmt(f.yaw, 1)}°, blur var ${fmt(f.blur_var, 1)}, face score ${fmt(f.face_score, 3)}, ` +
      `eye distance ${fmt(f.eye_distance, 1)} px, eye brightness ${fmt(f.eye_brightness, 1)}, gender ${esc(f.gender || "n/a")}, ` +
      `split ${esc(f.split || "n/a")}<br>article ${esc(f.article_id || "n/a")} · ${url}`;
  }
  function updateCounts() {
    let shownRej = 0;
    for (const k of order) if (rejected.has(faces[k].face_id)) shownRej++;
    $("counts").innerHTML = `<b>${order.length}</b> shown of ${faces.length} · ` +
      `<b class="rej">${rejected.size}</b> marked rejected in review (${shownRej} shown)`;
    $("export").textContent = `Export review.json (${rejected.size})`;
  }
  function flash(text) { $("msg").textContent = text; }

  canvas.addEventListener("click", (ev) => {
    const el = ev.target.closest(".cell");
    if (!el) return;
    const p = Number(el.dataset.p);
    focus = p;
    toggle(p);
    grid.focus({ preventScroll: true });
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLSelectElement || ev.target instanceof HTMLInputElement) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const perScreen = Math.max(1, Math.floor(grid.clientHeight / (cell + GAP))) * cols;
    const keys = {
      ArrowLeft: () => setFocus(focus < 0 ? 0 : focus - 1),
      ArrowRight: () => setFocus(focus < 0 ? 0 : focus + 1),
      ArrowUp: () => moveVert(-1),
      ArrowDown: () => moveVert(1),
      Home: () => setFocus(0),
      End: () => setFocus(order.length - 1),
      PageUp: () => setFocus(focus - perScreen),
      PageDown: () => setFocus(Math.max(0, focus) + perScreen),
      x: () => { if (focus < 0) setFocus(0); else toggle(focus); },
      " ": () => { if (focus < 0) setFocus(0); else toggle(focus); },
      "?": () => { $("help").hidden = !$("help").hidden; },
    };
    const act = keys[ev.key.length === 1 ? ev.key.toLowerCase() : ev.key];
    if (!act) return;
    if (ev.target instanceof HTMLButtonElement && (ev.key === " " || ev.key === "Enter")) ev.target.blur();
    ev.preventDefault();
    act();
  });

  // ------------------------------------------------------------ export / import
  function reviewJson() {
    return JSON.stringify({ version: 1, rejected: [...rejected].sort() }, null, 1) + "\n";
  }
  $("export").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([reviewJson()], { type: "application/json" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = "review.json";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    flash(`exported ${rejected.size} ids: save it as ${DATA.review_path} and rerun ptt-curate`);
  });
  $("import").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    ev.target.value = "";
    if (!file) return;
    try {
      const obj = JSON.parse(await file.text());
      if (!obj || obj.version !== 1 || !Array.isArray(obj.rejected) || obj.rejected.some((x) => typeof x !== "string")) {
        throw new Error('expected {"version": 1, "rejected": [face ids]}');
      }
      rejected = new Set(obj.rejected);
      persist();
      layout(focus >= 0 ? order[focus] : null);
      showInfo();
      flash(`imported ${rejected.size} rejected ids from ${file.name}`);
    } catch (e) {
      flash(`${file.name}: not a review file (${e.message})`);
    }
  });

  // ------------------------------------------------------------ controls
  function bind(id, fn) { $(id).addEventListener("change", (ev) => { fn(ev.target.value); layout(focus >= 0 ? order[focus] : null); grid.focus({ preventScroll: true }); }); }
  bind("show", (v) => { view.show = v; });
  bind("group", (v) => { view.group = v; });
  bind("sort", (v) => { view.sort = v; });
  bind("zoom", (v) => { view.zoom = Number(v); });
  $("dir").addEventListener("click", () => {
    view.asc = !view.asc;
    $("dir").textContent = view.asc ? "ascending" : "descending";
    layout(focus >= 0 ? order[focus] : null);
    grid.focus({ preventScroll: true });
  });
  $("help-btn").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  $("save-as").textContent = DATA.review_path;
  const th = DATA.report && DATA.report.thresholds;
  if (th && typeof th === "object") {
    $("thresholds").textContent = "Thresholds of this run (curation_report.json): " +
      Object.entries(th).map(([k, v]) => `${k}=${v}`).join(", ");
  }

  // Expose a small read-only hook for tests and the console.
  window.pttReview = { rejected: () => [...rejected].sort(), order: () => order.map((k) => faces[k].face_id), focus: () => focus };

  lastWidth = grid.clientWidth;
  layout(null);
  if (restored) flash("restored unsaved decisions from this browser's storage");
  else if (DATA.initial_rejected.length) flash(`opened with ${DATA.initial_rejected.length} rejected ids from the review file`);
  grid.focus({ preventScroll: true });
})();
