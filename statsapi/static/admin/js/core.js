// The console's shared core: the session (tokens in this module's memory only), API calls,
// safe DOM building, and small widgets every page uses. No framework, no build step.
//
// Rules the pages rely on:
//  * every value from the API reaches the page as text (el() makes text nodes; nothing here
//    ever assigns innerHTML), so a category "<img src=x onerror=...>" shows as characters;
//  * tokens never leave this module's variables: no localStorage, sessionStorage or
//    cookies, so a reload asks to sign in again;
//  * an access token refused with 401 is refreshed once; when that fails too, the session
//    ends and the shell shows why (revoked, deactivated, role changed, expired).

const SESSION_OVER =
  "Your session has ended: your sign-in expired or was revoked, or your account or role " +
  "changed. Sign in again to continue.";

const state = {access: null, refresh: null, user: null, refreshing: null};
let sessionEnded = () => {};

// ---- errors -------------------------------------------------------------------------------

// Any non-2xx answer: the RFC 9457 problem the API sent (title, detail, type, errors).
export class ApiProblem extends Error {
  constructor(status, body, fallbackTitle = "") {
    const problem = body && typeof body === "object" ? body : {};
    const title = String(problem.title || fallbackTitle || `HTTP ${status}`);
    const detail = problem.detail == null ? "" : String(problem.detail);
    super(detail ? `${title}: ${detail}` : title);
    this.name = "ApiProblem";
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.type = String(problem.type || "about:blank");
    this.errors = problem.errors || null;
  }
}

// ---- session ------------------------------------------------------------------------------

// {id, username, role} of the signed-in user, or null.
export function session() {
  return state.user ? {...state.user} : null;
}

// The shell registers one callback: called with a message when the session ends by itself.
export function onSessionEnd(callback) {
  sessionEnded = callback;
}

function forget() {
  state.access = null;
  state.refresh = null;
  state.user = null;
}

function endSession(message) {
  const wasSignedIn = state.user !== null;
  forget();
  if (wasSignedIn) sessionEnded(message);
}

// POST /api/auth/login (the API's own limits and audit), then GET /api/auth/me.
export async function signIn(username, password) {
  forget();
  const answer = await send("POST", "/api/auth/login", {body: {username, password}});
  if (!answer.ok) throw new ApiProblem(answer.status, answer.body, "Sign-in failed");
  state.access = answer.body.access_token;
  state.refresh = answer.body.refresh_token;
  const me = await send("GET", "/api/auth/me", {token: state.access});
  if (!me.ok) {
    forget();
    throw new ApiProblem(me.status, me.body, "Sign-in failed");
  }
  state.user = {id: me.body.id, username: me.body.username, role: me.body.role};
  return session();
}

// POST /api/auth/logout revokes this sign-in's tokens; the memory is cleared either way.
export async function signOut() {
  const token = state.access;
  forget();
  if (token) {
    try {
      await send("POST", "/api/auth/logout", {token});
    } catch {
      // Offline: the tokens are gone from memory and expire on their own.
    }
  }
}

function refreshOnce() {
  if (!state.refreshing) {
    state.refreshing = (async () => {
      const answer = await send("POST", "/api/auth/refresh", {token: state.refresh});
      if (!answer.ok) {
        const problem = new ApiProblem(answer.status, answer.body, "Session ended");
        endSession(problem.detail ? `${SESSION_OVER} (${problem.detail})` : SESSION_OVER);
        throw problem;
      }
      state.access = answer.body.access_token;
      state.refresh = answer.body.refresh_token;
    })().finally(() => {
      state.refreshing = null;
    });
  }
  return state.refreshing;
}

// ---- API calls ----------------------------------------------------------------------------

// "/api/x" plus a query ({name: value} or URLSearchParams); empty values are left out.
export function apiUrl(path, query) {
  const url = new URL(path, window.location.origin);
  const pairs = query instanceof URLSearchParams ? query.entries() : Object.entries(query || {});
  for (const [name, value] of pairs) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.append(name, String(value));
  }
  return url.pathname + url.search;
}

