// The wxgate console: plain JavaScript, no build step. Every call goes to the admin API
// (api/ beside this page) with the token in the Authorization header; nothing is stored
// in cookies or web storage, so closing the tab signs out. Text from the server is only
// ever set as textContent, never parsed as HTML.
"use strict";

(function () {
  let token = null;
  let current = "overview";
  let overview = null;
  let chart = null;
  let diagram = null;
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function table(headers, rows, cls) {
    return el(
      "table",
      { class: cls || "" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)
    );
  }

  const ms = (value) => (value === null || value === undefined ? "–" : value < 10 ? value.toFixed(2) : value.toFixed(1));
  const when = (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z" : "–");
  const counts = (map) =>
    Object.entries(map || {})
      .map(([k, v]) => `${k}: ${v}`)
      .join(", ") || "–";

  class Refused extends Error {}

  async function api(path, options) {
    const opts = options || {};
    const headers = { Authorization: "Bearer " + token };
    let body;
    if (opts.yaml !== undefined) {
      headers["Content-Type"] = "application/yaml";
      body = opts.yaml;
    } else if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const response = await fetch("api/" + path, {
      method: body === undefined ? "GET" : "POST",
      headers,
      body,
      credentials: "omit",
      cache: "no-store",
    });
    const answer = await response.json();
    if (response.status === 401) throw new Refused(answer.error.message);
    if (!response.ok) throw new Error(`${answer.error.message} ${answer.error.hint || ""}`.trim());
    return answer;
  }

  function fail(error) {
    if (error instanceof Refused) {
      signOut("The token was refused: sign in again.");
      return;
    }
    $("status").textContent = String(error.message || error);
  }

  function note(text) {
    $("status").textContent = "";
    $("status").className = "ok";
    $("status").textContent = text;
    setTimeout(() => {
      if ($("status").textContent === text) {
        $("status").textContent = "";
        $("status").className = "error";
      }
    }, 6000);
  }

  function confirmAction(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    });
  }

  // --- signing in -----------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    token = $("token").value.trim();
    $("sign-in-error").textContent = "";
    try {
      overview = await api("overview");
    } catch (error) {
      token = null;
      $("sign-in-error").textContent = error instanceof Refused ? "The token was refused." : String(error.message);
      return;
    }
    $("token").value = "";
    $("sign-in-form").classList.add("hidden");
    $("console").classList.remove("hidden");
    $("sign-out").classList.remove("hidden");
    fillAppSelects();
    show("overview");
    timer = setInterval(() => {
      if (current === "overview" || current === "pipelines") refresh().catch(fail);
    }, 15000);
  }

  function signOut(message) {
    token = null;
    clearInterval(timer);
    $("console").classList.add("hidden");
    $("sign-out").classList.add("hidden");
    $("sign-in-form").classList.remove("hidden");
    $("sign-in-error").textContent = message || "";
    $("digest").textContent = "";
  }

  function fillAppSelects() {
    for (const id of ["pipeline-app", "user-app"]) {
      const select = $(id);
      const chosen = select.value;
      select.replaceChildren(...overview.apps.map((app) => el("option", { value: app.name }, app.name)));
      if (chosen) select.value = chosen;
    }
    updatePhoneNote();
  }

  // --- views ----------------------------------------------------------------------------

  function show(view) {
    current = view;
    for (const button of document.querySelectorAll("nav [data-view]")) {
      button.classList.toggle("active", button.dataset.view === view);
    }
    for (const section of document.querySelectorAll("[data-section]")) {
      section.classList.toggle("hidden", section.dataset.section !== view);
    }
    $("status").textContent = "";
    refresh().catch(fail);
  }

  async function refresh() {
    if (current === "overview") await showOverview();
    else if (current === "pipelines") await showPipelines();
    else if (current === "events") await showEvents();
    else if (current === "config") await showConfig();
    else if (current === "users") updatePhoneNote();
  }

  function windowText(seconds) {
    const text = seconds >= 299 ? "last 5 minutes" : `last ${Math.max(1, Math.round(seconds))} s (since the start)`;
    for (const span of document.querySelectorAll(".window")) span.textContent = text;
  }

  async function showOverview() {
    overview = await api("overview");
    $("digest").textContent = "config " + overview.config;
    windowText(overview.window_seconds);
    const labels = [];
    const ok = [];
    const errors = [];
    const tables = [];
    for (const app of overview.apps) {
      const rows = app.flows.map((flow) => {
        const failed = Object.values(flow.errors).reduce((a, b) => a + b, 0);
        if (flow.requests) {
          labels.push(`${app.name}/${flow.flow}`);
          ok.push(flow.requests - failed);
          errors.push(failed);
        }
        return el(
          "tr",
          { class: failed ? "failed" : "" },
          el("td", {}, flow.flow),
          el("td", { class: "num" }, flow.requests),
          el("td", { class: "num" }, flow.requests_per_second.toFixed(2)),
          el("td", { class: "num" }, ms(flow.p50_ms)),
          el("td", { class: "num" }, ms(flow.p99_ms)),
          el("td", {}, counts(flow.statuses)),
          el("td", {}, counts(flow.errors))
        );
      });
      tables.push(
        el("h3", {}, `${app.name} `, el("span", { class: "muted" }, `${app.appid} · upstream ${app.upstream}`)),
        table(["flow", "requests", "req/s", "p50 ms", "p99 ms", "statuses", "errors by code"], rows, "flow-table")
      );
    }
    $("overview-tables").replaceChildren(...tables);
    drawOverviewChart(labels, ok, errors);
  }

  function drawOverviewChart(labels, ok, errors) {
    const data = {
      labels,
      datasets: [
        { label: "answered", data: ok, backgroundColor: "#07c160" },
        { label: "errors", data: errors, backgroundColor: "#d92d20" },
      ],
    };
    if (chart) {
      chart.data = data;
      chart.update();
      return;
    }
    chart = new window.Chart($("overview-chart"), {
      type: "bar",
      data,
      options: {
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
  }

  async function showPipelines() {
    const answer = await api("pipelines");
    windowText(answer.window_seconds);
    const app = answer.apps.find((a) => a.name === $("pipeline-app").value) || answer.apps[0];
    if (!app) return;
    drawDiagram(app);
    const sections = app.flows.map((flow) => {
      const rows = flow.steps.map((step, i) => {
        const failed = Object.values(step.failures).reduce((a, b) => a + b, 0);
        return el(
          "tr",
          { class: failed ? "failed" : "", "data-step": step.label },
          el("td", { class: "num" }, i + 1),
          el("td", {}, step.label),
          el("td", { class: "options" }, JSON.stringify(step.options)),
          el("td", { class: "num" }, step.calls),
          el("td", { class: "num p50" }, ms(step.p50_ms)),
          el("td", { class: "num p99" }, ms(step.p99_ms)),
          el("td", {}, counts(step.failures))
        );
      });
      return el(
        "div",
        { "data-flow": flow.flow },
        el(
          "h3",
          {},
          `${flow.flow} `,
          el("span", { class: "muted" }, `${flow.requests} requests · p50 ${ms(flow.p50_ms)} ms · p99 ${ms(flow.p99_ms)} ms`)
        ),
        table(["#", "step", "options", "calls", "p50 ms", "p99 ms", "failures"], rows, "step-table")
      );
    });
    $("pipeline-tables").replaceChildren(...sections);
  }

  function drawDiagram(app) {
    const elements = [];
    app.flows.forEach((flow, row) => {
      const y = row * 80 + 50;
      elements.push({ data: { id: `${flow.flow}`, label: flow.flow, kind: "flow" }, position: { x: 60, y } });
      let previous = flow.flow;
      flow.steps.forEach((step, i) => {
        const id = `${flow.flow}:${step.label}`;
        const failed = Object.values(step.failures).reduce((a, b) => a + b, 0);
        const label = `${step.label}\n${ms(step.p50_ms)} / ${ms(step.p99_ms)} ms` + (failed ? `\n${failed} failed` : "");
        elements.push({ data: { id, label, kind: failed ? "failed" : "step" }, position: { x: 230 + i * 170, y } });
        elements.push({ data: { id: `${previous}->${id}`, source: previous, target: id } });
        previous = id;
      });
    });
    if (diagram) diagram.destroy();
    // one row per flow: the box grows with them (a CSSOM property, which the policy allows)
    $("diagram").style.height = `${app.flows.length * 80 + 20}px`;
    diagram = window.cytoscape({
      container: $("diagram"),
      elements,
      layout: { name: "preset" },
      autoungrabify: true,
      userZoomingEnabled: true,
      style: [
        {
          selector: "node",
          style: {
            shape: "round-rectangle",
            width: 150,
            height: 50,
            "background-color": "#e8f8ef",
            "border-width": 1,
            "border-color": "#07c160",
            label: "data(label)",
            "text-wrap": "wrap",
            "text-valign": "center",
            "font-size": 11,
            color: "#1d2433",
          },
        },
        { selector: "node[kind = 'flow']", style: { "background-color": "#10182a", color: "#fff", width: 90 } },
        { selector: "node[kind = 'failed']", style: { "background-color": "#fdecea", "border-color": "#d92d20" } },
        {
          selector: "edge",
          style: { width: 2, "line-color": "#98a2b3", "target-arrow-color": "#98a2b3", "target-arrow-shape": "triangle", "curve-style": "straight" },
        },
      ],
    });
    diagram.fit(undefined, 20);
    $("diagram").setAttribute("data-nodes", String(diagram.nodes().length));
  }

  async function showEvents() {
    const answer = await api("events");
    $("event-counts").textContent = `pending ${answer.counts.pending} · delivering ${answer.counts.delivering} · delivered ${answer.counts.delivered} · dead ${answer.counts.dead}`;
    const row = (event, retry) =>
      el(
        "tr",
        { "data-event": event.id },
        el("td", {}, el("code", {}, event.id)),
        el("td", {}, event.type),
        el("td", {}, event.endpoint),
        el("td", { class: "num" }, event.attempts),
        el("td", {}, when(event.created_at)),
        el("td", {}, event.last_error || "–"),
        retry ? el("td", {}, el("button", { type: "button", class: "retry", "data-id": event.id }, "Retry")) : null
      );
    const headers = ["id", "type", "endpoint", "attempts", "created", "last error"];
    $("dead-events").replaceChildren(
      answer.events.dead.length
        ? table([...headers, ""], answer.events.dead.map((e) => row(e, true)), "event-table")
        : el("p", { class: "muted" }, "No dead letters.")
    );
    $("pending-events").replaceChildren(
      answer.events.pending.length
        ? table(headers, answer.events.pending.map((e) => row(e, false)), "event-table")
        : el("p", { class: "muted" }, "Nothing pending.")
    );
  }

  async function retry(ids) {
    const what = ids ? `event ${ids[0]}` : "every dead-lettered event";
    if (!(await confirmAction(`Queue ${what} again? It is delivered at once.`))) return;
    const answer = await api("events/retry", { json: ids ? { ids } : { all: true } });
    note(`${answer.requeued} dead-lettered event(s) queued again.`);
    await showEvents();
  }

  async function purge() {
    const hours = Number($("purge-age").value || 0);
    const what = hours > 0 ? `dead letters older than ${hours} h` : "every dead letter";
    if (!(await confirmAction(`Delete ${what}? They cannot be retried afterwards.`))) return;
    const answer = await api("events/purge", { json: { older_than_seconds: Math.round(hours * 3600) } });
    note(`${answer.purged} dead letter(s) purged.`);
    await showEvents();
  }

  function updatePhoneNote() {
    const app = overview && overview.apps.find((a) => a.name === $("user-app").value);
    const byPhone = $("user-by").value === "phone";
    const unavailable = byPhone && app && !app.phone_lookup.available;
    $("phone-lookup").textContent = unavailable ? `Phone lookup is unavailable for ${app.name}: ${app.phone_lookup.reason}.` : "";
    $("find-user").disabled = Boolean(unavailable);
  }

  async function findUser(event) {
    if (event) event.preventDefault();
    const app = $("user-app").value;
    const by = $("user-by").value;
    const query = new URLSearchParams({ app, [by]: $("user-query").value.trim() });
    const answer = await api("users?" + query.toString());
    if (!answer.phone_lookup.available && by === "phone") {
      $("user-results").replaceChildren(el("p", { class: "muted" }, `Phone lookup is unavailable: ${answer.phone_lookup.reason}.`));
      return;
    }
    if (!answer.users.length) {
      $("user-results").replaceChildren(el("p", { class: "muted" }, "No such user."));
      return;
    }
    $("user-results").replaceChildren(...answer.users.map((user) => userCard(app, user)));
  }

  function userCard(app, user) {
    const facts = user.user
      ? `${user.user.logins} logins · first seen ${when(user.user.first_seen)} · last seen ${when(user.user.last_seen)}`
      : "no user record";
    const phones = user.phones.length
      ? table(
          ["phone (masked)", "country code", "stored as", "first seen", "last seen"],
          user.phones.map((p) =>
            el("tr", {}, el("td", {}, p.masked), el("td", {}, "+" + p.country_code), el("td", {}, p.stored_as), el("td", {}, when(p.first_seen)), el("td", {}, when(p.last_seen)))
          ),
          "phone-table"
        )
      : el("p", { class: "muted" }, "No phone bound.");
    const sessions = user.sessions.length
      ? table(
          ["session", "created", "expires"],
          user.sessions.map((s) => el("tr", {}, el("td", {}, el("code", {}, s.id)), el("td", {}, when(s.created_at)), el("td", {}, when(s.expires_at)))),
          "session-table"
        )
      : el("p", { class: "muted sessions-none" }, "No live session.");
    const revoke = el("button", { type: "button", class: "danger revoke", disabled: !user.sessions.length }, `Revoke all ${user.sessions.length} session(s)`);
    revoke.addEventListener("click", () => revokeAll(app, user).catch(fail));
    return el(
      "div",
      { class: "card user", "data-openid": user.openid },
      el("h3", {}, el("code", {}, user.openid)),
      el("p", { class: "muted" }, facts),
      phones,
      sessions,
      revoke
    );
  }

  async function revokeAll(app, user) {
    if (!(await confirmAction(`Revoke every session of ${user.openid}? Their tokens stop working at once.`))) return;
    const answer = await api("users/revoke", { json: { app, openid: user.openid } });
    note(`${answer.revoked} session(s) revoked.`);
    $("user-by").value = "openid";
    $("user-query").value = user.openid;
    await findUser();
  }

  async function showConfig() {
    const answer = await api("config");
    $("digest").textContent = "config " + answer.digest;
    const last = answer.last_reload ? `${answer.last_reload.result} at ${when(answer.last_reload.at)} (from ${answer.last_reload.previous_digest})` : "none in this process";
    const facts = [
      ["running digest", answer.digest],
      ["file", answer.path],
      ["file digest now", answer.file_digest || "unreadable"],
      ["reloads", `${answer.reloads.ok} applied, ${answer.reloads.refused} refused`],
      ["last reload", last],
    ];
    const items = facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]);
    if (answer.file_errors.length) {
      items.push(el("dt", {}, "the file now"), el("dd", { class: "error" }, answer.file_errors.map((e) => e.message).join("\n")));
    }
    $("config-facts").replaceChildren(...items);
  }

  async function checkDraft() {
    const answer = await api("config/check", { yaml: $("draft").value });
    if (answer.valid) {
      $("draft-result").replaceChildren(el("p", { class: "ok valid" }, "Valid: `wxgate validate` would accept this draft."));
      return;
    }
    $("draft-result").replaceChildren(
      ...answer.errors.map((e) =>
        el("p", { class: "draft-error error" }, e.line ? el("span", { class: "line" }, `line ${e.line}`) : null, e.message)
      )
    );
  }

  // --- wiring ---------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    for (const button of document.querySelectorAll("nav [data-view]")) {
      button.addEventListener("click", () => show(button.dataset.view));
    }
    $("refresh").addEventListener("click", () => refresh().catch(fail));
    $("pipeline-app").addEventListener("change", () => showPipelines().catch(fail));
    $("retry-all").addEventListener("click", () => retry(null).catch(fail));
    $("purge-dead").addEventListener("click", () => purge().catch(fail));
    $("dead-events").addEventListener("click", (event) => {
      const button = event.target.closest("button.retry");
      if (button) retry([button.dataset.id]).catch(fail);
    });
    $("user-app").addEventListener("change", updatePhoneNote);
    $("user-by").addEventListener("change", updatePhoneNote);
    $("user-form").addEventListener("submit", (event) => findUser(event).catch(fail));
    $("check-draft").addEventListener("click", () => checkDraft().catch(fail));
  });
})();
