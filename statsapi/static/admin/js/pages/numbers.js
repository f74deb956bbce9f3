// Numbers: per-currency totals and charts by month, by day and by category, from
// GET /api/stats with the same filters the API takes, and whether the cache answered.
// Every figure shown as text is the API's decimal string; numbers only size the bars.
// Currencies are never added together: sums get a chart per currency, counts a series
// per currency.

import {PALETTE, columnChart, rowChart} from "../charts.js";
import {apiResponse, el, formatMoney, formatTime, problemBox} from "../core.js";
import {daySpan, filterForm, readValues, remember, shiftDay, toQuery} from "../filters.js";

const MAX_DAYS = 366; // a day chart stays readable (and far under the API's group cap)
const TOP_CATEGORIES = 12; // drawn; the figures table lists them all
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const CURRENCY_NAMES = new Intl.DisplayNames(["en"], {type: "currency"});
const NOTHING = "No records match the filters.";

function currencyTitle(code) {
  const name = CURRENCY_NAMES.of(code);
  return name && name !== code ? `${code} (${name})` : code;
}

function monthLabel(key) {
  const [year, month] = key.split("-");
  return `${MONTHS[Number(month) - 1]} ${year}`;
}

function dayLabel(key, form) {
  const [, month, day] = key.split("-");
  return form === "short" ? `${Number(day)} ${MONTHS[Number(month) - 1]}` : key;
}

/** The month after `key` (YYYY-MM). */
function nextMonth(key) {
  return shiftDay(`${key}-28`, 4).slice(0, 7);
}

/** Every month from the first group's to the last's: a time axis keeps its gaps (unless
 * that would be unreadably many; then the months with records). */
function monthKeys(groups) {
  const keys = [];
  const last = groups[groups.length - 1].key;
  for (let key = groups[0].key; key <= last && keys.length <= MAX_DAYS; key = nextMonth(key)) keys.push(key);
  return keys.length > MAX_DAYS ? groups.map((g) => g.key) : keys;
}

function dayKeys(from, to) {
  const keys = [];
  for (let day = from; day <= to; day = shiftDay(day, 1)) keys.push(day);
  return keys;
}

/** Categories drawn: the largest by record count (for one currency's sums, by the size
 * of the sum); the figures table lists every one. */
function topCategories(groups, code) {
  const weight = (g) => (code ? Math.abs(Number(g.totals[code].sum)) : g.record_count);
  const relevant = code ? groups.filter((g) => g.totals[code]) : groups;
  const ranked = [...relevant].sort((a, b) => weight(b) - weight(a) || (a.key < b.key ? -1 : 1));
  return {keys: ranked.slice(0, TOP_CATEGORIES).map((g) => g.key), tableKeys: ranked.map((g) => g.key)};
}

const TIME_AXIS = {draw: columnChart, pick: () => ({})};
const BY_MONTH = {...TIME_AXIS, name: "month", keyTitle: "Month (UTC)", keyNoun: "months", keyLabel: monthLabel};
const BY_DAY = {...TIME_AXIS, name: "day", keyTitle: "Day (UTC)", keyNoun: "days", keyLabel: dayLabel};
const BY_CATEGORY = {
  name: "category",
  keyTitle: "Category",
  keyNoun: "categories",
  keyLabel: (key) => key,
  draw: rowChart,
  pick: topCategories,
};

/** GET /api/stats with `group_by`: the body, and the X-Cache the API sent. */
async function fetchStats(query, groupBy) {
  const {body, headers} = await apiResponse("GET", "/api/stats", {query: {...query, group_by: groupBy}});
  return {body, groupBy, cache: headers.get("X-Cache") || "not reported"};
}

function figure(totals, code, measure) {
  if (measure === "count") return {value: totals.count, text: String(totals.count)};
  return {value: Number(totals.sum), text: formatMoney(totals.sum, code)};
}

/** A currency's figures over the groups as a chart series; its colour is its place among
 * all the currencies, so a currency keeps its colour on every chart. */
function series(groups, currencies, code, measure) {
  const values = new Map();
  for (const group of groups) {
    if (group.totals[code]) values.set(group.key, figure(group.totals[code], code, measure));
  }
  return {name: code, color: PALETTE[currencies.indexOf(code) % PALETTE.length], values};
}

