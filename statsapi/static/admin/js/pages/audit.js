// The audit log (admins only): newest first, filtered by actor, action, target and time,
// one keyset page at a time; each event's before -> after as a table of its fields with
// the changed ones marked. Everything from the log is shown as text.

import {ApiProblem, api, el, field, formatTime, pageSize, pager, problemBox, replace} from "../core.js";

const AUDIT = "/api/admin/audit";
const ACTIONS = [
  "role.grant",
  "user.create",
  "user.update",
  "user.password_reset",
  "user.password_change",
  "token.revoke",
  "record.create",
  "record.update",
  "record.delete",
];

// ---- the diff ---------------------------------------------------------------------------------

function shown(value, present) {
  if (!present) return el("span", {class: "gone"}, "(absent)");
  if (value === null) return "null";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// One row per field of before and after: what it was, what it became, and whether it changed.
export function diffRows(before, after) {
  const old = before && typeof before === "object" ? before : {};
  const now = after && typeof after === "object" ? after : {};
  const keys = [...new Set([...Object.keys(old), ...Object.keys(now)])];
  return keys.map((key) => {
    const inOld = Object.hasOwn(old, key);
    const inNow = Object.hasOwn(now, key);
    return {key, before: shown(old[key], inOld), after: shown(now[key], inNow), changed: inOld !== inNow || !same(old[key], now[key])};
  });
}

function diffTable(event) {
  const rows = diffRows(event.before, event.after);
  if (!rows.length) return el("p", {class: "muted"}, "No before or after recorded.");
  const changedCount = rows.filter((row) => row.changed).length;
  return el(
    "table",
    {class: "diff"},
    el("caption", {class: "visually-hidden"}, `Before and after of event ${event.id}: ${changedCount} field(s) changed`),
    el("thead", {}, el("tr", {}, el("th", {scope: "col"}, "Field"), el("th", {scope: "col"}, "Before"), el("th", {scope: "col"}, "After"))),
    el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          {class: row.changed ? "changed" : null},
          el("th", {scope: "row"}, row.key, row.changed ? el("span", {class: "mark"}, " (changed)") : null),
          el("td", {}, row.before),
          el("td", {}, row.after),
        ),
      ),
    ),
  );
}

// ---- events -----------------------------------------------------------------------------------

function actorName(event, names) {
  if (event.actor_id === null || event.actor_id === undefined) return "system";
  const name = names.get(event.actor_id);
  return name ? `${name} (#${event.actor_id})` : `#${event.actor_id}`;
}

// Usernames of the actors on a page, one GET each; an unknown one stays a number.
async function actorNames(events, names) {
  const missing = [...new Set(events.map((e) => e.actor_id).filter((id) => id != null && !names.has(id)))];
  await Promise.all(
    missing.map(async (id) => {
      try {
        names.set(id, (await api("GET", `/api/admin/users/${id}`)).username);
      } catch {
        names.set(id, null);
      }
    }),
  );
}

function eventItem(event, names) {
  return el(
    "li",
    {class: "panel event"},
    el("h2", {}, `${event.action} on ${event.target}`),
    el(
      "dl",
      {class: "facts"},
      el("dt", {}, "When"),
      el("dd", {}, formatTime(event.occurred_at)),
      el("dt", {}, "Actor"),
      el("dd", {}, actorName(event, names)),
      event.reason ? [el("dt", {}, "Reason"), el("dd", {class: "reason"}, event.reason)] : null,
      el("dt", {}, "Request"),
      el("dd", {}, event.request_id || "—"),
    ),
    diffTable(event),
  );
}

// ---- filters ----------------------------------------------------------------------------------

// "2026-03-14T09:27" from a datetime-local input, read as UTC -> an RFC 3339 instant.
function utc(local) {
  return local ? `${local.length === 16 ? `${local}:00` : local}Z` : "";
}

// The actor filter takes a user id or a username (looked up exactly).
async function actorId(text) {
  if (!text) return "";
  if (/^\d+$/.test(text)) return text;
  const page = await api("GET", "/api/admin/users", {query: {username: text, limit: 100}});
  const user = (page.items || []).find((u) => u.username === text.toLowerCase());
  if (!user) throw new ApiProblem(0, {title: "Unknown actor", detail: `No user is named “${text}”.`});
  return String(user.id);
}

function filtersForm(initial, onApply) {
  const actor = el("input", {name: "actor", maxlength: "64", autocomplete: "off"});
  const action = el("input", {name: "action", list: "audit-actions", maxlength: "64", autocomplete: "off", value: initial.get("action") || ""});
  const target = el("input", {name: "target", maxlength: "97", autocomplete: "off", value: initial.get("target") || ""});
  const since = el("input", {name: "since", type: "datetime-local", step: "1"});
  const until = el("input", {name: "until", type: "datetime-local", step: "1"});
  const feedback = el("div", {class: "feedback"});
  const form = el(
    "form",
    {class: "filters", role: "search", "aria-label": "Filter the audit log"},
    field("Actor (username or id)", actor),
    field("Action", action),
    el("datalist", {id: "audit-actions"}, ACTIONS.map((name) => el("option", {value: name}))),
    field("Target", target, "user, record, user:7 or record:42"),
    field("From (UTC)", since),
    field("Until (UTC, not included)", until),
    el("div", {class: "actions"}, el("button", {type: "submit", class: "primary"}, "Apply filters")),
    feedback,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(feedback);
    try {
      const query = {actor_id: await actorId(actor.value.trim()), action: action.value.trim(), target: target.value.trim(), since: utc(since.value), until: utc(until.value)};
      onApply(query);
    } catch (error) {
      replace(feedback, problemBox(error));
    }
  });
  return form;
}

// ---- the page -----------------------------------------------------------------------------------

export async function render(main, params) {
  const names = new Map();
  const limit = pageSize(params, 20);
  const initial = params.query;
  let filters = {action: initial.get("action") || "", target: initial.get("target") || ""};
  const list = pager({
    label: "Audit events",
    load: async (cursor) => {
      const page = await api("GET", AUDIT, {query: {...filters, limit, cursor}});
      await actorNames(page.items || [], names);
      return page;
    },
    show: (events) =>
      events.length
        ? el("ol", {class: "events", "aria-label": "Audit events, newest first"}, events.map((e) => eventItem(e, names)))
        : el("p", {class: "empty"}, "No event matches these filters."),
  });
  replace(
    main,
    el("h1", {}, "Audit log"),
    filtersForm(initial, (chosen) => {
      filters = chosen;
      list.reload();
    }),
    list.element,
  );
  await list.reload();
}
