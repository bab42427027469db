/* The support page: find any prescription by our reference, the platform's
   token or its id; check who and what it is; read its history (with each
   void's reason and actor); void it, or read why it cannot be voided. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let current = null;

  /* Why a final status cannot be voided, and what support can do instead. */
  const NOT_VOIDABLE = {
    dispensed: "It cannot be voided: the pharmacy has already dispensed it.",
    expired: "It cannot be voided: it has expired, so no pharmacy can dispense it.",
    voided: "It is already voided.",
    rejected: "It cannot be voided: the platform rejected it, so it never became a live "
      + "prescription. The rejection reason is in the history.",
    emailed: "It cannot be voided here: it was emailed to the pharmacy and an email cannot be "
      + "recalled. Phone the pharmacy, quoting the reference, to stop it.",
    email_in_doubt: "It cannot be voided here: the email may have reached the pharmacy. An "
      + "operator must check with the pharmacy first (outbox in-doubt commands).",
  };
  const STAFF_FINAL = new Set(Object.keys(NOT_VOIDABLE));

  /* Our reference, the platform's token or an id: the lookup each one needs. */
  async function find(query) {
    if (/^\d+$/.test(query)) return Erx.api("GET", `/api/v1/prescriptions/${query}`);
    const key = /^rx-/i.test(query) ? "reference" : "platform_token";
    const value = key === "reference" ? query.toLowerCase() : query;
    const page = await Erx.api("GET", `/api/v1/prescriptions?${new URLSearchParams({ [key]: value })}`);
    const item = (page.items || [])[0];
    if (!item) {
      const what = key === "reference" ? "reference" : "platform token";
      throw new Error(`No prescription has the ${what} ${query}. Check it and try again.`);
    }
    return item;
  }

  /* A fact the API did not send (an older service) is left out rather than shown empty. */
  function text(id, value, present = true) {
    $(id).textContent = value || "not recorded";
    $(id).hidden = !present;
    $(id).previousElementSibling.hidden = !present;
  }

  function render(rx) {
    current = rx;
    $("detail").hidden = false;
    $("detail-ref").textContent = rx.reference;
    $("detail-status").textContent = Erx.statusName(rx.status, "staff");
    $("detail-status").className = `status status-${rx.status}`;
    text("detail-patient", rx.patient ? `${rx.patient.name} (${rx.patient.ref})` : "", "patient" in rx);
    const medicines = $("detail-medicines");
    medicines.replaceChildren();
    if ((rx.medicines || []).length) {
      const list = Erx.el("ul");
      for (const medicine of rx.medicines) {
        const directions = medicine.directions ? `: ${medicine.directions}` : "";
        list.append(Erx.el("li", {}, `${Erx.medicineLine(medicine)}${directions}`));
      }
      medicines.append(list);
    } else {
      medicines.textContent = "none";
    }
    text("detail-prescriber", rx.prescriber && rx.prescriber.name, "prescriber" in rx);
    text("detail-created", Erx.localTime(rx.created_at), "created_at" in rx);
    text("detail-region", rx.region);
    $("detail-pharmacy").textContent = rx.pharmacy ? `${rx.pharmacy.name}, ${rx.pharmacy.address}` : "none chosen";
    $("detail-token").textContent = rx.platform_token || "not issued";
    Erx.renderTimeline($("timeline"), rx.history, "staff");
    const why = NOT_VOIDABLE[rx.status];
    $("void").hidden = STAFF_FINAL.has(rx.status);
    $("void-why").hidden = !why;
    $("void-why").textContent = why || "";
    const url = new URL(window.location.href);
    url.searchParams.set("id", String(rx.id));
    history.replaceState(null, "", url);
  }

  async function show(query, { keepNotice = false } = {}) {
    if (!keepNotice) Erx.notice("");
    try {
      render(await find(query));
    } catch (err) {
      $("detail").hidden = true;
      current = null;
      Erx.notice(err.status === 404 ? `No prescription matches ${query}. Check it and try again.` : err.message);
    }
  }

  async function voidIt(event) {
    event.preventDefault();
    if (!current) return;
    Erx.notice("");
    try {
      await Erx.api("POST", `/api/v1/prescriptions/${current.id}/void`, { reason: $("void-reason").value });
      Erx.notice(`${current.reference} was voided.`, "ok");
      $("void-reason").value = "";
    } catch (err) {
      Erx.notice(err.message);
    }
    await show(String(current.id), { keepNotice: true });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("find").addEventListener("submit", (event) => { event.preventDefault(); show($("rx-id").value.trim()); });
    $("void").addEventListener("submit", voidIt);
    const fromUrl = new URLSearchParams(window.location.search).get("id");
    if (fromUrl) { $("rx-id").value = fromUrl; show(fromUrl); }
  });
})();