/** A counts chart (a series per currency), then a sums chart per currency. */
function chartsFor(body, axis, currencies) {
  const groups = body.groups || [];
  if (!groups.length) return el("p", {class: "empty"}, NOTHING);
  const present = currencies.filter((code) => groups.some((g) => g.totals[code]));
  const keys = axis.fill ? axis.fill(groups) : groups.map((g) => g.key);
  const base = {keys, keyTitle: axis.keyTitle, keyNoun: axis.keyNoun, keyLabel: axis.keyLabel};
  const noun = axis.keyTitle.replace(/ \(UTC\)$/, "").toLowerCase();
  const counts = axis.draw({
    ...base,
    ...axis.pick(groups, null),
    name: `${axis.name}-count`,
    title: `Records by ${noun} (count, currencies side by side)`,
    axisTitle: "Records (count)",
    unit: () => "records",
    series: present.map((code) => series(groups, currencies, code, "count")),
  });
  const sums = present.map((code) =>
    axis.draw({
      ...base,
      ...axis.pick(groups, code),
      name: `${axis.name}-sum-${code}`,
      title: `Sum by ${noun} — ${currencyTitle(code)}`,
      axisTitle: `Sum (${code})`,
      unit: (s) => s.name,
      series: [series(groups, currencies, code, "sum")],
    }),
  );
  return el("div", {class: "chart-grid"}, counts, sums);
}

function totalsTable(body) {
  const codes = Object.keys(body.totals);
  const money = (code, field) =>
    el("td", {class: "num", "data-field": field}, formatMoney(body.totals[code][field], code));
  const row = (code) =>
    el(
      "tr",
      {"data-currency": code},
      el("th", {scope: "row"}, currencyTitle(code)),
      el("td", {class: "num", "data-field": "count"}, String(body.totals[code].count)),
      ["sum", "avg", "min", "max"].map((field) => money(code, field)),
    );
  const head = ["Currency", "Records", "Sum", "Average", "Min", "Max"].map((h) => el("th", {scope: "col"}, h));
  return el(
    "table",
    {class: "totals"},
    el("caption", {}, "Totals per currency (each in its own currency; never added across currencies)"),
    el("thead", {}, el("tr", {}, head)),
    el("tbody", {}, codes.map(row)),
  );
}

/** A line a request; a new day range replaces the line of the previous one. */
function showCache(list, result, label) {
  const hit = result.cache === "HIT";
  list.querySelector(`li[data-group="${result.groupBy}"]`)?.remove();
  list.append(
    el(
      "li",
      {"data-cache": result.cache, "data-group": result.groupBy},
      `${label}: `,
      el("strong", {class: hit ? "hit" : "miss"}, result.cache),
      hit ? " (served from the cache)" : " (computed now)",
    ),
  );
}

function section(title, id, ...children) {
  return el("section", {class: "numbers-section", "aria-labelledby": id}, el("h2", {id}, title), children);
}

/** The days drawn first: the filters' range when short enough, else the latest month
 * with records. */
function defaultDays(values, monthBody) {
  if (values.from && values.to && daySpan(values.from, values.to) <= MAX_DAYS) {
    return {from: values.from, to: values.to};
  }
  const months = (monthBody.groups || []).map((g) => g.key);
  if (!months.length) return null;
  const last = months[months.length - 1];
  return {from: `${last}-01`, to: shiftDay(`${nextMonth(last)}-01`, -1)};
}

/** The chosen days, within the filters' date range (null when they miss it). */
function dayRange(values, days) {
  const from = values.from && values.from > days.from ? values.from : days.from;
  const to = values.to && values.to < days.to ? values.to : days.to;
  return from > to ? null : {from, to};
}

function dayForm(days, onShow) {
  const input = (name, label) => {
    const control = el("input", {id: `days-${name}`, name, type: "date", required: true, value: days?.[name]});
    return el("div", {class: "field"}, el("label", {for: control.id}, label), control);
  };
  const form = el(
    "form",
    {class: "filters day-range", "aria-label": "Day range"},
    input("from", "Days from (UTC)"),
    input("to", "Days to (UTC, inclusive)"),
    el("div", {class: "actions"}, el("button", {type: "submit", class: "primary"}, "Show days")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    onShow({from: data.get("from"), to: data.get("to")});
  });
  return form;
}