async function send(method, path, {query, body, token, headers: extra} = {}) {
  const headers = {Accept: "application/json, application/problem+json", ...(extra || {})};
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = {method, headers, credentials: "omit", cache: "no-store", redirect: "error"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(apiUrl(path, query), init);
  } catch {
    throw new ApiProblem(0, {
      title: "Network error",
      detail: "The server could not be reached. Check the connection and try again.",
    });
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  return {status: response.status, ok: response.ok, body: parsed, headers: response.headers};
}

// {body, headers, status} of an API call with the signed-in user's token; refreshes once
// on 401; throws ApiProblem for any non-2xx. `headers` may add request headers (If-Match).
export async function apiResponse(method, path, {query, body, headers} = {}) {
  if (!state.access) {
    throw new ApiProblem(401, {title: "Signed out", detail: "Sign in to continue."});
  }
  const options = {query, body, headers};
  const used = state.access;
  let answer = await send(method, path, {...options, token: used});
  if (answer.status === 401 && state.refresh) {
    // A call that raced another one's refresh just retries with the token that came of it.
    if (state.access === used) await refreshOnce();
    answer = await send(method, path, {...options, token: state.access});
    if (answer.status === 401) endSession(SESSION_OVER);
  }
  if (!answer.ok) throw new ApiProblem(answer.status, answer.body, "Request failed");
  return {body: answer.status === 204 ? null : answer.body, headers: answer.headers, status: answer.status};
}

// The parsed JSON body (null for 204).
export async function api(method, path, options = {}) {
  return (await apiResponse(method, path, options)).body;
}

// ---- DOM ------------------------------------------------------------------------------------

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : String(value));
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// el("p", {class: "x", onclick: fn}, "text", otherNode): strings become text nodes, always.
export function el(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

// The same in the SVG namespace (charts).
export function svg(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// Empties a container and puts the given children in it.
export function replace(container, ...children) {
  container.replaceChildren();
  return build(container, {}, children);
}

function problemLines(errors, prefix = "") {
  if (errors === null || errors === undefined) return [];
  if (Array.isArray(errors)) return errors.map((message) => (prefix ? `${prefix}: ${message}` : String(message)));
  if (typeof errors !== "object") return [prefix ? `${prefix}: ${errors}` : String(errors)];
  // webargs nests field errors under where they came from ("json", "query"): not a field name.
  const locations = ["json", "query", "form", "_schema"];
  return Object.entries(errors).flatMap(([key, value]) => {
    if (locations.includes(key)) return problemLines(value, prefix);
    return problemLines(value, prefix ? `${prefix}.${key}` : key);
  });
}

// The problem's title and detail (and field errors), announced to screen readers.
export function problemBox(error) {
  // An ApiProblem, a page's own {title, detail}, or any Error (shown by its message).
  let problem = error;
  if (!(error instanceof ApiProblem)) {
    const plain = error instanceof Error ? {title: "Something went wrong", detail: error.message} : error;
    problem = new ApiProblem(0, plain && typeof plain === "object" ? plain : {title: String(error)});
  }
  const lines = problemLines(problem.errors);
  return el(
    "div",
    {class: "problem", role: "alert"},
    el("p", {class: "problem-title"}, problem.title),
    problem.detail ? el("p", {class: "problem-detail"}, problem.detail) : null,
    lines.length ? el("ul", {class: "problem-errors"}, lines.map((line) => el("li", {}, line))) : null,
  );
}

// A short success message in the page's live region.
let noticeTimer = null;
export function notify(message) {
  const notice = document.getElementById("notice");
  if (!notice) return;
  notice.textContent = message;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.textContent = "";
  }, 10000);
}

// A labelled control: <div class="field"><label for=id>text</label>control hint</div>.
let fieldCount = 0;
export function field(label, control, hint = "") {
  if (!control.id) control.id = `field-${++fieldCount}`;
  const hintNode = hint ? el("p", {class: "hint", id: `${control.id}-hint`}, hint) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return el("div", {class: "field"}, el("label", {for: control.id}, label), control, hintNode);
}

// A <select> from [value, label] pairs (or plain values).
export function select(attrs, options, selected = "") {
  return el(
    "select",
    attrs,
    options.map((option) => {
      const [value, label] = Array.isArray(option) ? option : [option, option];
      return el("option", {value, selected: String(value) === String(selected)}, label);
    }),
  );
}

// A table: columns are {label, value(row) -> text or Node, numeric?}.
export function table({caption, columns, rows, empty = "Nothing to show."}) {
  if (!rows.length) return el("p", {class: "empty"}, empty);
  const head = el("tr", {}, columns.map((c) => el("th", {scope: "col", class: c.numeric ? "num" : null}, c.label)));
  const body = rows.map((row) =>
    el("tr", {}, columns.map((c) => el("td", {class: c.numeric ? "num" : null}, c.value(row)))),
  );
  return el(
    "div",
    {class: "table-wrap"},
    el("table", {}, caption ? el("caption", {}, caption) : null, el("thead", {}, head), el("tbody", {}, body)),
  );
}

