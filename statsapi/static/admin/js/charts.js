// Bar charts drawn as SVG with DOM calls: no library, nothing parsed from strings, so a
// category or any other API value can only ever become text.
//
// A chart is a <figure>: a caption (what, which currency, which unit), the SVG
// (role="img", labelled by the caption, described by a one-line summary), a legend when
// there are several series, and the exact figures in a table (the text alternative).
// Numbers only size the bars; every figure shown as text is the API's decimal string.
//
// A chart spec: {name, title, axisTitle, keyTitle, keyNoun, keys, tableKeys?, keyLabel(key,
// form), unit(series), series: [{name, color, values: Map(key -> {value, text})}]}.

import {el, svg} from "./core.js";

// Series colours: each at least 3:1 against white (WCAG 1.4.11) and apart from its
// neighbours; past eight currencies they repeat, and the legend and table still tell.
export const PALETTE = ["#1f5fa8", "#b34700", "#2e7d32", "#7b1fa2", "#c62828", "#00695c", "#5d4037", "#37474f"];

// Drawing units of the viewBox; the SVG scales to its column (about 1:1 on a laptop).
const COLUMN = {width: 560, height: 280, top: 14, right: 12, bottom: 46, left: 70};
const ROWS = {width: 560, top: 8, right: 16, bottom: 40, left: 150, band: 16, gap: 8};
const LABEL_GAP = 64; // x-axis labels at least this far apart
const LABEL_CHARS = 22; // longer row labels are cut (the full text is in <title> and the table)
const COMPACT = new Intl.NumberFormat("en", {notation: "compact", maximumFractionDigits: 2});

let serial = 0;

/** "Nice" axis bounds and ticks covering [low, high], and zero (bars start there). */
export function niceScale(low, high, count = 5) {
  const lo = Math.min(0, low);
  const hi = Math.max(0, high);
  const raw = (hi - lo || 1) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw);
  const min = Math.floor(lo / step) * step;
  const max = Math.max(Math.ceil(hi / step) * step, min + step);
  const ticks = [];
  for (let v = min; v <= max + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return {min, max, ticks};
}

function seriesExtent(series) {
  const values = series.flatMap((s) => [...s.values.values()].map((v) => v.value));
  return values.length ? [Math.min(...values), Math.max(...values)] : [0, 0];
}

function text(x, y, content, attrs = {}, ...more) {
  return svg("text", {x, y, ...attrs}, content, ...more);
}

/** A bar's length from the zero line: at least 1 unit, so a small non-zero figure shows. */
function length(from, to, value) {
  const size = Math.abs(to - from);
  return value ? Math.max(size, 1) : size;
}

/** One <g> of bars a series; `place(figure, seriesIndex, keyIndex)` gives a bar's box. The
 * bar's <title> (a tooltip) carries the exact figure. */
function seriesBars(spec, place) {
  return spec.series.map((s, si) => {
    const group = svg("g", {class: "series", fill: s.color, "data-series": s.name});
    spec.keys.forEach((key, ki) => {
      const figure = s.values.get(key);
      if (!figure) return;
      const box = place(figure, si, ki);
      const tip = svg("title", {}, `${spec.keyLabel(key)}, ${s.name}: ${figure.text}`);
      const size = {x: box.x, y: box.y, width: box.w, height: box.h};
      group.append(svg("rect", {class: "bar", ...size, "data-key": key, "data-series": s.name}, tip));
    });
    return group;
  });
}

function legend(series) {
  if (series.length < 2) return null;
  const item = (s) => {
    const swatch = svg("svg", {class: "swatch", viewBox: "0 0 10 10", width: 10, height: 10, "aria-hidden": "true"});
    swatch.append(svg("rect", {width: 10, height: 10, fill: s.color}));
    return el("li", {}, swatch, s.name);
  };
  return el("ul", {class: "chart-legend"}, series.map(item));
}

/** The exact figures behind a chart: a row a key, a column a series. */
function figuresTable(spec) {
  const columns = spec.series.map((s) => el("th", {scope: "col"}, `${s.name} (${spec.unit(s)})`));
  const cell = (s, key) => el("td", {class: "num"}, s.values.has(key) ? s.values.get(key).text : "–");
  const rows = (spec.tableKeys || spec.keys).map((key) =>
    el("tr", {}, el("th", {scope: "row"}, spec.keyLabel(key)), spec.series.map((s) => cell(s, key))),
  );
  return el(
    "details",
    {class: "chart-figures"},
    el("summary", {}, `Figures: ${spec.title}`),
    el(
      "table",
      {},
      el("caption", {}, spec.title),
      el("thead", {}, el("tr", {}, el("th", {scope: "col"}, spec.keyTitle), columns)),
      el("tbody", {}, rows),
    ),
  );
}

