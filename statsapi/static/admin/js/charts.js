// Bar charts drawn as SVG with DOM calls: no library, nothing parsed from strings, so a
// category or any other API value can only ever become text.
//
// A chart is a <figure>: caption (what, currency, unit), the SVG (role="img", labelled by
// the caption and described by a one-line summary), a legend when there are several
// series, and the exact figures in a table. Values are numbers only for geometry; every
// figure shown in text is the API's own decimal string.

import {el, svg} from "./core.js";

// Series colours: each at least 3:1 against the white background (WCAG 1.4.11) and
// distinguishable from its neighbours; beyond eight currencies they repeat, and the
// legend and the table still tell them apart.
export const PALETTE = ["#1f5fa8", "#b34700", "#2e7d32", "#7b1fa2", "#c62828", "#00695c", "#5d4037", "#37474f"];

const COLUMN = {width: 560, height: 280, top: 14, right: 12, bottom: 46, left: 70};
const ROWS = {width: 560, top: 8, right: 16, bottom: 40, left: 150, band: 16, gap: 8};
const LABEL_CHARS = 22; // category labels beyond this are cut (the full text is in <title> and the table)
const COMPACT = new Intl.NumberFormat("en", {notation: "compact", maximumFractionDigits: 2});

let serial = 0;

/** "Nice" axis bounds and ticks covering [low, high] and always zero (bars start there). */
export function niceScale(low, high, count = 5) {
  const lo = Math.min(0, low);
  const hi = Math.max(0, high);
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw) || 10 * magnitude;
  const min = Math.floor(lo / step) * step;
  const max = Math.max(Math.ceil(hi / step) * step, min + step);
  const ticks = [];
  for (let v = min; v <= max + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return {min, max, ticks};
}

export function tickLabel(value) {
  return COMPACT.format(value);
}

function seriesExtent(series) {
  const values = series.flatMap((s) => [...s.values.values()].map((v) => v.value));
  return values.length ? [Math.min(...values), Math.max(...values)] : [0, 0];
}

function text(x, y, content, attrs = {}, ...more) {
  return svg("text", {x, y, ...attrs}, content, ...more);
}

/** A bar's length from the zero line: at least 1 px, so a small non-zero figure stays visible. */
function length(from, to, value) {
  const size = Math.abs(to - from);
  return value ? Math.max(size, 1) : size;
}

/** One bar; its <title> carries the exact figure (a tooltip on hover). */
function bar(rect, s, key, figure, label) {
  return svg(
    "rect",
    {class: "bar", x: rect.x, y: rect.y, width: rect.w, height: rect.h, "data-key": key, "data-series": s.name},
    svg("title", {}, `${label}, ${s.name}: ${figure.text}`),
  );
}

function legend(series) {
  if (series.length < 2) return null;
  return el(
    "ul",
    {class: "chart-legend"},
    ...series.map((s) => {
      const swatch = svg("svg", {class: "swatch", viewBox: "0 0 10 10", width: 10, height: 10, "aria-hidden": "true"});
      swatch.append(svg("rect", {width: 10, height: 10, fill: s.color}));
      return el("li", {}, swatch, s.name);
    }),
  );
}

/** The exact figures behind a chart: one row a key, one column a series. */
function figuresTable(spec) {
  const head = el("tr", {}, el("th", {scope: "col"}, spec.keyTitle), ...spec.series.map((s) => el("th", {scope: "col"}, `${s.name} (${spec.unit(s)})`)));
  const rows = (spec.tableKeys || spec.keys).map((key) =>
    el(
      "tr",
      {},
      el("th", {scope: "row"}, spec.keyLabel(key)),
      ...spec.series.map((s) => el("td", {class: "num"}, s.values.has(key) ? s.values.get(key).text : "–")),
    ),
  );
  return el(
    "details",
    {class: "chart-figures"},
    el("summary", {}, `Figures: ${spec.title}`),
    el("table", {}, el("caption", {}, spec.title), el("thead", {}, head), el("tbody", {}, ...rows)),
  );
}

