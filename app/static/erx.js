/* Shared by the patient and support pages: the bearer token (and its refresh),
   API calls with readable errors, times in the reader's own time zone, status
   labels in two voices (the patient's, support's) and the timeline. */
"use strict";

const Erx = (() => {
  /* Statuses after which nothing more happens to the prescription. */
  const FINAL = new Set(["dispensed", "expired", "voided", "rejected", "emailed", "email_in_doubt", "dead"]);

  /* The patient's words: what happened to their prescription, from where they stand. */
  const PATIENT_STATUS = {
    draft: "Not sent yet",
    queued: "Sending to your pharmacy",
    retry: "Still sending: we keep trying",
    issued: "Sent to your pharmacy",
    signed: "Checked and signed by your prescriber",
    printed: "Being prepared by your pharmacy",
    dispensed: "Ready to collect",
    emailed: "Emailed to your pharmacy",
    email_in_doubt: "We are checking your pharmacy received it",
    expired: "Expired: ask your clinic for a new one",
    voided: "Cancelled",
    rejected: "Not accepted: your clinic will contact you",
    dead: "Could not be sent: your clinic will contact you",
  };
  /* Support's words: the lifecycle statuses by name. */
  const STAFF_STATUS = {
    draft: "Draft", queued: "Queued", retry: "Retrying", issued: "Issued", signed: "Signed",
    printed: "Printed", dispensed: "Dispensed", emailed: "Emailed to the pharmacy",
    email_in_doubt: "Email in doubt (operator to check)", expired: "Expired", voided: "Voided",
    rejected: "Rejected", dead: "Failed (dead letter)",
  };
  const STAFF_SOURCE = {
    service: "service", api: "platform reply", webhook: "platform webhook",
    reconcile: "reconcile", operator: "support",
  };

  /* The token: minted into the page in development (and refreshed from
     /page-token before it expires); in production passed by the host app in
     sessionStorage (which it refreshes) or once in the URL fragment. */
  function meta(name) {
    const node = document.querySelector(`meta[name="${name}"]`);
    return node ? node.content : "";
  }

  function token() {
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    if (fragment.get("access_token")) {
      sessionStorage.setItem("erx.token", fragment.get("access_token"));
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return meta("erx-token") || sessionStorage.getItem("erx.token") || "";
  }

  /* Refresh a page-minted token at 80% of its life, so a page left open keeps working. */
  function keepTokenFresh() {
    const ttl = Number(meta("erx-token-ttl"));
    const url = meta("erx-token-refresh");
    if (!ttl || !url) return;
    setTimeout(async () => {
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" } });
        if (response.ok) {
          const body = await response.json();
          document.querySelector('meta[name="erx-token"]').content = body.token;
          document.querySelector('meta[name="erx-token-ttl"]').content = String(body.expires_in);
        }
      } catch (_) { /* the next API call will say the sign-in expired */ }
      keepTokenFresh();
    }, ttl * 800);
  }

  /* An error with the HTTP status and the body's code, so pages can word it for their reader. */
  class ApiFailure extends Error {
    constructor(message, status, body) {
      super(message);
      this.status = status;
      this.code = body && body.code;
      this.body = body;
    }
  }

  function describeError(status, body) {
    if (status === 401) return "Your sign-in has expired. Please reload the page to sign in again.";
    if (status === 403) return "You are not allowed to do that.";
    if (status === 429) return "Too many tries in a short time. Please wait a minute and try again.";
    if (status === 404) return "We could not find that. Please check and try again.";
    if (body && typeof body.message === "string") {
      const details = [];
      for (const [field, messages] of Object.entries(body.errors || {})) {
        const list = Array.isArray(messages) ? messages : [messages];
        details.push(...list.map((m) => (typeof m === "string" ? m : `${field}: invalid`)));
      }
      return details.length ? `${body.message} ${details.join(" ")}` : body.message;
    }
    if (status >= 500) return "Something went wrong on our side. Please try again in a minute.";
    return "The request could not be completed. Please try again.";
  }

  async function api(method, path, body, headers = {}) {
    const init = { method, headers: { Accept: "application/json", ...headers } };
    const bearer = token();
    if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      throw new ApiFailure("The service cannot be reached. Check your connection and try again.", 0, null);
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) throw new ApiFailure(describeError(response.status, data), response.status, data);
    return data;
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    day: "numeric", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "long", year: "numeric" });

  function localTime(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    return Number.isNaN(when.getTime()) ? "" : timeFormat.format(when);
  }

  function localDate(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    return Number.isNaN(when.getTime()) ? "" : dateFormat.format(when);
  }

  function statusName(status, voice = "patient") {
    const names = voice === "staff" ? STAFF_STATUS : PATIENT_STATUS;
    return names[status] || status;
  }

  function notice(message, kind = "error") {
    const box = document.getElementById("notice");
    if (!message) { box.hidden = true; box.textContent = ""; return; }
    box.className = `notice ${kind}`;
    box.textContent = message;
    box.hidden = false;
  }

  /* The timeline. The patient sees what happened; support also sees who did it and why. */
  function renderTimeline(list, history, voice = "patient") {
    list.replaceChildren();
    for (const step of history || []) {
      const item = el("li", { class: `step step-${step.to}` });
      item.append(el("span", { class: "step-status" }, statusName(step.to, voice)));
      const time = el("time", { datetime: step.occurred_at || "" }, localTime(step.occurred_at));
      item.append(time);
      if (voice === "staff") {
        const who = step.actor || STAFF_SOURCE[step.source] || step.source || "";
        item.append(el("span", { class: "step-source" }, who ? `by ${who}` : ""));
        if (step.reason) item.append(el("span", { class: "step-reason" }, `Reason: ${step.reason}`));
      }
      list.append(item);
    }
  }

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text) node.textContent = text;
    return node;
  }

  function medicineLine(medicine) {
    const quantity = medicine.quantity ? ` (quantity ${medicine.quantity})` : "";
    return `${medicine.description}${quantity}`;
  }

  document.addEventListener("DOMContentLoaded", keepTokenFresh);

  return {
    api, notice, localTime, localDate, renderTimeline, statusName, el, medicineLine, FINAL, ApiFailure,
  };
})();
