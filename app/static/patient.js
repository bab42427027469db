/* The patient's page: pick a region, pick a prescription, search a pharmacy,
   send, then watch the status move until it is final. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { me: null, regions: [], rx: null, pharmacy: null, options: [], active: -1, poll: null, seq: 0 };
  const DEBOUNCE_MS = 250;
  const POLL_MS = 1500;

  async function loadRegions() {
    const [regions, me] = await Promise.all([Erx.api("GET", "/api/v1/regions"), Erx.api("GET", "/api/v1/me")]);
    state.regions = regions.regions || [];
    state.me = me;
    const select = $("region");
    select.replaceChildren();
    for (const region of state.regions) {
      const option = Erx.el("option", { value: region.code }, region.name);
      if (region.code === me.region.code) option.selected = true;
      select.append(option);
    }
    select.disabled = false;
    describeRegion();
  }

  function describeRegion() {
    const region = state.me.region;
    const how = region.flow === "email"
      ? "Your prescription is emailed to the pharmacy you choose."
      : "Your prescription is sent electronically; the pharmacy receives a secure link.";
    $("region-help").textContent = how;
  }

  async function changeRegion() {
    Erx.notice("");
    try {
      state.me = await Erx.api("PATCH", "/api/v1/me", { region: $("region").value });
      describeRegion();
      choosePharmacy(null);
      $("pharmacy-q").value = "";
    } catch (err) {
      Erx.notice(err.message);
      $("region").value = state.me.region.code;
    }
  }

  async function loadPrescriptions() {
    const page = await Erx.api("GET", "/api/v1/me/prescriptions?per_page=20");
    const list = $("prescriptions");
    list.replaceChildren();
    const items = page.items || [];
    $("rx-empty").hidden = items.length > 0;
    for (const rx of items) {
      const item = Erx.el("li", { class: "rx" });
      item.append(Erx.el("span", { class: "rx-ref" }, rx.reference));
      item.append(Erx.el("span", { class: `status status-${rx.status}` }, Erx.statusName(rx.status)));
      const sendable = rx.status === "draft";
      const button = Erx.el("button", { type: "button", "data-id": String(rx.id) },
        sendable ? "Choose a pharmacy" : "View status");
      button.addEventListener("click", () => (sendable ? startSend(rx) : watch(rx.id)));
      item.append(button);
      list.append(item);
    }
  }

  function startSend(rx) {
    state.rx = rx;
    $("send-ref").textContent = rx.reference;
    $("send-card").hidden = false;
    $("timeline-card").hidden = true;
    choosePharmacy(null);
    $("pharmacy-q").focus();
  }

  /* The pharmacy combobox (WAI-ARIA combobox with a listbox popup). */
  let timer = null;
  function onQuery() {
    clearTimeout(timer);
    const query = $("pharmacy-q").value.trim();
    if (query.length < 2) { closeList(); return; }
    timer = setTimeout(() => search(query), DEBOUNCE_MS);
  }

  async function search(query) {
    const seq = ++state.seq;
    const params = new URLSearchParams({ q: query, region: state.me.region.code, per_page: "8" });
    try {
      const page = await Erx.api("GET", `/api/v1/pharmacies?${params}`);
      if (seq !== state.seq) return; // a newer query has been typed since
      showOptions(page.items || [], page.total ?? (page.items || []).length);
    } catch (err) {
      Erx.notice(err.message);
    }
  }

  function showOptions(items, total) {
    state.options = items;
    state.active = -1;
    const list = $("pharmacy-list");
    list.replaceChildren();
    items.forEach((pharmacy, index) => {
      const option = Erx.el("li", { role: "option", id: `pharmacy-opt-${index}`, "aria-selected": "false" });
      option.append(Erx.el("span", { class: "opt-name" }, pharmacy.name));
      option.append(Erx.el("span", { class: "opt-address" }, pharmacy.address));
      if (pharmacy.group) option.append(Erx.el("span", { class: "opt-group" }, pharmacy.group));
      option.addEventListener("mousedown", (event) => { event.preventDefault(); choosePharmacy(pharmacy); });
      list.append(option);
    });
    if (!items.length) list.append(Erx.el("li", { class: "opt-none", "aria-disabled": "true" }, "No pharmacy matches."));
    list.hidden = false;
    $("pharmacy-q").setAttribute("aria-expanded", "true");
    $("pharmacy-count").textContent = `${total} pharmacies found.`;
  }

  function closeList() {
    $("pharmacy-list").hidden = true;
    $("pharmacy-q").setAttribute("aria-expanded", "false");
    $("pharmacy-q").removeAttribute("aria-activedescendant");
  }

  function highlight(index) {
    const options = $("pharmacy-list").querySelectorAll('[role="option"]');
    if (!options.length) return;
    state.active = (index + options.length) % options.length;
    options.forEach((node, i) => node.setAttribute("aria-selected", i === state.active ? "true" : "false"));
    const active = options[state.active];
    $("pharmacy-q").setAttribute("aria-activedescendant", active.id);
    active.scrollIntoView({ block: "nearest" });
  }

  function onKey(event) {
    const open = !$("pharmacy-list").hidden;
    if (event.key === "ArrowDown") { event.preventDefault(); if (open) highlight(state.active + 1); else onQuery(); }
    else if (event.key === "ArrowUp") { event.preventDefault(); if (open) highlight(state.active - 1); }
    else if (event.key === "Enter") {
      if (open && state.active >= 0) { event.preventDefault(); choosePharmacy(state.options[state.active]); }
    } else if (event.key === "Escape") { closeList(); }
  }

  function choosePharmacy(pharmacy) {
    state.pharmacy = pharmacy;
    closeList();
    $("chosen").textContent = pharmacy ? `Chosen: ${pharmacy.name}, ${pharmacy.address}` : "";
    if (pharmacy) $("pharmacy-q").value = pharmacy.name;
    $("send").disabled = !pharmacy;
  }

  async function send() {
    if (!state.rx || !state.pharmacy) return;
    Erx.notice("");
    $("send").disabled = true;
    const key = `${state.rx.id}-${state.pharmacy.id}-${Date.now()}`;
    try {
      await Erx.api("POST", `/api/v1/prescriptions/${state.rx.id}/send`,
        { pharmacy_id: state.pharmacy.id }, { "Idempotency-Key": key });
      $("send-card").hidden = true;
      await loadPrescriptions();
      watch(state.rx.id);
    } catch (err) {
      Erx.notice(err.message);
      $("send").disabled = false;
    }
  }

  /* The live timeline: poll until the status is final. */
  function watch(id) {
    clearTimeout(state.poll);
    $("timeline-card").hidden = false;
    const tick = async () => {
      try {
        const rx = await Erx.api("GET", `/api/v1/prescriptions/${id}`);
        $("timeline-ref").textContent = rx.reference;
        $("timeline-status").textContent = Erx.statusName(rx.status);
        $("timeline-status").className = `status status-${rx.status}`;
        $("timeline-pharmacy").textContent = rx.pharmacy ? `${rx.pharmacy.name}, ${rx.pharmacy.address}` : "";
        Erx.renderTimeline($("timeline"), rx.history);
        if (!Erx.FINAL.has(rx.status)) state.poll = setTimeout(tick, POLL_MS);
        else loadPrescriptions().catch(() => {});
      } catch (err) {
        Erx.notice(err.message);
      }
    };
    tick();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("region").addEventListener("change", changeRegion);
    $("pharmacy-q").addEventListener("input", onQuery);
    $("pharmacy-q").addEventListener("keydown", onKey);
    $("pharmacy-q").addEventListener("blur", () => setTimeout(closeList, 150));
    $("send").addEventListener("click", send);
    loadRegions().then(loadPrescriptions).catch((err) => Erx.notice(err.message));
  });
})();