// A modal confirmation (native <dialog>: focus kept inside, Escape cancels). Resolves true
// only when the confirm button is pressed.
export function confirmDialog({title, body = [], confirmLabel = "Confirm", danger = false}) {
  return new Promise((resolve) => {
    const headingId = `dialog-${++fieldCount}`;
    const cancel = el("button", {type: "button", class: "secondary"}, "Cancel");
    const confirm = el("button", {type: "button", class: danger ? "danger" : "primary"}, confirmLabel);
    const dialog = el(
      "dialog",
      {class: "confirm", "aria-labelledby": headingId},
      el("h2", {id: headingId}, title),
      body,
      el("div", {class: "actions"}, cancel, confirm),
    );
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    cancel.addEventListener("click", () => close(false));
    confirm.addEventListener("click", () => close(true));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      close(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

// ---- formatting -----------------------------------------------------------------------------

// Amounts are decimal strings in the API: grouped for reading, never through a float.
export function formatMoney(amount, currency = "") {
  const text = String(amount);
  const parts = /^([+-]?)(\d+)(\.\d+)?$/.exec(text);
  if (!parts) return currency ? `${text} ${currency}` : text;
  const whole = parts[2].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const shown = `${parts[1] === "-" ? "-" : ""}${whole}${parts[3] || ""}`;
  return currency ? `${shown} ${currency}` : shown;
}

// "2026-03-14T09:27:05Z" -> "2026-03-14 09:27:05 UTC" (the API's times are UTC).
export function formatTime(stamp) {
  if (!stamp) return "";
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})/.exec(String(stamp));
  return match ? `${match[1]} ${match[2]} UTC` : String(stamp);
}

// ---- keyset pages -----------------------------------------------------------------------------

// Pages of a list the API serves as {items, next_cursor}: `load(cursor)` fetches one page
// (cursor null for the first), `show(items)` returns the Node to display. Returns
// {element, reload}; reload() starts again from the first page (e.g. new filters).
export function pager({load, show, label = "Results"}) {
  const results = el("div", {class: "pager-results", "aria-live": "polite"});
  const status = el("p", {class: "pager-status"});
  const previous = el("button", {type: "button", class: "secondary"}, "Previous page");
  const next = el("button", {type: "button", class: "secondary"}, "Next page");
  const element = el("section", {class: "pager", "aria-label": label}, results, el("div", {class: "pager-nav"}, previous, status, next));
  let cursors = [null];
  let nextCursor = null;

  async function open(index) {
    previous.disabled = next.disabled = true;
    status.textContent = "Loading…";
    try {
      const page = await load(cursors[index]);
      cursors = cursors.slice(0, index + 1);
      nextCursor = page.next_cursor || null;
      replace(results, show(page.items || []));
      status.textContent = `Page ${index + 1}${nextCursor ? "" : " (last)"}`;
      previous.disabled = index === 0;
      next.disabled = !nextCursor;
    } catch (error) {
      replace(results, problemBox(error));
      status.textContent = "";
      previous.disabled = index === 0;
    }
  }

  previous.addEventListener("click", () => open(Math.max(0, cursors.length - 2)));
  next.addEventListener("click", () => {
    cursors.push(nextCursor);
    open(cursors.length - 1);
  });
  return {
    element,
    reload: () => {
      cursors = [null];
      return open(0);
    },
  };
}

// The page size a view asked for in its route (#/users?limit=10), else `fallback`.
export function pageSize(params, fallback) {
  const asked = Number.parseInt((params && params.query && params.query.get("limit")) || "", 10);
  return asked >= 1 && asked <= 500 ? asked : fallback;
}

// ---- routing ----------------------------------------------------------------------------------

// The hash route: "#/records/123?currency=EUR" -> {path: ["records", "123"], query}.
export function currentRoute() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?", 2);
  return {path: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(search)};
}

// Go to another view: go(["records", 123], {currency: "EUR"}).
export function go(path, query = {}) {
  const parts = (Array.isArray(path) ? path : [path]).map((p) => encodeURIComponent(String(p)));
  const kept = Object.entries(query).filter(([, value]) => value !== undefined && value !== null && value !== "");
  const search = new URLSearchParams(kept.map(([name, value]) => [name, String(value)])).toString();
  window.location.hash = `#/${parts.join("/")}${search ? `?${search}` : ""}`;
}