/** The by-day charts of the chosen days into `view.days`; the answer of a superseded
 * request (the filters or the days changed meanwhile) is dropped. */
async function loadDays(view, state) {
  const turn = ++state.dayTurn;
  const say = (text, attrs = {}) => view.days.replaceChildren(el("p", attrs, text));
  if (!state.days) return say(NOTHING, {class: "empty"});
  const span = daySpan(state.days.from, state.days.to);
  if (!(span >= 1 && span <= MAX_DAYS)) return say(`Choose a range of 1 to ${MAX_DAYS} days.`, {role: "alert"});
  const range = dayRange(state.values, state.days);
  if (!range) return say("The chosen days are outside the filters' date range.", {role: "alert"});
  say("Loading days…");
  try {
    const result = await fetchStats(toQuery({...state.values, ...range}), "day");
    if (turn !== state.dayTurn) return;
    showCache(view.cache, result, `By day, ${range.from} to ${range.to}`);
    const axis = {...BY_DAY, fill: () => dayKeys(range.from, range.to)};
    view.days.replaceChildren(chartsFor(result.body, axis, view.currencies));
  } catch (error) {
    if (turn === state.dayTurn) view.days.replaceChildren(problemBox(error));
  }
}

function summary(body) {
  const count = Object.keys(body.totals).length;
  const currencies = `${count} ${count === 1 ? "currency" : "currencies"}`;
  const asOf = formatTime(body.generated_at);
  return el("p", {class: "summary"}, `${body.record_count} records in ${currencies}; figures as of ${asOf}.`);
}

/** Totals, months and categories for the filters, then the days. */
async function load(target, state) {
  const turn = ++state.turn;
  target.replaceChildren(el("p", {}, "Loading numbers…"));
  const query = toQuery(state.values);
  let month;
  let category;
  try {
    [month, category] = await Promise.all([fetchStats(query, "month"), fetchStats(query, "category")]);
  } catch (error) {
    if (turn === state.turn) target.replaceChildren(problemBox(error));
    return;
  }
  if (turn !== state.turn) return;
  const view = {
    cache: el("ul", {class: "cache-status", "data-testid": "cache-status"}),
    days: el("div", {class: "day-charts"}),
    currencies: Object.keys(month.body.totals),
  };
  showCache(view.cache, month, "Totals and months");
  showCache(view.cache, category, "Categories");
  state.days = state.days || defaultDays(state.values, month.body);
  const showDays = (days) => {
    state.days = days;
    loadDays(view, state);
  };
  const totals = month.body.record_count ? totalsTable(month.body) : el("p", {class: "empty"}, NOTHING);
  const cache = el("div", {}, el("h3", {}, "Cache"), view.cache);
  target.replaceChildren(
    section("Totals", "numbers-totals", summary(month.body), el("div", {class: "totals-row"}, totals, cache)),
    section("By month", "numbers-month", chartsFor(month.body, {...BY_MONTH, fill: monthKeys}, view.currencies)),
    section("By day", "numbers-day", dayForm(state.days, showDays), view.days),
    section("By category", "numbers-category", chartsFor(category.body, BY_CATEGORY, view.currencies)),
  );
  await loadDays(view, state);
}

export async function render(main, params) {
  const state = {values: readValues(params.query), days: null, turn: 0, dayTurn: 0};
  const results = el("div", {class: "numbers-results"});
  const apply = (values) => {
    Object.assign(state, {values, days: null});
    remember("numbers", values);
    load(results, state);
  };
  const lead =
    "Totals and charts over every record you may see, per currency: amounts in different currencies are never " +
    "added together.";
  const legend = "Filters (as GET /api/stats takes them)";
  main.append(
    el("h1", {}, "Numbers"),
    el("p", {class: "lead"}, lead),
    filterForm({prefix: "numbers", values: state.values, legend, submitLabel: "Show numbers", onApply: apply}),
    results,
  );
  await load(results, state);
}
