/* The support page: read any prescription's timeline, void it. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let current = null;

  async function show(id, { keepNotice = false } = {}) {
    if (!keepNotice) Erx.notice("");
    try {
      const rx = await Erx.api("GET", `/api/v1/prescriptions/${encodeURIComponent(id)}`);
      current = rx;
      $("detail").hidden = false;
      $("detail-ref").textContent = rx.reference;
      $("detail-status").textContent = Erx.statusName(rx.status);
      $("detail-status").className = `status status-${rx.status}`;
      $("detail-region").textContent = rx.region || "";
      $("detail-pharmacy").textContent = rx.pharmacy ? `${rx.pharmacy.name}, ${rx.pharmacy.address}` : "none chosen";
      $("detail-token").textContent = rx.platform_token || "not issued";
      Erx.renderTimeline($("timeline"), rx.history);
      const voidable = !Erx.FINAL.has(rx.status);
      $("void-button").disabled = !voidable;
      $("void").hidden = !voidable; // a final prescription cannot be voided (the API answers 409)
    } catch (err) {
      $("detail").hidden = true;
      Erx.notice(err.message);
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
    await show(current.id, { keepNotice: true });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("find").addEventListener("submit", (event) => { event.preventDefault(); show($("rx-id").value.trim()); });
    $("void").addEventListener("submit", voidIt);
    const fromUrl = new URLSearchParams(window.location.search).get("id");
    if (fromUrl) { $("rx-id").value = fromUrl; show(fromUrl); }
  });
})();
