// rayrec demo page: plain JavaScript against the HTTP API of the same server (no build step, nothing external).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const EVENTS = ["like", "click", "skip", "dislike"];
  const HISTORY_SHOWN = 15;
  const LABELS = { history: "rated 4-5", like: "liked", click: "clicked", purchase: "purchased", skip: "skipped",
                   dislike: "disliked" };
  const state = { user: null, who: "", list: null, seq: 0, busy: false, renders: 0, titles: new Map() };

  // ----- the API ---------------------------------------------------------------------------------------------
  async function api(method, path, body, { allow404 = false } = {}) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    const key = $("api-key").value.trim();
    if (key) headers.authorization = "Bearer " + key;
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
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
    const found = await Promise.all(missing.map((id) =>
      api("GET", `/items/${encodeURIComponent(id)}?embedding=false`, undefined, { allow404: true })));
    missing.forEach((id, i) => state.titles.set(id, found[i] ? (found[i].title || id) : `${id} (deleted)`));
    return ids.map((id) => state.titles.get(id));
  }

  // ----- rendering -------------------------------------------------------------------------------------------
  function renderList(rec) {
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
                       "aria-label": `${event} ${title}`, onclick: () => press(item, event) })));
      const spoken = { rose: "rose", fell: "fell", entered: "entered the list", same: "" }[move];
      return el("li", { class: move, "data-item-id": item.item_id, "data-move": move, "data-score": String(item.score) },
        el("span", { class: "rank", text: String(rank) }),
        el("div", {}, el("div", { class: "title", text: title }), el("div", { class: "detail", text: detail })),
        el("span", { class: `move ${move}`, text: label, "aria-label": spoken ? `${spoken} ${label}` : "" }),
        actions);
    });
    $("recs").replaceChildren(...rows);
    const now = new Set(rec.items.map((item) => item.item_id));
    const left = state.list === null ? [] : state.list.filter((id) => !now.has(id));
    $("left").replaceChildren(...(left.length ? [el("span", { text: "Left the list: " }),
      ...left.map((id, i) => el("span", { class: "left-item", "data-item-id": id,
                                           text: (i ? ", " : "") + (state.titles.get(id) || id) }))] : []));
    $("changes").textContent = before === null ? (rec.cold_start ? "Unknown user: the cold-start list. Feedback creates the user." : "")
      : `${counts.rose} rose, ${counts.fell} fell, ${counts.entered} entered, ${left.length} left.`;
    state.list = rec.items.map((item) => item.item_id);
    $("model").textContent = rec.model_version;
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
  async function refresh(pressedAt = null) {
    const seq = ++state.seq;
    const who = state.who;
    const body = { user_id: state.user, k: Number($("k").value) };
    if ($("category").value) body.filter = { category: [$("category").value] };
    const [rec, user] = await Promise.all([
      api("POST", "/recommend", body),
      api("GET", `/users/${encodeURIComponent(state.user)}`, undefined, { allow404: true }),
    ]);
    const entries = user ? user.history.slice(-HISTORY_SHOWN).reverse() : [];
    const titles = await titlesOf(entries.map((h) => h.item_id));
    // Render all of it at once, and only the answer to the latest choice of user or filter.
    if (seq !== state.seq) return;
    renderHistory(entries, titles);
    renderList(rec);
    $("who").textContent = who;
    $("demo").hidden = false;
    clearError();
    if (pressedAt !== null) {
      $("freshness").textContent = rec.freshness_ms === null || rec.freshness_ms === undefined ? "\u2013"
        : rec.freshness_ms.toFixed(1);
      // After the frame that shows the new list: the time a person waits from the press.
      requestAnimationFrame(() => setTimeout(() => {
        $("latency").textContent = (performance.now() - pressedAt).toFixed(1);
      }, 0));
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    for (const button of document.querySelectorAll("#recs button")) button.disabled = busy;
  }

  async function press(item, event) {
    if (state.busy) return;
    const pressedAt = performance.now();
    setBusy(true);
    try {
      await api("POST", "/feedback", { user_id: state.user, item_id: item.item_id, event });
      await refresh(pressedAt);
      $("list-title").focus();
    } catch (err) {
      showError(err.message);
    } finally {
      setBusy(false);
    }
  }

  async function choose(user, who) {
    state.user = user;
    state.who = who;
    state.list = null;
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
    if (!text) { showError("Describe the new user with a line of text."); return; }
    const user = "demo-" + Math.random().toString(36).slice(2, 10);
    try {
      await api("PUT", `/users/${user}`, { text });
      await choose(user, `a new user: \u201C${text}\u201D`);
    } catch (err) {
      showError(err.message);
    }
  });

  for (const id of ["category", "k"]) {
    $(id).addEventListener("change", () => {
      if (state.user === null) return;
      state.list = null; // another list, not a move of this one
      refresh().catch((err) => showError(err.message));
    });
  }

  async function start() {
    try {
      const [health, cats] = await Promise.all([api("GET", "/healthz"), api("GET", "/categories")]);
      $("server").textContent = `${health.items} items, ${health.users} users, model ${health.model_version}, ` +
        `${health.shards} shards.`;
      $("category").append(...cats.categories.map((c) =>
        el("option", { value: c.name, text: `${c.name} (${c.items})` })));
      document.body.dataset.ready = "1";
      if (state.user === null) await choose($("user-id").value.trim(), `user ${$("user-id").value.trim()}`);
    } catch (err) {
      $("server").textContent = "";
      showError(err.message);
    }
  }

  start();
})();
