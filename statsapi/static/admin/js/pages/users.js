// Placeholder: the users page is being written.
import {el, replace} from "../core.js";

export async function render(main) {
  replace(main, el("h1", {}, "Users"), el("p", {}, "Coming soon."));
}
