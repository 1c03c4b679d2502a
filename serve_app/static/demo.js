// rayrec demo page: plain JavaScript against the HTTP API of the same server (no build step, nothing external).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const EVENTS = ["like", "click", "skip", "dislike"];
  const HISTORY_SHOWN = 15;
  const HEALTH_EVERY_MS = 5000; // how often the page asks which model serves (a live swap shows within this)
  const SWAP_RECORD_RETRY_MS = 1000; // after a model change without its swap's record yet (a swap ending)
  const LABELS = { history: "rated 4-5", like: "liked", click: "clicked", purchase: "purchased", skip: "skipped",
                   dislike: "disliked" };
  // Where the app is mounted (its Serve route prefix; "" at the root): every call goes under it.
  const ROOT = document.querySelector('meta[name="rayrec-root"]').content;
  const state = { user: null, who: "", list: null, seq: 0, busy: false, renders: 0, titles: new Map(),
                  categoriesLoaded: false, model: null };

  // ----- the API ---------------------------------------------------------------------------------------------
  async function api(method, path, body, { allow404 = false } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    const key = $("api-key").value.trim();
    if (key) headers.authorization = "Bearer " + key;
    let resp;
    try {
      resp = await fetch(ROOT + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new Error("The rayrec server cannot be reached (it may be restarting): try again in a few seconds.");
    }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (err) { data = null; }
    if (resp.status === 404 && allow404) return null;
    if (!resp.ok) {
      let detail = data && data.detail !== undefined ? data.detail : (text || resp.statusText);
      if (Array.isArray(detail)) detail = detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + d.msg).join("; ");
      let hint = "";
      if (resp.status === 401) hint = " Enter the server's API key under \"API key\".";
      else if (resp.status >= 500) hint = " The service may be restarting: try again in a few seconds.";
      throw new Error(`${method} ${path.split("?")[0]} failed (${resp.status}): ${detail}.${hint}`);
    }
    return data;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    box.scrollIntoView({ block: "nearest" }); // on a phone the message may be far above the pressed button
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("data-") || name.startsWith("aria-")) node.setAttribute(name, value);
      else node[name] = value;
    }
    node.append(...children);
    return node;
  }

  function remember(item) {
    if (item && item.item_id !== undefined) state.titles.set(item.item_id, item.title || item.item_id);
  }

  async function titlesOf(ids) {
    const missing = [...new Set(ids)].filter((id) => !state.titles.has(id));
    if (missing.length) {  // one call for all of them (GET /items?id=...&id=...)
      const query = missing.map((id) => "id=" + encodeURIComponent(id)).join("&");
      const found = await api("GET", `/items?${query}&embedding=false`);
      found.items.forEach(remember);
      found.unknown.forEach((id) => state.titles.set(id, `${id} (deleted)`));
    }
    return ids.map((id) => state.titles.get(id));
  }

  // ----- rendering -------------------------------------------------------------------------------------------
  const MOVES = { rose: "rose", fell: "fell", entered: "entered the list", same: "" };

  function renderList(rec, user) {
    const before = state.list === null ? null : new Map(state.list.map((id, i) => [id, i + 1]));
    const counts = { rose: 0, fell: 0, entered: 0 };
    const rows = rec.items.map((item, i) => {
      remember(item);
      const rank = i + 1;
      let move = "same", label = "";
      if (before !== null) {
        const was = before.get(item.item_id);
        if (was === undefined) { move = "entered"; label = "new"; }
        else if (was > rank) { move = "rose"; label = `\u25B2 ${was - rank}`; }
        else if (was < rank) { move = "fell"; label = `\u25BC ${rank - was}`; }
        else label = "=";
        if (move in counts) counts[move] += 1;
      }
      const title = item.title || item.item_id;
      const detail = [item.category, item.genres && item.genres !== item.category ? item.genres : null,
                      `score ${item.score.toFixed(3)}`].filter(Boolean).join(" \u00B7 ");
      const actions = el("div", { class: "actions" }, ...EVENTS.map((event) =>
        el("button", { type: "button", class: event, text: event, "data-event": event,
                       "aria-label": `${event} ${title}`, onclick: () => press(user, item, event) })));
      const moveText = el("span", { class: `move ${move}` }, el("span", { "aria-hidden": "true", text: label }));
      if (MOVES[move]) moveText.append(el("span", { class: "visually-hidden", text: `${MOVES[move]} ${label.slice(2)}` }));
      return el("li", { class: move, "data-item-id": item.item_id, "data-move": move, "data-score": String(item.score) },
        el("span", { class: "rank", text: String(rank) }),
        el("div", {}, el("div", { class: "title", text: title }), el("div", { class: "detail", text: detail })),
        moveText, actions);
    });
    $("recs").replaceChildren(...rows);
    const now = new Set(rec.items.map((item) => item.item_id));
    const left = state.list === null ? [] : state.list.filter((id) => !now.has(id));
    $("left").replaceChildren(...(left.length ? [el("span", { text: "Left the list: " }),
      ...left.map((id, i) => el("span", { class: "left-item", "data-item-id": id,
                                           text: (i ? ", " : "") + (state.titles.get(id) || id) }))] : []));
    let summary = "";
    if (!rec.items.length) summary = "No items to recommend here (try another category).";
    else if (before !== null) summary = `${counts.rose} rose, ${counts.fell} fell, ${counts.entered} entered, ${left.length} left.`;
    else if (rec.cold_start) summary = "Unknown user: the cold-start list. Feedback creates the user.";
    $("changes").textContent = summary;
    state.list = rec.items.map((item) => item.item_id);
    $("model").textContent = rec.model_version;
    $("user-model").textContent = rec.user_model || "rule";
    $("recs").dataset.model = rec.model_version;
    $("recs").dataset.userModel = rec.user_model || "rule";
    $("recs").dataset.version = String(rec.user_version);
    $("recs").dataset.renders = String(++state.renders);
  }

  function renderHistory(entries, titles) {
    $("history").replaceChildren(...(entries.length ? entries.map((h, i) =>
      el("li", { "data-item-id": h.item_id, "data-event": h.event },
        el("span", { class: `ev ${h.event}`, text: LABELS[h.event] || h.event }), " ", titles[i]))
      : [el("li", { text: "nothing yet" })]));
  }

  // ----- actions ---------------------------------------------------------------------------------------------
  // Fetches and renders the current user's list and history. Returns false (and renders nothing) when a newer
  // choice of user or filter came meanwhile; an error of such a superseded refresh is dropped, not shown.
  async function refresh() {
    const seq = ++state.seq;
    const who = state.who;
    const body = { user_id: state.user, k: Number($("k").value) };
    if ($("category").value) body.filter = { category: [$("category").value] };
    let rec, entries, titles;
    try {
      const [answer, user] = await Promise.all([
        api("POST", "/recommend", body),
        api("GET", `/users/${encodeURIComponent(state.user)}`, undefined, { allow404: true }),
      ]);
      rec = answer;
      entries = user ? user.history.slice(-HISTORY_SHOWN).reverse() : [];
      titles = await titlesOf(entries.map((h) => h.item_id));
    } catch (err) {
      if (seq !== state.seq) return false;
      throw err;
    }
    if (seq !== state.seq) return false;
    renderHistory(entries, titles);
    renderList(rec, state.user);
    $("who").textContent = who;
    $("demo").hidden = false;
    clearError();
    return rec;
  }

  function setBusy(busy) {
    // aria-disabled, not disabled: a disabled button loses the keyboard focus.
    state.busy = busy;
    for (const button of document.querySelectorAll("#recs button")) button.setAttribute("aria-disabled", String(busy));
  }

  // Puts the focus back where the press was: the same button of the same item, else the same place in the list.
  function refocus(itemId, event, rank) {
    const rows = [...document.querySelectorAll("#recs li")];
    const row = rows.find((r) => r.dataset.itemId === itemId) || rows[Math.min(rank, rows.length - 1)];
    const target = row ? row.querySelector(`button[data-event="${event}"]`) : $("list-title");
    target.focus();
  }

  async function press(user, item, event) {
    if (state.busy || user !== state.user) return; // a list of another user still on screen
    const pressedAt = performance.now();
    const rank = Math.max(0, state.list.indexOf(item.item_id));
    setBusy(true);
    $("latency").textContent = "\u2026";
    $("freshness").textContent = "\u2026";
    try {
      await api("POST", "/feedback", { user_id: user, item_id: item.item_id, event });
      const rec = await refresh();
      if (rec) {
        $("freshness").textContent = rec.freshness_ms === null || rec.freshness_ms === undefined ? "\u2013"
          : rec.freshness_ms.toFixed(1);
        // After the frame that shows the new list: the time a person waits from the press.
        requestAnimationFrame(() => setTimeout(() => {
          $("latency").textContent = (performance.now() - pressedAt).toFixed(1);
        }, 0));
        refocus(item.item_id, event, rank);
      }
    } catch (err) {
      $("latency").textContent = "\u2013";
      $("freshness").textContent = "\u2013";
      showError(err.message);
    } finally {
      setBusy(false);
    }
  }

  async function choose(user, who) {
    state.user = user;
    state.who = who;
    state.list = null;
    $("recs").replaceChildren(); // the previous user's buttons go at once
    $("latency").textContent = "\u2013";
    $("freshness").textContent = "\u2013";
    try { await refresh(); } catch (err) { showError(err.message); }
  }

  $("pick-user").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = $("user-id").value.trim();
    if (!user) { showError("Enter a user id, e.g. 1."); return; }
    choose(user, `user ${user}`);
  });

  $("new-user").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("user-text").value.trim();
    const button = $("new-user").querySelector("button");
    if (!text) { showError("Describe the new user with a line of text."); return; }
    if (button.getAttribute("aria-disabled") === "true") return; // one new user per press
    button.setAttribute("aria-disabled", "true");
    const user = "demo-" + Math.random().toString(36).slice(2, 10);
    try {
      await api("PUT", `/users/${user}`, { text });
      await choose(user, `a new user: \u201C${text}\u201D`);
    } catch (err) {
      showError(err.message);
    } finally {
      button.setAttribute("aria-disabled", "false");
    }
  });

  for (const id of ["category", "k"]) {
    $(id).addEventListener("change", () => {
      if (state.user === null) return;
      state.list = null; // another list, not a move of this one
      refresh().catch((err) => showError(err.message));
    });
  }

  async function loadCategories() {
    const cats = await api("GET", "/categories");
    $("category").replaceChildren(el("option", { value: "", text: "all categories" }),
      ...cats.categories.map((c) => el("option", { value: c.name, text: `${c.name} (${c.items})` })));
    state.categoriesLoaded = true;
  }

  // The server's figures, and the last live model swap (POST /model) with when it happened.
  function renderHealth(health) {
    $("server").textContent = `${health.items} items, ${health.users} users, model ${health.model_version}, ` +
      `${health.shards} shards.`;
    const swap = health.last_swap;
    if (!swap) return;
    const at = new Date(swap.at);
    const when = isNaN(at) ? swap.at : at.toLocaleString();
    $("swap").textContent = `Model swapped live from ${swap.previous} to ${swap.model_version} at ${when} ` +
      `(${swap.seconds} s; ${swap.users} users moved).`;
    $("swap").dataset.version = swap.model_version;
    $("swap").dataset.at = swap.at;
    $("swap").hidden = false;
  }

  // Asks now and then which model serves; when it changed (a live swap), the list is fetched again from it.
  async function watchModel() {
    let health;
    try { health = await api("GET", "/healthz"); } catch (err) { return; } // a restart: the next try tells
    renderHealth(health);
    const moved = state.model !== null && health.model_version !== state.model;
    state.model = health.model_version;
    // A swap names its new model from the moment it switched, and its record (when, how long) only once it
    // has ended: ask again soon rather than at the next round.
    const recorded = health.last_swap && health.last_swap.model_version === health.model_version;
    if (moved && !recorded) setTimeout(watchModel, SWAP_RECORD_RETRY_MS);
    if (moved && state.user !== null && !state.busy) {
      state.list = null; // another model's list, not a move of this one
      refresh().catch((err) => showError(err.message));
    }
  }

  async function start() {
    try {
      const health = await api("GET", "/healthz");
      renderHealth(health);
      state.model = health.model_version;
      if (!state.categoriesLoaded) await loadCategories();
      document.body.dataset.ready = "1";
      if (state.user === null) await choose($("user-id").value.trim(), `user ${$("user-id").value.trim()}`);
    } catch (err) {
      showError(err.message);
    }
  }

  // A key entered after a refusal (a server that protects reads too): start again with it.
  $("api-key").addEventListener("change", () => { if (!document.body.dataset.ready) start(); });

  start();
  setInterval(watchModel, HEALTH_EVERY_MS);
})();
