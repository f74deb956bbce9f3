// Numbers: per-currency totals and charts by month, by day and by category, from
// GET /api/stats with the same filters the API takes. Every figure in text is the API's
// decimal string; numbers only size the bars. Currencies are never added together: sums
// get one chart per currency, counts one series per currency.

import {PALETTE, columnChart, rowChart} from "../charts.js";
import {apiResponse, el, formatMoney, formatTime, problemBox} from "../core.js";
import {daySpan, filterForm, readValues, remember, shiftDay, toQuery} from "../filters.js";

const MAX_DAYS = 366; // the day chart stays readable (and far under the API's group cap)
const TOP_CATEGORIES = 12;
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const CURRENCY_NAMES = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(["en"], {type: "currency"}) : null;

function currencyTitle(code) {
  const name = CURRENCY_NAMES ? CURRENCY_NAMES.of(code) : null;
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

/** GET /api/stats with `group_by`; the body and whether the cache answered. */
async function fetchStats(query, groupBy) {
  const {body, headers} = await apiResponse("GET", "/api/stats", {query: {...query, group_by: groupBy}});
  return {body, groupBy, cache: headers.get("X-Cache") || "not reported"};
}

/** The groups' figures as chart series, one per currency, coloured by the currency's
 * place among all the totals (so a currency keeps its colour on every chart). */
function series(groups, currencies, measure) {
  return currencies.map((code, index) => {
    const values = new Map();
    for (const group of groups) {
      const totals = group.totals[code];
      if (!totals) continue;
      values.set(
        group.key,
        measure === "count" ? {value: totals.count, text: String(totals.count)} : {value: Number(totals.sum), text: formatMoney(totals.sum, code)},
      );
    }
    return {name: code, color: PALETTE[index % PALETTE.length], values};
  });
}

function countUnit() {
  return "records";
}

function sumUnit(s) {
  return s.name;
}

/** One counts chart (a series per currency) and one sums chart per currency. */
function chartsFor(body, axis, allCurrencies) {
  const groups = body.groups || [];
  if (!groups.length) return el("p", {}, "No records match the filters.");
  const present = allCurrencies.filter((c) => groups.some((g) => g.totals[c]));
  const keys = axis.fill ? axis.fill(groups) : groups.map((g) => g.key);
  const base = {keys, keyTitle: axis.keyTitle, keyNoun: axis.keyNoun, keyLabel: axis.keyLabel};
  const chart = axis.draw;
  const charts = [
    chart({
      ...base,
      ...axis.pick(groups, null),
      name: `${axis.name}-count`,
      title: `Records by ${axis.noun} (count, all currencies side by side)`,
      axisTitle: "Records (count)",
      unit: countUnit,
      series: series(groups, allCurrencies, "count").filter((s) => present.includes(s.name)),
    }),
  ];
  for (const code of present) {
    const [s] = series(groups, allCurrencies, "sum").filter((x) => x.name === code);
    charts.push(
      chart({...base, ...axis.pick(groups, code), name: `${axis.name}-sum-${code}`, title: `Sum by ${axis.noun} — ${currencyTitle(code)}`, axisTitle: `Sum (${code})`, unit: sumUnit, series: [s]}),
    );
  }
  return el("div", {class: "chart-grid"}, ...charts);
}

/** Every month from the first group's to the last group's: a time axis keeps its gaps. */
function monthKeys(groups) {
  const keys = [];
  const last = groups[groups.length - 1].key;
  for (let key = groups[0].key; key <= last && keys.length <= MAX_DAYS; key = shiftDay(`${key}-28`, 4).slice(0, 7)) keys.push(key);
  return keys.length > MAX_DAYS ? groups.map((g) => g.key) : keys;
}

/** Every day of the range drawn (the range is at most MAX_DAYS long). */
function dayKeys(from, to) {
  const keys = [];
  for (let day = from; day <= to; day = shiftDay(day, 1)) keys.push(day);
  return keys;
}

const BY_MONTH = {name: "month", noun: "month", keyTitle: "Month (UTC)", keyNoun: "months", keyLabel: monthLabel, draw: columnChart, pick: () => ({}), fill: monthKeys};
const BY_DAY = {name: "day", noun: "day", keyTitle: "Day (UTC)", keyNoun: "days", keyLabel: dayLabel, draw: columnChart, pick: () => ({})};
const BY_CATEGORY = {
  name: "category",
  noun: "category",
  keyTitle: "Category",
  keyNoun: "categories",
  keyLabel: (key) => key,
  draw: rowChart,
  pick: topCategories,
};

/** Categories drawn: the largest by record count (or, for one currency's sums, by the size
 * of the sum); the figures table lists every category. */
function topCategories(groups, code) {
  const weight = (g) => (code ? Math.abs(Number(g.totals[code]?.sum || 0)) : g.record_count);
  const relevant = code ? groups.filter((g) => g.totals[code]) : groups;
  const ranked = [...relevant].sort((a, b) => weight(b) - weight(a) || (a.key < b.key ? -1 : 1));
  return {keys: ranked.slice(0, TOP_CATEGORIES).map((g) => g.key), tableKeys: ranked.map((g) => g.key)};
}

function totalsTable(body) {
  const codes = Object.keys(body.totals);
  const cell = (code, field) => el("td", {class: "num", "data-field": field}, formatMoney(body.totals[code][field], code));
  const rows = codes.map((code) =>
    el(
      "tr",
      {"data-currency": code},
      el("th", {scope: "row"}, currencyTitle(code)),
      el("td", {class: "num", "data-field": "count"}, String(body.totals[code].count)),
      ...["sum", "avg", "min", "max"].map((field) => cell(code, field)),
    ),
  );
  const head = ["Currency", "Records", "Sum", "Average", "Min", "Max"].map((h) => el("th", {scope: "col"}, h));
  return el(
    "table",
    {class: "totals", "data-testid": "totals"},
    el("caption", {}, "Totals per currency (amounts in each currency; never added across currencies)"),
    el("thead", {}, el("tr", {}, ...head)),
    el("tbody", {}, ...rows),
  );
}

/** One line a request; a new day range replaces the line of the previous one. */
function cacheStatus(list, result, label) {
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
  return el("section", {class: "numbers-section", "aria-labelledby": id}, el("h2", {id}, title), ...children);
}

/** The day range drawn first: the filters' range when short enough, else the latest
 * month with records. */
function defaultDays(values, monthBody) {
  if (values.from && values.to && daySpan(values.from, values.to) <= MAX_DAYS) return {from: values.from, to: values.to};
  const months = (monthBody.groups || []).map((g) => g.key);
  if (!months.length) return null;
  const last = months[months.length - 1];
  return {from: `${last}-01`, to: shiftDay(`${shiftDay(`${last}-28`, 4).slice(0, 7)}-01`, -1)};
}

/** The days drawn: the chosen days, within the filters' date range. */
function dayRange(values, days) {
  const from = values.from && values.from > days.from ? values.from : days.from;
  const to = values.to && values.to < days.to ? values.to : days.to;
  return from > to ? null : {from, to};
}

function dayForm(state, onShow) {
  const field = (name, label) =>
    el("div", {class: "field"}, el("label", {for: `days-${name}`}, label), el("input", {id: `days-${name}`, name, type: "date", required: "", value: state.days?.[name] || ""}));
  const form = el(
    "form",
    {class: "filters day-range", "aria-label": "Day range"},
    field("from", "Days from (UTC)"),
    field("to", "Days to (UTC, inclusive)"),
    el("div", {class: "actions"}, el("button", {type: "submit", class: "primary"}, "Show days")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    onShow({from: data.get("from"), to: data.get("to")});
  });
  return form;
}

async function loadDays(target, state, cacheList, currencies) {
  target.replaceChildren(el("p", {class: "loading"}, "Loading days…"));
  if (!state.days) return target.replaceChildren(el("p", {}, "No records match the filters."));
  const span = daySpan(state.days.from, state.days.to);
  if (!(span >= 1 && span <= MAX_DAYS)) return target.replaceChildren(el("p", {role: "alert"}, `Choose a range of 1 to ${MAX_DAYS} days.`));
  const range = dayRange(state.values, state.days);
  if (!range) return target.replaceChildren(el("p", {}, "The chosen days are outside the filters' date range."));
  try {
    const result = await fetchStats(toQuery({...state.values, ...range}), "day");
    cacheStatus(cacheList, result, `By day, ${range.from} to ${range.to}`);
    const empty = !(result.body.groups || []).length;
    const axis = {...BY_DAY, fill: () => dayKeys(range.from, range.to)};
    target.replaceChildren(empty ? el("p", {}, "No records on these days.") : chartsFor(result.body, axis, currencies));
  } catch (error) {
    target.replaceChildren(problemBox(error));
  }
}

function summary(body) {
  const currencies = Object.keys(body.totals).length;
  return el(
    "p",
    {class: "summary"},
    `${body.record_count} records in ${currencies} ${currencies === 1 ? "currency" : "currencies"}; figures as of ${formatTime(body.generated_at)}.`,
  );
}

async function load(target, state) {
  target.replaceChildren(el("p", {class: "loading"}, "Loading numbers…"));
  const query = toQuery(state.values);
  let month;
  let category;
  try {
    [month, category] = await Promise.all([fetchStats(query, "month"), fetchStats(query, "category")]);
  } catch (error) {
    return target.replaceChildren(problemBox(error));
  }
  const currencies = Object.keys(month.body.totals);
  const cacheList = el("ul", {class: "cache-status", "data-testid": "cache-status"});
  cacheStatus(cacheList, month, "Totals and months");
  cacheStatus(cacheList, category, "Categories");
  state.days = state.days || defaultDays(state.values, month.body);
  const days = el("div", {class: "day-charts"});
  const showDays = (range) => {
    state.days = range;
    loadDays(days, state, cacheList, currencies);
  };
  const empty = !month.body.record_count;
  target.replaceChildren(
    section(
      "Totals",
      "numbers-totals",
      summary(month.body),
      el("div", {class: "totals-row"}, empty ? el("p", {}, "No records match the filters.") : totalsTable(month.body), el("div", {}, el("h3", {}, "Cache"), cacheList)),
    ),
    section("By month", "numbers-month", chartsFor(month.body, BY_MONTH, currencies)),
    section("By day", "numbers-day", dayForm(state, showDays), days),
    section("By category", "numbers-category", chartsFor(category.body, BY_CATEGORY, currencies)),
  );
  await loadDays(days, state, cacheList, currencies);
}

export async function render(main, params) {
  const state = {values: readValues(params.query), days: null};
  const results = el("div", {class: "numbers-results"});
  const apply = (values) => {
    state.values = values;
    state.days = null;
    remember("numbers", values);
    load(results, state);
  };
  main.append(
    el("h1", {}, "Numbers"),
    el("p", {class: "lead"}, "Totals and charts over all records you may see, per currency: amounts in different currencies are never added together."),
    filterForm({prefix: "numbers", values: state.values, legend: "Filters (the same as GET /api/stats)", submitLabel: "Show numbers", onApply: apply}),
    results,
  );
  await load(results, state);
}
