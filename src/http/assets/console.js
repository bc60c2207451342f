// segnode console: live lists, the three-plane viewer, and actions (POST with the CSRF token; the
// admin login cookie or a Bearer header authenticates). Same-origin only; no third-party code.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const when = (ms) => ms == null ? "–" : new Date(ms).toISOString().replace("T", " ").slice(0, 19);

  function flash(text, ok) {
    const box = $("#flash");
    if (!box) return;
    const d = document.createElement("div");
    d.className = ok ? "ok" : "err";
    d.textContent = text;
    box.appendChild(d);
    setTimeout(() => d.remove(), 8000);
  }

  // actions: <button data-post="/api/…">
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-post]");
    if (!b) return;
    ev.preventDefault();
    const r = await fetch(b.dataset.post, { method: "POST", credentials: "same-origin",
                                            headers: { "X-CSRF-Token": csrf } });
    const text = await r.text();
    let msg = text;
    try { const j = JSON.parse(text); msg = j.error || JSON.stringify(j); } catch (e) { /* plain text */ }
    if (r.status === 401) msg = "refused: log in as admin first (admin login) — " + msg;
    flash(msg, r.ok);
    b.dataset.result = String(r.status);
    if (r.ok && !b.dataset.post.includes("/echo")) setTimeout(() => location.reload(), 1200);
  });

  // live series list
  const table = $("#series-table");
  if (table) {
    const row = (s) => `<tr><td><a href="/series/${esc(s.series_uid)}">${esc(s.series_uid)}</a></td>` +
      `<td><span class="state s-${esc(s.state)}">${esc(s.state)}</span></td><td>${esc(s.modality)}</td>` +
      `<td>${esc(s.series_description)}</td><td>${esc(s.instance_count)}</td><td>${esc(s.calling_ae)}</td>` +
      `<td>${when(s.first_received_ms)}</td><td>${when(s.last_received_ms)}</td>` +
      `<td>${esc(s.completion_reason)}</td><td>${esc((s.pipelines || []).join(", "))}</td>` +
      `<td>${esc(Object.entries(s.deliveries || {}).map(([k, n]) => k + " " + n).join(", ") ||
                 ((s.pipelines || []).length ? "kept locally" : ""))}</td>` +
      `<td>${esc(s.patient_id)}</td></tr>`;
    const refresh = async () => {
      try {
        const r = await fetch(table.dataset.api, { credentials: "same-origin" });
        if (r.ok) $("tbody", table).innerHTML = (await r.json()).map(row).join("");
      } catch (e) { /* next time */ }
    };
    setInterval(refresh, 2000);
  }

  // rule tester
  const ruleFile = $("#rule-file");
  if (ruleFile) {
    ruleFile.addEventListener("change", async () => {
      const f = ruleFile.files[0];
      if (!f) return;
      const r = await fetch("/api/rules/test", { method: "POST", body: f, credentials: "same-origin",
                                                 headers: { "X-CSRF-Token": csrf } });
      $("#rule-result").textContent = JSON.stringify(await r.json(), null, 2);
    });
  }

  // viewer
  const viewer = $("#viewer");
  if (!viewer) return;
  const uid = viewer.dataset.uid;
  const planes = ["axial", "coronal", "sagittal"];
  const state = { window: "lung", segments: null, overlay: true };
  function src(plane) {
    const idx = $("#slider-" + plane).value;
    const segs = state.segments === null ? "" : "&segments=" + state.segments.join(",");
    return `/api/series/${encodeURIComponent(uid)}/image?plane=${plane}&index=${idx}` +
      `&window=${state.window}&overlay=${state.overlay}${segs}`;
  }
  function show(plane) {
    const s = $("#slider-" + plane);
    $("#pos-" + plane).textContent = `${Number(s.value) + 1} / ${Number(s.max) + 1}`;
    $("#img-" + plane).src = src(plane);
  }
  const showAll = () => planes.forEach(show);
  planes.forEach((p) => $("#slider-" + p).addEventListener("input", () => show(p)));
  $("#window").addEventListener("change", (e) => { state.window = e.target.value; showAll(); });
  // the middle planes right away (the server loads the volume once for all three)
  planes.forEach((p) => { $("#img-" + p).src = `/api/series/${encodeURIComponent(uid)}/image?plane=${p}&window=lung`; });
  fetch(`/api/series/${encodeURIComponent(uid)}/view`, { credentials: "same-origin" })
    .then((r) => r.json())
    .then((v) => {
      if (v.error) { $("#segments").textContent = v.error; return; }
      planes.forEach((p) => {
        const s = $("#slider-" + p);
        s.max = v.planes[p] - 1;
        s.value = Math.floor(v.planes[p] / 2);
        $("#pos-" + p).textContent = `${Number(s.value) + 1} / ${v.planes[p]}`;
      });
      // the middle sagittal plane is the mediastinum: start through the right lung instead
      $("#slider-sagittal").value = Math.floor(v.planes.sagittal * 0.3);
      show("sagittal");
      // a result without lungs (cochlear electrodes) is read in the bone window
      if (v.segments.length && !v.segments.some((s) => /lung/i.test(s.label))) {
        state.window = "bone";
        $("#window").value = "bone";
      }
      const segs = $("#segments");
      if (!v.segments.length) {
        segs.textContent = v.overlay_problem || "no segments (no result yet)";
      } else {
        state.segments = v.segments.map((s) => s.number);
        segs.innerHTML = v.segments.map((s) =>
          `<label><input type="checkbox" class="segment" value="${s.number}" checked> ` +
          `<span class="swatch" data-color="${esc(s.color)}"></span> ${esc(s.label)}</label>`).join(" ");
        // CSP allows no inline style attributes: colour the swatches through the CSSOM
        segs.querySelectorAll(".swatch").forEach((sw) => { sw.style.background = sw.dataset.color; });
        segs.querySelectorAll("input.segment").forEach((cb) => cb.addEventListener("change", () => {
          state.segments = [...segs.querySelectorAll("input.segment:checked")].map((c) => Number(c.value));
          showAll();
        }));
        if (state.window !== "lung") showAll();
      }
      $("#attributes").innerHTML = v.attributes.map(([k, val]) =>
        `<tr><th>${esc(k)}</th><td>${esc(val)}</td></tr>`).join("");
    })
    .catch((e) => { $("#segments").textContent = "viewer: " + e; });
})();
