/* Shared by the patient and support pages: the bearer token, API calls with
   readable errors, times in the reader's own time zone, and the timeline. */
"use strict";

const Erx = (() => {
  const FINAL = new Set(["dispensed", "expired", "voided", "rejected", "emailed", "dead"]);
  const SOURCE_NAMES = {
    service: "service", api: "platform reply", webhook: "webhook",
    reconcile: "reconcile", operator: "support",
  };
  const STATUS_NAMES = {
    draft: "Draft", queued: "Queued", issued: "Issued", signed: "Signed",
    printed: "Printed", dispensed: "Dispensed", expired: "Expired", voided: "Voided",
    rejected: "Rejected", emailed: "Emailed to the pharmacy", retry: "Retrying", dead: "Failed",
  };

  /* The token: minted into the page in development; in production passed by the
     host app in sessionStorage or once in the URL fragment (#access_token=...). */
  function token() {
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    if (fragment.get("access_token")) {
      sessionStorage.setItem("erx.token", fragment.get("access_token"));
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    const meta = document.querySelector('meta[name="erx-token"]').content;
    return meta || sessionStorage.getItem("erx.token") || "";
  }

  function describeError(status, body) {
    if (status === 401) return "Your sign-in has expired. Please sign in again.";
    if (status === 403) return "You are not allowed to do that.";
    if (status === 404) return "We could not find that prescription.";
    if (body && typeof body.message === "string") {
      const details = [];
      for (const [field, messages] of Object.entries(body.errors || {})) {
        const list = Array.isArray(messages) ? messages : [messages];
        details.push(...list.map((m) => (typeof m === "string" ? m : `${field}: invalid`)));
      }
      return details.length ? `${body.message} ${details.join(" ")}` : body.message;
    }
    if (status >= 500) return "Something went wrong on our side. Please try again in a minute.";
    return "The request could not be completed.";
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
      throw new Error("The service cannot be reached. Check your connection and try again.");
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) throw new Error(describeError(response.status, data));
    return data;
  }

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    day: "numeric", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });

  function localTime(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    return Number.isNaN(when.getTime()) ? "" : timeFormat.format(when);
  }

  function statusName(status) { return STATUS_NAMES[status] || status; }

  function notice(message, kind = "error") {
    const box = document.getElementById("notice");
    if (!message) { box.hidden = true; box.textContent = ""; return; }
    box.className = `notice ${kind}`;
    box.textContent = message;
    box.hidden = false;
  }

  function renderTimeline(list, history) {
    list.replaceChildren();
    for (const step of history || []) {
      const item = document.createElement("li");
      item.className = `step step-${step.to}`;
      const label = document.createElement("span");
      label.className = "step-status";
      label.textContent = statusName(step.to);
      const time = document.createElement("time");
      time.dateTime = step.occurred_at || "";
      time.textContent = localTime(step.occurred_at);
      const source = document.createElement("span");
      source.className = "step-source";
      source.textContent = SOURCE_NAMES[step.source] || step.source || "";
      item.append(label, time, source);
      list.append(item);
    }
  }

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text) node.textContent = text;
    return node;
  }

  return { api, notice, localTime, renderTimeline, statusName, el, FINAL };
})();