function frame(spec, drawing, width, height) {
  const id = `chart-${++serial}`;
  const names = spec.series.map((s) => s.name).join(", ");
  const summary = `${spec.keys.length} ${spec.keyNoun}; ${names}. The figures are in the table below.`;
  const root = svg(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": `${id}-title`,
      "aria-describedby": `${id}-desc`,
      class: "chart-svg",
    },
    svg("desc", {id: `${id}-desc`}, summary),
    drawing,
  );
  return el(
    "figure",
    {class: "chart", "data-chart": spec.name},
    el("figcaption", {id: `${id}-title`}, spec.title),
    root,
    legend(spec.series),
    figuresTable(spec),
  );
}

function gridLine(value, line, label) {
  return svg("g", {class: value === 0 ? "tick zero" : "tick"}, svg("line", line), label);
}

/** Vertical bars along a time axis, the series of a period side by side. */
export function columnChart(spec) {
  const box = COLUMN;
  const plotW = box.width - box.left - box.right;
  const bottom = box.height - box.bottom;
  const scale = niceScale(...seriesExtent(spec.series));
  const toY = (v) => box.top + ((scale.max - v) / (scale.max - scale.min)) * (bottom - box.top);
  const band = plotW / Math.max(spec.keys.length, 1);
  const barW = (band * 0.8) / spec.series.length;
  const drawing = scale.ticks.map((t) =>
    gridLine(
      t,
      {x1: box.left, x2: box.width - box.right, y1: toY(t), y2: toY(t)},
      text(box.left - 6, toY(t) + 4, COMPACT.format(t), {"text-anchor": "end"}),
    ),
  );
  const middle = (box.top + bottom) / 2;
  const turned = {class: "axis-title", transform: `rotate(-90 14 ${middle})`, "text-anchor": "middle"};
  drawing.push(text(14, middle, spec.axisTitle, turned));
  drawing.push(
    ...seriesBars(spec, (figure, si, ki) => {
      const h = length(toY(0), toY(figure.value), figure.value);
      const x = box.left + ki * band + band * 0.1 + si * barW;
      return {x, y: figure.value < 0 ? toY(0) : toY(0) - h, w: Math.max(barW - 1, 1), h};
    }),
  );
  const every = Math.ceil(spec.keys.length / Math.floor(plotW / LABEL_GAP));
  spec.keys.forEach((key, ki) => {
    if (ki % every) return;
    const label = spec.keyLabel(key, "short");
    drawing.push(text(box.left + (ki + 0.5) * band, bottom + 16, label, {"text-anchor": "middle"}));
  });
  const centre = box.left + plotW / 2;
  drawing.push(text(centre, box.height - 6, spec.keyTitle, {"text-anchor": "middle", class: "axis-title"}));
  return frame(spec, drawing, box.width, box.height);
}

function clipped(label) {
  return label.length > LABEL_CHARS ? `${label.slice(0, LABEL_CHARS - 1)}…` : label;
}

/** Horizontal bars, a row a key (long category names read better so), series stacked
 * one under the other within a row. */
export function rowChart(spec) {
  const box = ROWS;
  const rowH = spec.series.length * box.band + box.gap;
  const height = box.top + spec.keys.length * rowH + box.bottom;
  const bottom = height - box.bottom;
  const plotW = box.width - box.left - box.right;
  const scale = niceScale(...seriesExtent(spec.series));
  const toX = (v) => box.left + ((v - scale.min) / (scale.max - scale.min)) * plotW;
  const drawing = scale.ticks.map((t) =>
    gridLine(
      t,
      {x1: toX(t), x2: toX(t), y1: box.top, y2: bottom},
      text(toX(t), bottom + 16, COMPACT.format(t), {"text-anchor": "middle"}),
    ),
  );
  spec.keys.forEach((key, ki) => {
    const label = spec.keyLabel(key);
    const y = box.top + ki * rowH + rowH / 2 + 4;
    drawing.push(text(box.left - 6, y, clipped(label), {"text-anchor": "end"}, svg("title", {}, label)));
  });
  drawing.push(
    ...seriesBars(spec, (figure, si, ki) => {
      const w = length(toX(0), toX(figure.value), figure.value);
      const y = box.top + ki * rowH + box.gap / 2 + si * box.band;
      return {x: figure.value < 0 ? toX(0) - w : toX(0), y, w, h: box.band - 2};
    }),
  );
  const centre = box.left + plotW / 2;
  drawing.push(text(centre, height - 6, spec.axisTitle, {"text-anchor": "middle", class: "axis-title"}));
  return frame(spec, drawing, box.width, height);
}
