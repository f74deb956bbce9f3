// The record filters shared by GET /api/records and GET /api/stats, as a form.
//
// The form speaks in UTC calendar days ("to" inclusive, as people read a range); the API
// speaks in RFC 3339 instants with a half-open [from, to). The translation lives here
// only. Amounts stay the strings typed: the API validates them (and says why not).

import {el} from "./core.js";

export const FIELDS = [
  {name: "from", label: "From (UTC)", type: "date"},
  {name: "to", label: "To (UTC, inclusive)", type: "date"},
  {name: "category", label: "Category", type: "text", maxlength: 64},
  {name: "currency", label: "Currency", type: "text", maxlength: 3, placeholder: "EUR", title: "ISO 4217 code"},
  {name: "min_amount", label: "Min amount", type: "text", inputmode: "decimal", placeholder: "-100.00"},
  {name: "max_amount", label: "Max amount", type: "text", inputmode: "decimal", placeholder: "100.00"},
  {name: "owner_id", label: "Owner id", type: "number", min: 1, step: 1},
];

const DAY_MS = 86_400_000;

/** `YYYY-MM-DD` of a UTC day shifted by `days`. */
export function shiftDay(day, days) {
  return new Date(Date.parse(`${day}T00:00:00Z`) + days * DAY_MS).toISOString().slice(0, 10);
}

/** Whole days from `first` to `last`, both included. */
export function daySpan(first, last) {
  return Math.round((Date.parse(`${last}T00:00:00Z`) - Date.parse(`${first}T00:00:00Z`)) / DAY_MS) + 1;
}

/** The form's values (only those filled in), from a URLSearchParams or a FormData. */
export function readValues(source) {
  const values = {};
  for (const field of FIELDS) {
    const raw = source.get(field.name);
    const value = typeof raw === "string" ? raw.trim() : "";
    if (value) values[field.name] = field.name === "currency" ? value.toUpperCase() : value;
  }
  return values;
}

/** Form values → API query: days become the half-open instant range the API filters on. */
export function toQuery(values) {
  const query = {...values};
  if (values.from) query.from = `${values.from}T00:00:00Z`;
  if (values.to) query.to = `${shiftDay(values.to, 1)}T00:00:00Z`;
  return query;
}

/** Keep the filters in the address (a bookmark or a reload finds them) without a re-render. */
export function remember(route, values) {
  const query = new URLSearchParams(values).toString();
  history.replaceState(null, "", `#/${route}${query ? `?${query}` : ""}`);
}

function control(field, value, prefix) {
  const id = `${prefix}-${field.name}`;
  const {label, name, ...attrs} = field;
  const input = el("input", {...attrs, id, name, autocomplete: "off"});
  input.value = value || "";
  return el("div", {class: "field"}, el("label", {for: id}, label), input);
}

/** The filter form; `onApply(values)` runs on submit, "Clear" empties it and applies. */
export function filterForm({prefix, values, legend, submitLabel, onApply}) {
  const form = el(
    "form",
    {class: "filters record-filters", "aria-label": legend},
    el(
      "fieldset",
      {},
      el("legend", {}, legend),
      el(
        "div",
        {class: "fields"},
        ...FIELDS.map((f) => control(f, values[f.name], prefix)),
        el(
          "div",
          {class: "actions"},
          el("button", {type: "submit", class: "primary"}, submitLabel),
          el("button", {type: "reset", class: "secondary"}, "Clear"),
        ),
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onApply(readValues(new FormData(form)));
  });
  form.addEventListener("reset", () => setTimeout(() => onApply({}), 0));
  return form;
}