function frame(spec, drawing, height, width) {
  const id = `chart-${++serial}`;
  const caption = el("figcaption", {id: `${id}-title`}, spec.title);
  const summary = `${spec.keys.length} ${spec.keyNoun}; ${spec.series.map((s) => s.name).join(", ")}. The figures are in the table below.`;
  const desc = svg("desc", {id: `${id}-desc`}, summary);
  const root = svg(
    "svg",
    {viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-desc`, class: "chart-svg", "data-chart": spec.name},
    desc,
    ...drawing,
  );
  return el("figure", {class: "chart", "data-chart": spec.name}, caption, root, legend(spec.series), figuresTable(spec));
}

function yAxis(scale, toY, box, unitTitle) {
  const parts = scale.ticks.map((t) =>
    svg(
      "g",
      {class: t === 0 ? "tick zero" : "tick"},
      svg("line", {x1: box.left, x2: box.width - box.right, y1: toY(t), y2: toY(t)}),
      text(box.left - 6, toY(t) + 4, tickLabel(t), {"text-anchor": "end"}),
    ),
  );
  const middle = (box.top + box.height - box.bottom) / 2;
  parts.push(text(14, middle, unitTitle, {class: "axis-title", transform: `rotate(-90 14 ${middle})`, "text-anchor": "middle"}));
  return parts;
}

/** Vertical bars along a time or category axis, grouped side by side per series. */
export function columnChart(spec) {
  const box = COLUMN;
  const plotW = box.width - box.left - box.right;
  const bottom = box.height - box.bottom;
  const scale = niceScale(...seriesExtent(spec.series));
  const toY = (v) => box.top + ((scale.max - v) / (scale.max - scale.min)) * (bottom - box.top);
  const band = plotW / Math.max(spec.keys.length, 1);
  const barW = (band * 0.8) / spec.series.length;
  const drawing = yAxis(scale, toY, box, spec.axisTitle);
  spec.series.forEach((s, si) => {
    const group = svg("g", {class: "series", fill: s.color, "data-series": s.name});
    spec.keys.forEach((key, ki) => {
      const figure = s.values.get(key);
      if (!figure) return;
      const y0 = toY(0);
      const y1 = toY(figure.value);
      const h = length(y0, y1, figure.value);
      const rect = {x: box.left + ki * band + band * 0.1 + si * barW, y: figure.value < 0 ? y0 : y0 - h, w: Math.max(barW - 1, 1), h};
      group.append(bar(rect, s, key, figure, spec.keyLabel(key)));
    });
    drawing.push(group);
  });
  const every = Math.ceil(spec.keys.length / Math.floor(plotW / 64));
  spec.keys.forEach((key, ki) => {
    if (ki % every === 0) drawing.push(text(box.left + (ki + 0.5) * band, bottom + 16, spec.keyLabel(key, "short"), {"text-anchor": "middle", class: "x-label"}));
  });
  drawing.push(text(box.left + plotW / 2, box.height - 6, spec.keyTitle, {"text-anchor": "middle", class: "axis-title"}));
  return frame(spec, drawing, box.height, box.width);
}

function clipped(label) {
  return label.length > LABEL_CHARS ? `${label.slice(0, LABEL_CHARS - 1)}…` : label;
}

/** Horizontal bars, one row per key (categories read better that way), grouped per series. */
export function rowChart(spec) {
  const box = ROWS;
  const rowH = spec.series.length * box.band + box.gap;
  const height = box.top + spec.keys.length * rowH + box.bottom;
  const plotW = box.width - box.left - box.right;
  const scale = niceScale(...seriesExtent(spec.series));
  const toX = (v) => box.left + ((v - scale.min) / (scale.max - scale.min)) * plotW;
  const bottom = height - box.bottom;
  const drawing = scale.ticks.map((t) =>
    svg(
      "g",
      {class: t === 0 ? "tick zero" : "tick"},
      svg("line", {x1: toX(t), x2: toX(t), y1: box.top, y2: bottom}),
      text(toX(t), bottom + 16, tickLabel(t), {"text-anchor": "middle"}),
    ),
  );
  spec.keys.forEach((key, ki) => {
    const label = spec.keyLabel(key);
    const y = box.top + ki * rowH + box.gap / 2;
    drawing.push(text(box.left - 6, y + (rowH - box.gap) / 2 + 4, clipped(label), {"text-anchor": "end", class: "y-label"}, svg("title", {}, label)));
  });
  spec.series.forEach((s, si) => {
    const group = svg("g", {class: "series", fill: s.color, "data-series": s.name});
    spec.keys.forEach((key, ki) => {
      const figure = s.values.get(key);
      if (!figure) return;
      const x0 = toX(0);
      const x1 = toX(figure.value);
      const w = length(x0, x1, figure.value);
      const rect = {x: figure.value < 0 ? x0 - w : x0, y: box.top + ki * rowH + box.gap / 2 + si * box.band, w, h: box.band - 2};
      group.append(bar(rect, s, key, figure, spec.keyLabel(key)));
    });
    drawing.push(group);
  });
  drawing.push(text(box.left + plotW / 2, height - 6, spec.axisTitle, {"text-anchor": "middle", class: "axis-title"}));
  return frame(spec, drawing, height, box.width);
}
