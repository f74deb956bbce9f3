// The console's entry: the sign-in screen, the role-based navigation and the hash router.
// Each view lives in its own module (js/pages/*.js, `export async function render(main,
// params)`), loaded with import() on first use so the first load stays small.

import {ApiProblem, currentRoute, el, field, onSessionEnd, problemBox, replace, session, signIn, signOut} from "./core.js";

const PAGES = {
  users: {label: "Users", roles: ["admin"], module: "./pages/users.js"},
  audit: {label: "Audit log", roles: ["admin"], module: "./pages/audit.js"},
  numbers: {label: "Numbers", roles: ["admin", "analyst"], module: "./pages/numbers.js"},
  records: {label: "Records", roles: ["admin", "analyst"], module: "./pages/records.js"},
};
const CONSOLE_ROLES = ["admin", "analyst"];
const NOT_FOR_YOU = "The admin console is for admins and analysts. Your account has the role “user”: use the API instead.";

const mainArea = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let view = null; // the current page's container: a page that finishes late writes into a detached one

function allowed(role) {
  return Object.entries(PAGES).filter(([, page]) => page.roles.includes(role));
}

function freshView() {
  view = el("div", {class: "view"});
  replace(mainArea, view);
  return view;
}

function focusHeading() {
  const heading = view && view.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({preventScroll: false});
  }
}

// ---- signed out -------------------------------------------------------------------------------

function showSignIn(message = "") {
  nav.hidden = true;
  replace(nav);
  replace(who);
  const container = freshView();
  const username = el("input", {name: "username", autocomplete: "username", required: true, maxlength: "256"});
  const password = el("input", {name: "password", type: "password", autocomplete: "current-password", required: true, maxlength: "1024"});
  const submit = el("button", {type: "submit", class: "primary"}, "Sign in");
  const feedback = el("div", {class: "feedback"});
  const form = el(
    "form",
    {class: "signin", novalidate: true, "aria-labelledby": "signin-title"},
    el("h1", {id: "signin-title"}, "Sign in"),
    message ? el("p", {class: "message", role: "alert"}, message) : null,
    field("Username", username),
    field("Password", password),
    submit,
    feedback,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    attemptSignIn(username.value.trim(), password.value, {submit, feedback, password});
  });
  replace(container, el("section", {class: "signin-wrap"}, form));
  username.focus();
}

async function attemptSignIn(username, password, {submit, feedback, password: passwordInput}) {
  replace(feedback);
  if (!username || !password) {
    replace(feedback, problemBox(new ApiProblem(0, {title: "Missing details", detail: "Enter your username and password."})));
    return;
  }
  submit.disabled = true;
  try {
    const me = await signIn(username, password);
    if (!CONSOLE_ROLES.includes(me.role)) {
      await signOut();
      showSignIn(NOT_FOR_YOU);
      return;
    }
    route();
  } catch (error) {
    passwordInput.value = "";
    replace(feedback, problemBox(error));
    submit.disabled = false;
  }
}

// ---- signed in --------------------------------------------------------------------------------

function showChrome(me, current) {
  nav.hidden = false;
  const links = allowed(me.role).map(([name, page]) =>
    el("li", {}, el("a", {href: `#/${name}`, "aria-current": name === current ? "page" : false}, page.label)),
  );
  replace(nav, el("ul", {}, links));
  const out = el("button", {type: "button", class: "secondary"}, "Sign out");
  out.addEventListener("click", async () => {
    out.disabled = true;
    await signOut();
    showSignIn("You are signed out.");
  });
  replace(who, el("span", {class: "who-name"}, `${me.username} (${me.role})`), out);
}

async function route() {
  const me = session();
  if (!me) {
    showSignIn();
    return;
  }
  const {path, query} = currentRoute();
  const pages = allowed(me.role);
  const name = path[0] || pages[0][0];
  showChrome(me, name);
  const container = freshView();
  const page = PAGES[name];
  if (!page) {
    replace(container, el("h1", {}, "Not found"), el("p", {}, "There is no such page in the console."));
  } else if (!page.roles.includes(me.role)) {
    replace(container, el("h1", {}, page.label), el("p", {}, `This page is for admins; your role is ${me.role}.`));
  } else {
    await renderPage(page, container, {path: path.length ? path : [name], query});
  }
  if (view === container) focusHeading();
}

async function renderPage(page, container, params) {
  let module;
  try {
    module = await import(page.module);
  } catch (error) {
    replace(
      container,
      el("h1", {}, page.label),
      problemBox(new ApiProblem(0, {title: "This page could not be loaded", detail: `Reload to try again (${error.message}).`})),
    );
    return;
  }
  try {
    await module.render(container, params);
  } catch (error) {
    if (view === container) container.append(problemBox(error));
  }
}

onSessionEnd((message) => showSignIn(message));
window.addEventListener("hashchange", () => route());
route();
