// Keyhole admin UI: sortable tables, live tables over server-sent events,
// confirmations, the one-time sign-in link. Plain JS, no dependencies.
"use strict";

function cellValue(td) {
  if (!td) return "";
  const marked = td.querySelector("[data-sort]");
  const v = td.dataset.sort ?? (marked ? marked.dataset.sort : undefined);
  return v !== undefined ? v : td.textContent.trim().toLowerCase();
}

function compare(a, b) {
  const x = Number(a), y = Number(b);
  if (a !== "" && b !== "" && !isNaN(x) && !isNaN(y)) return x - y;
  return a.localeCompare(b);
}

function sortTable(table, col, dir) {
  const body = table.tBodies[0];
  if (!body) return;
  const rows = Array.from(body.rows).filter((r) => !r.classList.contains("empty"));
  rows.sort((r1, r2) => dir * compare(cellValue(r1.cells[col]), cellValue(r2.cells[col])));
  rows.forEach((r) => body.appendChild(r));
}

function resort(table) {
  const th = table.querySelector("th[aria-sort]");
  if (!th) return;
  sortTable(table, th.cellIndex, th.getAttribute("aria-sort") === "ascending" ? 1 : -1);
}

function initSortable(table) {
  table.querySelectorAll("thead th").forEach((th) => {
    if (!th.textContent.trim()) return;
    th.tabIndex = 0;
    const go = () => {
      const dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      table.querySelectorAll("thead th").forEach((o) => o.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      sortTable(table, th.cellIndex, dir);
    };
    th.addEventListener("click", go);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  });
}

// The server sends the whole <tbody> content when it changes.
function initLive(table) {
  const src = new EventSource(table.dataset.live);
  table.dataset.connected = "0";
  src.addEventListener("open", () => { table.dataset.connected = "1"; });
  src.addEventListener("rows", (e) => {
    const body = table.tBodies[0];
    const before = new Map(Array.from(body.rows).map((r) => [r.dataset.gateway, r.textContent]));
    body.innerHTML = e.data;
    Array.from(body.rows).forEach((r) => {
      if (r.dataset.gateway && before.get(r.dataset.gateway) !== r.textContent) r.classList.add("flash");
    });
    resort(table);
    table.dataset.updates = String(Number(table.dataset.updates || "0") + 1);
  });
  src.addEventListener("error", () => { table.dataset.connected = "0"; });
}

function initConfirm(form) {
  form.addEventListener("submit", (e) => {
    if (!window.confirm(form.dataset.confirm)) e.preventDefault();
  });
}

// First-start link: /sign-in#token=… (the fragment never reaches the server's logs).
function initSignInLink() {
  const m = /^#token=([A-Za-z0-9_-]+)$/.exec(window.location.hash);
  const form = document.getElementById("link-form");
  if (!m || !form) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  form.querySelector("input[name=token]").value = m[1];
  form.submit();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(initSortable);
  document.querySelectorAll("table[data-live]").forEach(initLive);
  document.querySelectorAll("form[data-confirm]").forEach(initConfirm);
  initSignInLink();
});
