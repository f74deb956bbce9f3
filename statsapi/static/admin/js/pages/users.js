// Users (admins only): find users, create one, and for one user change the role (with a
// reason, confirmed), deactivate or reactivate, reset the password, revoke every token.
// Every action is one call to /api/admin/...; a refusal shows the API's problem as is.

import {
  api,
  confirmDialog,
  el,
  field,
  formatTime,
  notify,
  pageSize,
  pager,
  problemBox,
  replace,
  select,
  session,
  table,
} from "../core.js";

const ROLES = ["user", "analyst", "admin"];
const USERS = "/api/admin/users";
const PASSWORD_HINT = "12 to 128 characters, not only spaces, not the username.";

function facts(pairs) {
  return el("dl", {class: "facts"}, pairs.map(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

function status(user) {
  return el("span", {class: ["badge", user.is_active ? "active" : "inactive"]}, user.is_active ? "Active" : "Deactivated");
}

// Runs one action: its problem (if any) replaces `feedback`; true when it went through.
async function attempt(feedback, action) {
  replace(feedback);
  try {
    await action();
    return true;
  } catch (error) {
    replace(feedback, problemBox(error));
    return false;
  }
}

// ---- the list -------------------------------------------------------------------------------

function filtersForm(onApply) {
  const username = el("input", {type: "search", name: "username", maxlength: "64", autocomplete: "off"});
  const role = select({name: "role"}, [["", "Any role"], ...ROLES]);
  const active = select({name: "is_active"}, [["", "Active and deactivated"], ["true", "Active only"], ["false", "Deactivated only"]]);
  const form = el(
    "form",
    {class: "filters", role: "search", "aria-label": "Filter users"},
    field("Username contains", username),
    field("Role", role),
    field("Status", active),
    el("div", {class: "actions"}, el("button", {type: "submit", class: "primary"}, "Apply filters")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onApply({username: username.value.trim(), role: role.value, is_active: active.value});
  });
  return form;
}

function usersTable(users, onManage) {
  return table({
    caption: "Users, newest first",
    empty: "No user matches these filters.",
    rows: users,
    columns: [
      {label: "Username", value: (u) => u.username},
      {label: "Role", value: (u) => u.role},
      {label: "Status", value: status},
      {label: "Created", value: (u) => formatTime(u.created_at)},
      {
        label: "Actions",
        value: (u) =>
          el("button", {type: "button", class: "secondary", onclick: () => onManage(u.id)}, "Manage ", el("span", {class: "visually-hidden"}, u.username)),
      },
    ],
  });
}

// ---- create -----------------------------------------------------------------------------------

function createForm(onCreated) {
  const username = el("input", {name: "new-username", required: true, maxlength: "64", autocomplete: "off"});
  const password = el("input", {name: "new-password", type: "password", required: true, maxlength: "128", autocomplete: "new-password"});
  const role = select({name: "new-role"}, ROLES, "user");
  const feedback = el("div", {class: "feedback"});
  const form = el(
    "form",
    {class: "panel", "aria-labelledby": "create-user-title", novalidate: true},
    el("h2", {id: "create-user-title"}, "Create a user"),
    field("Username", username, "3 to 64 characters: letters, digits, _ . - (stored in lower case)."),
    field("Password", password, PASSWORD_HINT),
    field("Role", role),
    el("button", {type: "submit", class: "primary"}, "Create user"),
    feedback,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {username: username.value.trim(), password: password.value, role: role.value};
    let created = null;
    if (await attempt(feedback, async () => (created = await api("POST", USERS, {body})))) {
      form.reset();
      notify(`Created user ${created.username} (${created.role}).`);
      onCreated(created);
    }
  });
  return form;
}

// ---- one user ---------------------------------------------------------------------------------

function roleSection(user, done) {
  const feedback = el("div", {class: "feedback"});
  let chosen = null;
  const choices = ROLES.filter((r) => r !== user.role).map((role) =>
    el("button", {type: "button", class: "secondary", "aria-pressed": "false", "data-role": role}, role),
  );
  for (const button of choices) {
    button.addEventListener("click", () => {
      chosen = button.dataset.role;
      for (const other of choices) other.setAttribute("aria-pressed", String(other === button));
    });
  }
  const reason = el("textarea", {name: "reason", required: true, maxlength: "500"});
  const review = el("button", {type: "button", class: "primary"}, "Review role change");
  review.addEventListener("click", () => changeRole(user, chosen, reason.value.trim(), feedback, done));
  return el(
    "section",
    {class: "panel", "aria-labelledby": "role-title"},
    el("h2", {id: "role-title"}, "Change the role"),
    el("p", {}, `Current role: ${user.role}.`),
    el("fieldset", {}, el("legend", {}, "New role"), el("div", {class: "actions"}, choices)),
    field("Reason (required, kept in the audit log)", reason),
    review,
    feedback,
  );
}

async function changeRole(user, role, reason, feedback, done) {
  replace(feedback);
  if (!role || !reason) {
    const missing = !role ? "Choose the new role." : "Give a reason: it is kept in the audit log.";
    replace(feedback, problemBox({title: "Not ready", detail: missing}));
    return;
  }
  const confirmed = await confirmDialog({
    title: "Change this user's role?",
    confirmLabel: "Change role",
    body: [
      facts([["User", user.username], ["From", user.role], ["To", role], ["Reason", reason]]),
      el("p", {}, "Every token the user holds stops working; they sign in again with the new role."),
    ],
  });
  const body = {role, reason};
  if (confirmed && (await attempt(feedback, () => api("PUT", `${USERS}/${user.id}/role`, {body})))) {
    done(`${user.username} is now ${role}.`);
  }
}

function accessSection(user, done) {
  const feedback = el("div", {class: "feedback"});
  const toggle = el("button", {type: "button", class: user.is_active ? "danger" : "primary"}, user.is_active ? "Deactivate" : "Reactivate");
  toggle.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: user.is_active ? `Deactivate ${user.username}?` : `Reactivate ${user.username}?`,
      body: el("p", {}, user.is_active ? "They are signed out everywhere and cannot sign in until reactivated." : "They can sign in again."),
      confirmLabel: user.is_active ? "Deactivate" : "Reactivate",
      danger: user.is_active,
    });
    const body = {is_active: !user.is_active};
    if (ok && (await attempt(feedback, () => api("PATCH", `${USERS}/${user.id}`, {body})))) {
      done(`${user.username} is ${user.is_active ? "deactivated" : "active again"}.`);
    }
  });
  const revoke = el("button", {type: "button", class: "secondary"}, "Revoke all tokens");
  revoke.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: `Sign ${user.username} out everywhere?`,
      body: el("p", {}, "Every access and refresh token issued to them so far stops working."),
      confirmLabel: "Revoke all tokens",
      danger: true,
    });
    if (ok && (await attempt(feedback, () => api("POST", `${USERS}/${user.id}/revoke-tokens`)))) {
      done(`Every token of ${user.username} is revoked.`);
    }
  });
  return el(
    "section",
    {class: "panel", "aria-labelledby": "access-title"},
    el("h2", {id: "access-title"}, "Access"),
    el("div", {class: "actions"}, toggle, revoke),
    feedback,
  );
}

