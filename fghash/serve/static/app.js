// fghash serve's page: pick an index, search by a photo or by an item, and see which bits
// of each result differ from the query (and the attribute each bit follows, where known).
// Plain JavaScript, no build step, no network beyond this server; the API is docs/serve.md.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    index: null,      // the /indexes entry picked
    attrOfBit: null,  // [str|null] per bit, from /indexes/NAME/bits, or null
    queryCode: null,  // the query's code as bits [0/1], or null while unknown
    hits: [],         // the results of the last search
    codes: new Map(), // item id -> bits [0/1]
    seq: 0,           // the newest search; older answers are dropped
  };

  // -- the API ------------------------------------------------------------------------

  const base = (name) => "indexes/" + encodeURIComponent(name);

  async function api(path, options) {
    let resp;
    try {
      resp = await fetch(path, options);
    } catch (e) {
      throw new Error("the server does not answer; is fghash serve still running?");
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const said = body && typeof body.error === "string" ? body.error : null;
      throw new Error(said || "the server answered " + resp.status + " " + resp.statusText + ".");
    }
    return body;
  }

  function hexToBits(hex, nbits) {
    const bits = [];
    for (let i = 0; i < nbits; i++) {
      const byte = parseInt(hex.substr((i >> 3) * 2, 2), 16);
      bits.push((byte >> (i & 7)) & 1); // little bit order, byte 0 first
    }
    return bits;
  }

  async function itemCode(id) {
    if (!state.codes.has(id)) {
      const item = await api(base(state.index.name) + "/items/" + id);
      state.codes.set(id, hexToBits(item.code, state.index.bits));
    }
    return state.codes.get(id);
  }

  // -- showing things -----------------------------------------------------------------

  function status(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", !!isError);
  }

  function labelText(label) {
    if (label === null || label === undefined) return "no label";
    if (Array.isArray(label)) return "labels " + (label.length ? label.join(", ") : "none");
    return "label " + label;
  }

  function drawBits(el, bits, against) {
    el.textContent = "";
    el.style.setProperty("--cols", String(Math.min(bits.length, 16)));
    bits.forEach((b, i) => {
      const cell = document.createElement("span");
      cell.className = "bit" + (b ? " one" : "") + (against && against[i] !== b ? " diff" : "");
      el.appendChild(cell);
    });
  }

  function baseName(path) {
    return String(path).split(/[\\/]/).pop();
  }

  function itemImage(id) {
    return base(state.index.name) + "/items/" + id + "/image";
  }

  function showQuery(src, caption) {
    $("query-card").hidden = false;
    const img = $("query-img");
    img.alt = "query: " + caption;
    if (src) {
      img.src = src;
      img.hidden = false;
    } else {
      img.removeAttribute("src");
      img.hidden = true;
    }
    $("query-caption").textContent = caption;
    $("query-bits").textContent = "";
  }

  function setQueryCode(bits) {
    state.queryCode = bits;
    drawBits($("query-bits"), bits, null);
    document.querySelectorAll(".tile").forEach((t) => {
      const code = state.codes.get(Number(t.dataset.id));
      if (code) drawBits(t.querySelector(".bits"), code, bits);
    });
  }

  function tile(hit) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "tile";
    btn.dataset.id = String(hit.id);
    btn.setAttribute(
      "aria-label",
      "rank " + hit.rank + ", id " + hit.id + ", distance " + hit.distance + ", " +
        labelText(hit.label) + "; press to search from it"
    );
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = "";
    img.src = itemImage(hit.id);
    img.addEventListener("error", () => { img.alt = "no image"; });
    const meta = document.createElement("span");
    meta.className = "meta";
    const id = document.createElement("span");
    id.textContent = "#" + hit.rank + "  id " + hit.id;
    const dist = document.createElement("span");
    dist.className = "dist";
    dist.textContent = "distance " + hit.distance;
    meta.append(id, dist);
    const label = document.createElement("span");
    label.className = "path";
    label.textContent = labelText(hit.label) + (hit.path ? " · " + baseName(hit.path) : "");
    if (hit.path) btn.title = hit.path;
    const bits = document.createElement("span");
    bits.className = "bits";
    bits.setAttribute("aria-hidden", "true");
    btn.append(img, meta, label, bits);
    btn.addEventListener("click", () => searchIds(hit.id));
    btn.addEventListener("mouseenter", () => explain(hit, btn));
    btn.addEventListener("focus", () => explain(hit, btn));
    li.appendChild(btn);
    return li;
  }

  async function explain(hit, btn) {
    document.querySelectorAll(".tile.active").forEach((t) => t.classList.remove("active"));
    btn.classList.add("active");
    const why = $("why");
    why.hidden = false;
    $("why-head").textContent = "id " + hit.id + " (rank " + hit.rank + ", distance " + hit.distance + ")";
    const list = $("why-bits");
    list.textContent = "";
    let code;
    try {
      code = await itemCode(hit.id);
    } catch (e) {
      $("why-head").textContent += ": " + e.message;
      return;
    }
    if (!state.queryCode) {
      $("why-head").textContent += ": the query's code is not known yet.";
      return;
    }
    const differ = [];
    code.forEach((b, i) => { if (b !== state.queryCode[i]) differ.push(i); });
    $("why-head").textContent +=
      differ.length === 0
        ? ": every bit agrees with the query."
        : ": " + differ.length + " of " + code.length + " bits differ from the query.";
    differ.forEach((i) => {
      const li = document.createElement("li");
      const mark = document.createElement("span");
      mark.className = "diff-mark";
      mark.textContent = "bit " + i;
      const attr = state.attrOfBit ? state.attrOfBit[i] : null;
      li.append(mark, document.createTextNode(
        " — query " + state.queryCode[i] + ", result " + code[i] +
          (attr ? "; follows " + attr : state.attrOfBit ? "; follows no attribute" : "")
      ));
      list.appendChild(li);
    });
  }

  function showResults(found, started) {
    const grid = $("grid");
    grid.textContent = "";
    state.hits = found.results;
    found.results.forEach((hit) => grid.appendChild(tile(hit)));
    const ms = Math.round(performance.now() - started);
    $("summary").textContent = "(" + found.results.length + " of " + state.index.ntotal + ", " + ms + " ms)";
    status(found.results.length ? "Press a result to search from it." : "Nothing found.", false);
    $("why").hidden = true;
    // the results' codes, for the bit strips and the explanation
    const seq = state.seq;
    found.results.forEach((hit) => {
      itemCode(hit.id).then((code) => {
        if (seq !== state.seq) return;
        const t = grid.querySelector('.tile[data-id="' + hit.id + '"] .bits');
        if (t) drawBits(t, code, state.queryCode);
      }).catch(() => {});
    });
  }

  // -- searching ----------------------------------------------------------------------

  function k() {
    const v = parseInt($("k").value, 10);
    return Number.isFinite(v) && v > 0 ? Math.min(v, state.index.ntotal) : 10;
  }

  async function searchFile(file) {
    if (!state.index) return;
    if (!state.index.image_queries) {
      status("This index cannot encode photos (it records no run).", true);
      return;
    }
    const seq = ++state.seq;
    const started = performance.now();
    showQuery(URL.createObjectURL(file), file.name);
    state.queryCode = null;
    status("Encoding " + file.name + " and searching…", false);
    const form = new FormData();
    form.append("images", file, file.name);
    try {
      const found = await api(base(state.index.name) + "/search/image?k=" + k(), {
        method: "POST",
        body: form,
      });
      if (seq !== state.seq) return;
      const q = found.results[0];
      if (q.query.code) setQueryCode(hexToBits(q.query.code, state.index.bits));
      showResults(q, started);
    } catch (e) {
      if (seq === state.seq) status(e.message, true);
    }
  }

  async function searchIds(id) {
    if (!state.index) return;
    const seq = ++state.seq;
    const started = performance.now();
    state.queryCode = null;
    showQuery(itemImage(id), "item " + id);
    status("Searching from item " + id + "…", false);
    try {
      const found = await api(base(state.index.name) + "/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ids: [Number(id)], k: k() }),
      });
      if (seq !== state.seq) return;
      const q = found.results[0];
      $("query-caption").textContent =
        "item " + q.query.id + ", " + labelText(q.query.label) + (q.query.path ? " · " + q.query.path : "");
      showResults(q, started);
      $("item-id").value = String(id);
      setQueryCode(await itemCode(Number(id)));
      window.scrollTo({ top: 0, behavior: "smooth" });
    } catch (e) {
      if (seq === state.seq) status(e.message, true);
    }
  }

  // -- the index picker ---------------------------------------------------------------

  async function pickIndex(entry) {
    state.index = entry;
    state.codes = new Map();
    state.attrOfBit = null;
    state.queryCode = null;
    state.seq++;
    $("grid").textContent = "";
    $("summary").textContent = "";
    $("query-card").hidden = true;
    $("why").hidden = true;
    $("k").max = String(entry.ntotal);
    $("item-id").value = "";
    $("index-about").textContent =
      entry.bits + "-bit codes, " + entry.ntotal + " items, " + entry.kind + " (" + entry.engine + ")";
    const canEncode = !!entry.image_queries;
    $("file").disabled = !canEncode;
    $("drop").classList.toggle("off", !canEncode);
    $("no-images").hidden = canEncode;
    status(canEncode ? "Choose a photo to search." : "Give an item id to search from it.", false);
    try {
      const bits = await api(base(entry.name) + "/bits");
      if (state.index === entry && bits && Array.isArray(bits.attribute_of_bit)) {
        state.attrOfBit = bits.attribute_of_bit;
      }
    } catch (e) {
      state.attrOfBit = null; // no attribute names for this index
    }
  }

  async function start() {
    let list;
    try {
      list = await api("indexes");
    } catch (e) {
      status(e.message, true);
      return;
    }
    const select = $("index");
    list.forEach((entry, i) => {
      const opt = document.createElement("option");
      opt.value = String(i);
      opt.textContent = entry.name;
      select.appendChild(opt);
    });
    if (!list.length) {
      status("This server holds no index.", true);
      return;
    }
    select.addEventListener("change", () => pickIndex(list[Number(select.value)]));
    await pickIndex(list[0]);
    document.body.dataset.ready = "1"; // tests wait for this
  }

  // -- wiring -------------------------------------------------------------------------

  $("file").addEventListener("change", (ev) => {
    const file = ev.target.files && ev.target.files[0];
    if (file) searchFile(file);
    ev.target.value = ""; // choosing the same file again searches again
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    drop.classList.remove("over"); // the document's listener searches
  });
  // a photo dropped anywhere on the page searches too (instead of the browser opening it)
  document.addEventListener("dragover", (ev) => ev.preventDefault());
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  $("by-id").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("item-id").value.trim();
    if (id !== "") searchIds(Number(id));
  });

  start();
})();
