// Records: browse with the list filters and keyset pages (#/records), open one
// (#/records/ID). Read-only for everyone: the console never writes a record. Admins also
// see the record's audit trail; the API keeps the audit log to admins, and so does this page.

import {ApiProblem, api, el, formatMoney, formatTime, pageSize, pager, problemBox, session} from "../core.js";
import {filterForm, readValues, remember, toQuery} from "../filters.js";
import {diffRows} from "./audit.js";

const PAGE_SIZE = 50;
const AUDIT_PAGE_SIZE = 20;
const FILTERS = "Filters (as GET /api/records takes them)";
// The list as last filtered: a record's "back" link returns to it, filters and all.
let listRoute = "#/records";
const FIELDS = [
  ["id", "Id"],
  ["owner_id", "Owner id"],
  ["amount", "Amount"],
  ["category", "Category"],
  ["occurred_at", "Occurred at"],
  ["description", "Description"],
  ["created_at", "Created at"],
  ["updated_at", "Updated at"],
  ["version", "Version"],
];

function recordRow(record) {
  return el(
    "tr",
    {"data-record": String(record.id)},
    el("td", {}, el("a", {href: `#/records/${record.id}`}, `Record ${record.id}`)),
    el("td", {}, formatTime(record.occurred_at)),
    el("td", {class: "category"}, record.category),
    el("td", {class: "num"}, formatMoney(record.amount, record.currency)),
    el("td", {class: "num"}, String(record.owner_id)),
    el("td", {class: "description"}, record.description ?? ""),
  );
}

function recordsTable(items) {
  if (!items.length) return el("p", {class: "empty"}, "No records match the filters.");
  const head = ["Record", "Occurred at", "Category", "Amount", "Owner id", "Description"];
  return el(
    "table",
    {class: "records", "data-testid": "records"},
    el("caption", {}, "Records, newest first"),
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {scope: "col"}, h)))),
    el("tbody", {}, ...items.map(recordRow)),
  );
}

async function renderList(main, params) {
  let values = readValues(params.query);
  const limit = pageSize(params, PAGE_SIZE); // #/records?limit=N, kept when the filters change
  listRoute = window.location.hash || "#/records";
  const pages = pager({
    label: "Records",
    load: (cursor) => api("GET", "/api/records", {query: {...toQuery(values), limit, cursor}}),
    show: recordsTable,
  });
  const apply = (chosen) => {
    values = chosen;
    remember("records", limit === PAGE_SIZE ? values : {...values, limit});
    listRoute = window.location.hash;
    pages.reload();
  };
  main.append(
    el("h1", {}, "Records"),
    el("p", {class: "lead"}, "Every record you may see, newest first. Read-only: the console changes no records."),
    filterForm({prefix: "records", values, legend: FILTERS, submitLabel: "Show records", onApply: apply}),
    pages.element,
  );
  await pages.reload();
}

function recordDetails(record) {
  const value = (name) => {
    if (name === "amount") return formatMoney(record.amount, record.currency);
    if (name.endsWith("_at")) return formatTime(record[name]);
    return String(record[name] ?? "—");
  };
  return el(
    "dl",
    {class: "facts record-details", "data-testid": "record"},
    ...FIELDS.flatMap(([name, label]) => [el("dt", {}, label), el("dd", {"data-field": name}, value(name))]),
  );
}

/** The fields an event changed (every field of a create or a delete), before and after,
 * as the Audit page words them. */
function changes(event) {
  const rows = diffRows(event.before, event.after).filter((row) => row.changed);
  const head = el("tr", {}, ["Field", "Before", "After"].map((h) => el("th", {scope: "col"}, h)));
  const marked = event.before && event.after ? "changed" : null; // a create or delete: all new or all gone
  const row = (r) =>
    el(
      "tr",
      {"data-field": r.key, class: marked},
      el("th", {scope: "row"}, r.key),
      el("td", {class: "before"}, r.before),
      el("td", {class: "after"}, r.after),
    );
  return el("table", {class: "diff"}, el("thead", {}, head), el("tbody", {}, rows.map(row)));
}

function auditItem(event) {
  const actor = event.actor_id == null ? "the system" : `user ${event.actor_id}`;
  return el(
    "li",
    {class: "audit-event", "data-action": event.action},
    el(
      "p",
      {class: "audit-head"},
      el("time", {datetime: event.occurred_at}, formatTime(event.occurred_at)),
      " · ",
      el("strong", {}, event.action),
      ` · by ${actor}`,
    ),
    event.reason ? el("p", {class: "audit-reason"}, `Reason: ${event.reason}`) : null,
    changes(event),
    event.request_id ? el("p", {class: "audit-request"}, `Request id: ${event.request_id}`) : null,
  );
}

function auditEvents(items) {
  if (!items.length) return el("p", {class: "empty"}, "No audit events for this record.");
  return el("ol", {class: "audit-trail", "data-testid": "audit-trail"}, ...items.map(auditItem));
}

/** The record's audit events (GET /api/admin/audit?target=record:ID), newest first. */
async function auditTrail(id) {
  const pages = pager({
    label: "Audit trail",
    load: (cursor) => {
      const query = {target: `record:${id}`, limit: AUDIT_PAGE_SIZE, cursor};
      return api("GET", "/api/admin/audit", {query});
    },
    show: auditEvents,
  });
  await pages.reload();
  return section(pages.element);
}

function section(...children) {
  const title = el("h2", {id: "record-audit-title"}, "Audit trail");
  return el("section", {class: "record-audit", "aria-labelledby": title.id}, title, children);
}

function auditNote() {
  const note = "The audit log is for admins: ask an admin who changed this record and when.";
  return section(el("p", {class: "note", "data-testid": "audit-note"}, note));
}

/** The record, and for admins its audit trail: that outlives the record (a delete keeps
 * the deleted content), so an admin following a deleted record still sees who and when. */
async function renderRecord(main, id) {
  main.append(el("p", {}, el("a", {href: listRoute}, "← Back to the records")), el("h1", {}, `Record ${id}`));
  let details;
  try {
    details = recordDetails(await api("GET", `/api/records/${id}`));
  } catch (error) {
    if (!(error instanceof ApiProblem && error.status === 404)) throw error;
    details = problemBox(error);
  }
  main.append(details, session().role === "admin" ? await auditTrail(id) : auditNote());
}

export async function render(main, params) {
  const [, id] = params.path;
  if (id === undefined) return renderList(main, params);
  if (!/^[1-9][0-9]{0,18}$/.test(id)) {
    const problem = "That is not a record id: record ids are whole numbers.";
    main.append(el("h1", {}, "Records"), el("p", {role: "alert"}, problem));
    return;
  }
  return renderRecord(main, id);
}