function passwordSection(user, done) {
  const feedback = el("div", {class: "feedback"});
  const password = el("input", {type: "password", name: "reset-password", maxlength: "128", autocomplete: "new-password"});
  const form = el(
    "form",
    {class: "panel", "aria-labelledby": "password-title", novalidate: true},
    el("h2", {id: "password-title"}, "Reset the password"),
    // Whose password this is, for password managers (never shown, never focused).
    el("input", {type: "text", name: "username", autocomplete: "username", value: user.username, hidden: true, readonly: true}),
    field("New password", password, PASSWORD_HINT),
    el("button", {type: "submit", class: "secondary"}, "Reset password"),
    feedback,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ok = await confirmDialog({
      title: `Reset the password of ${user.username}?`,
      body: el("p", {}, "They are signed out everywhere; give them the new password by a safe channel."),
      confirmLabel: "Reset password",
    });
    const body = {password: password.value};
    if (ok && (await attempt(feedback, () => api("PATCH", `${USERS}/${user.id}`, {body})))) {
      password.value = "";
      done(`The password of ${user.username} is reset.`);
    }
  });
  return form;
}

async function showUser(area, userId, afterChange) {
  replace(area, el("p", {class: "muted"}, "Loading…"));
  let user;
  try {
    user = await api("GET", `${USERS}/${userId}`);
  } catch (error) {
    replace(area, problemBox(error));
    return;
  }
  const done = (message) => {
    notify(message);
    afterChange(user.id);
  };
  const me = session();
  const heading = el("h2", {tabindex: "-1", id: "manage-title"}, `Manage ${user.username}`);
  replace(
    area,
    el(
      "section",
      {class: "manage", "aria-labelledby": "manage-title"},
      heading,
      facts([["Role", user.role], ["Status", status(user)], ["Created", formatTime(user.created_at)], ["Updated", formatTime(user.updated_at)]]),
      el("p", {}, el("a", {href: `#/audit?target=user:${user.id}`}, `Audit events of ${user.username}`)),
      me && me.id === user.id ? el("p", {class: "hint"}, "This is you: a change to your own role or access signs you out.") : null,
      roleSection(user, done),
      accessSection(user, done),
      passwordSection(user, done),
    ),
  );
  heading.focus();
}

// ---- the page -----------------------------------------------------------------------------------

export async function render(main, params) {
  const limit = pageSize(params, 25);
  let filters = {};
  const manage = el("div", {class: "manage-area"});
  const list = pager({
    label: "Users",
    load: (cursor) => api("GET", USERS, {query: {...filters, limit, cursor}}),
    show: (users) => usersTable(users, (id) => showUser(manage, id, refresh)),
  });
  async function refresh(userId) {
    await list.reload();
    if (userId) await showUser(manage, userId, refresh);
  }
  replace(
    main,
    el("h1", {}, "Users"),
    el(
      "div",
      {class: "split"},
      el(
        "div",
        {},
        filtersForm((chosen) => {
          filters = chosen;
          list.reload();
        }),
        list.element,
        manage,
      ),
      createForm(() => list.reload()),
    ),
  );
  await list.reload();
}
