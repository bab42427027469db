/* The patient's page: say where they collect, pick a prescription, search a
   pharmacy, send, then watch the status move until it is final. Every message
   is addressed to the patient and says what they can do next. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null, regions: [], rx: null, pharmacy: null, options: [], active: -1, poll: null, seq: 0,
  };
  const DEBOUNCE_MS = 250;
  const POLL_MS = 1500;
  const PER_PAGE = 8;

  /* Regions in the words a patient uses: where their pharmacy is. Unknown codes use the API's name. */
  const REGION_PLACES = { A: "Northern Ireland", B: "England, Scotland or Wales" };
  const regionPlace = (region) => REGION_PLACES[region.code] || region.name;

  const NO_RECORD = "We could not find your patient record, so there is nothing to show yet. "
    + "If you registered recently, please try again later; otherwise contact your clinic.";

  /* Turn an API failure into words for the patient, with what they can do next. */
  function forPatient(err) {
    if (err.code === "patient_not_found") return NO_RECORD;
    if (err.code === "already_queued_or_sent") {
      return "This prescription has already been sent. Its progress is shown below.";
    }
    const fields = Object.keys((err.body && err.body.errors) || {});
    if (err.status === 422 && fields.length) {
      const parts = [];
      if (fields.includes("pharmacy_id")) {
        parts.push("That pharmacy cannot receive this prescription. Please choose another pharmacy.");
      }
      if (fields.includes("medicines")) {
        parts.push("A medicine on this prescription cannot be sent online (some controlled medicines "
          + "need a paper prescription). Please contact your clinic: they will arrange it with you.");
      }
      if (fields.some((f) => f.startsWith("patient."))) {
        parts.push("Your address or date of birth is missing from your record. Please contact your "
          + "clinic to update it, then send again.");
      }
      if (fields.includes("prescriber")) {
        parts.push("Your prescriber cannot send prescriptions online at the moment. Please try again "
          + "later, or contact your clinic.");
      }
      if (fields.includes("region")) parts.push("Please choose where you will collect your medicine.");
      if (parts.length) return parts.join(" ");
    }
    if (err.status === 404) return "We could not find that prescription. Please reload the page.";
    return err.message;
  }

  async function loadRegions() {
    const [regions, me] = await Promise.all([Erx.api("GET", "/api/v1/regions"), Erx.api("GET", "/api/v1/me")]);
    state.regions = regions.regions || [];
    state.me = me;
    const select = $("region");
    select.replaceChildren();
    for (const region of state.regions) {
      const option = Erx.el("option", { value: region.code }, regionPlace(region));
      if (region.code === me.region.code) option.selected = true;
      select.append(option);
    }
    select.disabled = false;
    describeRegion();
  }

  function describeRegion() {
    const region = state.me.region;
    $("region-help").textContent = region.flow === "email"
      ? "We email your prescription to the pharmacy you choose."
      : "We send your prescription electronically to the pharmacy you choose; you collect "
        + "your medicine from there.";
  }

  /* Changing where they collect clears the pharmacy choice, so ask first. */
  function askRegion() {
    const chosen = state.regions.find((r) => r.code === $("region").value);
    if (!chosen || chosen.code === state.me.region.code) { $("region-confirm").hidden = true; return; }
    $("region-confirm-text").textContent = `Change to ${regionPlace(chosen)}? You will then choose `
      + "a pharmacy there.";
    $("region-confirm").hidden = false;
    $("region-yes").focus();
  }

  function keepRegion() {
    $("region-confirm").hidden = true;
    $("region").value = state.me.region.code;
    $("region").focus();
  }

  async function changeRegion() {
    Erx.notice("");
    $("region-confirm").hidden = true;
    try {
      state.me = await Erx.api("PATCH", "/api/v1/me", { region: $("region").value });
      describeRegion();
      choosePharmacy(null);
      $("pharmacy-q").value = "";
      $("pharmacy-count").textContent = "";
      Erx.notice(`Saved: you collect your medicine in ${regionPlace(state.me.region)}.`, "ok");
    } catch (err) {
      Erx.notice(forPatient(err));
      $("region").value = state.me.region.code;
    }
    $("region").focus();
  }

  function describeRx(rx, detail) {
    const item = Erx.el("li", { class: "rx" });
    const head = Erx.el("div", { class: "rx-head" });
    head.append(Erx.el("span", { class: "rx-ref" }, `Prescription ${rx.reference}`));
    head.append(Erx.el("span", { class: `status status-${rx.status}` }, Erx.statusName(rx.status)));
    item.append(head);
    const facts = [];
    const written = Erx.localDate((detail && detail.created_at) || rx.created_at);
    if (written) facts.push(`Written on ${written}`);
    if (detail && detail.prescriber && detail.prescriber.name) facts.push(`by ${detail.prescriber.name}`);
    if (facts.length) item.append(Erx.el("p", { class: "rx-meta" }, facts.join(" ")));
    const medicines = (detail && detail.medicines) || [];
    if (medicines.length) {
      const list = Erx.el("ul", { class: "rx-medicines", "aria-label": `Medicines on ${rx.reference}` });
      for (const medicine of medicines) list.append(Erx.el("li", {}, Erx.medicineLine(medicine)));
      item.append(list);
    }
    const sendable = rx.status === "draft";
    const button = Erx.el("button", { type: "button", "data-id": String(rx.id) },
      sendable ? "Choose a pharmacy" : "See progress");
    button.setAttribute("aria-label", `${sendable ? "Choose a pharmacy for" : "See progress of"} ${rx.reference}`);
    button.addEventListener("click", () => (sendable ? startSend(rx) : watch(rx.id)));
    item.append(button);
    return item;
  }

  async function loadPrescriptions() {
    const page = await Erx.api("GET", "/api/v1/me/prescriptions?per_page=20");
    const items = page.items || [];
    // Each item carries its view (medicines, prescriber); an older service sends a summary
    // only, so those are fetched one by one, and a missing one still lists.
    const details = await Promise.all(items.map((rx) => (rx.medicines
      ? rx : Erx.api("GET", `/api/v1/prescriptions/${rx.id}`).catch(() => null))));
    const list = $("prescriptions");
    list.replaceChildren();
    $("rx-loading").hidden = true;
    $("rx-empty").hidden = items.length > 0;
    items.forEach((rx, index) => list.append(describeRx(rx, details[index])));
  }

  function startSend(rx) {
    state.rx = rx;
    $("send-ref").textContent = rx.reference;
    $("send-card").hidden = false;
    $("timeline-card").hidden = true;
    choosePharmacy(null);
    $("pharmacy-q").value = "";
    $("pharmacy-count").textContent = "";
    $("pharmacy-q").focus();
  }

  /* The pharmacy combobox (WAI-ARIA combobox with a listbox popup). */
  let timer = null;
  function onQuery() {
    clearTimeout(timer);
    const query = $("pharmacy-q").value.trim();
    if (query.length < 2) { closeList(); $("pharmacy-count").textContent = ""; return; }
    timer = setTimeout(() => search(query), DEBOUNCE_MS);
  }

  async function search(query) {
    const seq = ++state.seq;
    const params = new URLSearchParams({ q: query, region: state.me.region.code, per_page: String(PER_PAGE) });
    try {
      const page = await Erx.api("GET", `/api/v1/pharmacies?${params}`);
      if (seq !== state.seq) return; // a newer query has been typed since
      showOptions(query, page.items || [], page.total ?? (page.items || []).length);
    } catch (err) {
      if (seq !== state.seq) return;
      closeList();
      $("pharmacy-count").textContent = err.status === 422
        ? "Please type letters or numbers from the pharmacy's name, town or postcode."
        : forPatient(err);
    }
  }

  function countText(query, shown, total) {
    if (!total) {
      return `No pharmacy matches “${query}”. Check the spelling, or try the town or the `
        + "first part of the postcode.";
    }
    if (total > shown) {
      return `Showing ${shown} of ${total} pharmacies that match. Keep typing (a town or postcode) `
        + "to narrow the list.";
    }
    return total === 1 ? "1 pharmacy matches." : `${total} pharmacies match.`;
  }

  function showOptions(query, items, total) {
    state.options = items;
    state.active = -1;
    const list = $("pharmacy-list");
    list.replaceChildren();
    items.forEach((pharmacy, index) => {
      const option = Erx.el("li", { role: "option", id: `pharmacy-opt-${index}`, "aria-selected": "false" });
      option.append(Erx.el("span", { class: "opt-name" }, pharmacy.name));
      option.append(Erx.el("span", { class: "opt-address" }, pharmacy.address));
      option.addEventListener("mousedown", (event) => { event.preventDefault(); choosePharmacy(pharmacy); });
      list.append(option);
    });
    list.hidden = !items.length;
    $("pharmacy-q").setAttribute("aria-expanded", items.length ? "true" : "false");
    $("pharmacy-count").textContent = countText(query, items.length, total);
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
    $("chosen").textContent = pharmacy ? `Your pharmacy: ${pharmacy.name}, ${pharmacy.address}` : "";
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
      Erx.notice(forPatient(err));
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
        $("timeline-ref").textContent = `Prescription ${rx.reference}`;
        $("timeline-status").textContent = Erx.statusName(rx.status);
        $("timeline-status").className = `status status-${rx.status}`;
        $("timeline-pharmacy").textContent = rx.pharmacy
          ? `Your pharmacy: ${rx.pharmacy.name}, ${rx.pharmacy.address}` : "";
        Erx.renderTimeline($("timeline"), rx.history);
        if (!Erx.FINAL.has(rx.status)) state.poll = setTimeout(tick, POLL_MS);
        else loadPrescriptions().catch(() => {});
      } catch (err) {
        Erx.notice(forPatient(err));
      }
    };
    tick();
  }

  /* No patient record: one message, and nothing left waiting on "Loading…". */
  function noRecord() {
    Erx.notice(NO_RECORD);
    for (const id of ["region-card", "rx-card", "send-card", "timeline-card"]) $(id).hidden = true;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("region").addEventListener("change", askRegion);
    $("region-yes").addEventListener("click", changeRegion);
    $("region-no").addEventListener("click", keepRegion);
    $("pharmacy-q").addEventListener("input", onQuery);
    $("pharmacy-q").addEventListener("keydown", onKey);
    $("pharmacy-q").addEventListener("blur", () => setTimeout(closeList, 150));
    $("send").addEventListener("click", send);
    loadRegions().then(loadPrescriptions).catch((err) => {
      if (err.code === "patient_not_found") { noRecord(); return; }
      $("region").replaceChildren(Erx.el("option", { value: "" }, "Not available"));
      $("rx-loading").hidden = true;
      Erx.notice(forPatient(err));
    });
  });
})();
