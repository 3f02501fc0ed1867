// llm2mqtt console: progressive enhancement for the server-rendered pages. No build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
};
const ms = (v) => (v === null || v === undefined ? "–" : v >= 10000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);
const when = (ts) => {
  const d = ts ? new Date(typeof ts === "number" ? ts * 1000 : ts) : new Date();
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
};

async function api(method, url, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = data && data.detail;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail || response.statusText));
  }
  return { status: response.status, data };
}

// -- every page: filters that submit themselves, rule buttons ---------------------------------

// A picture that cannot be shown (an input that was not a decodable image) becomes a label.
document.addEventListener("error", (e) => {
  const img = e.target;
  if (img.tagName === "IMG" && img.closest(".thumb, .timeline")) {
    img.replaceWith(el("span", { class: "noimg" }, "no picture"));
  }
}, true);

for (const select of $$("[data-autosubmit]")) select.addEventListener("change", () => select.form.submit());

for (const button of $$("[data-check]")) {
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", `/api/rules/${button.dataset.check}/check`);
      button.textContent = "Checking…";
    } catch (e) {
      alert(e.message);
    } finally {
      setTimeout(() => { button.disabled = false; button.textContent = "Check now"; }, 3000);
    }
  });
}

for (const box of $$("[data-paused]")) {
  box.addEventListener("change", async () => {
    try {
      await api("PUT", `/api/rules/${box.dataset.paused}/paused`, { paused: box.checked });
    } catch (e) {
      box.checked = !box.checked;
      alert(e.message);
    }
  });
}

// -- Live: jobs arrive over Server-Sent Events ------------------------------------------------

const FINAL = { job_done: "done", job_failed: "failed", job_skipped: "skipped", job_started: "running", job_queued: "queued" };

function jobItem(ev) {
  return el("li", { class: `job state-queued fresh`, "data-job": ev.job_id, "data-rule": ev.rule },
    el("a", { class: "thumb", href: `/jobs/${ev.job_id}` }, el("span", { class: "noimg" }, "…")),
    el("div", { class: "body" },
      el("div", { class: "line1" }, el("a", { class: "rulename", href: `/rules/${ev.rule}` }, ev.rule), " ",
        el("span", { class: "badge queued" }, "queued")),
      el("div", { class: "answer" }, "…"),
      el("div", { class: "meta" }, el("span", {}, ev.source || ""), " · ", el("time", {}, when(ev.ts)),
        el("span", { class: "times" }), " · ", el("a", { href: `/jobs/${ev.job_id}` }, "details"))));
}

function updateItem(item, ev) {
  const state = FINAL[ev.type];
  item.className = item.className.replace(/state-\w+/, `state-${state}`);
  const badge = $(".badge", item);
  badge.className = `badge ${state}`;
  badge.textContent = state;
  const answer = $(".answer", item);
  if (ev.type === "job_done" && ev.result) {
    const r = ev.result;
    const text = r.state ?? r.label ?? r.description ?? r.applied ?? ("answer" in r ? (r.answer ? "yes" : "no") : JSON.stringify(r.data ?? ""));
    answer.replaceChildren(String(text));
    if (typeof r.confidence === "number") answer.append(" ", el("span", { class: "conf" }, `${Math.round(r.confidence * 100)}%`));
    const times = $(".times", item);
    if (times && r.timings) times.textContent = ` · queue ${ms(r.timings.queued)} · model ${ms(r.timings.llm)}`;
    if (r.image) {
      $(".thumb", item).replaceChildren(el("img", { src: `/api/jobs/${ev.job_id}/image?thumb=1`, alt: "" }));
    }
  } else if (ev.type === "job_failed") {
    answer.replaceChildren(el("span", { class: "err" }, ev.error || "failed"));
  } else if (ev.type === "job_skipped") {
    answer.replaceChildren(el("span", { class: "meta" }, `skipped: ${ev.reason || ""}`));
  }
}

function startLive() {
  const list = $("#jobs");
  if (!list || list.dataset.live !== "yes") return;
  const rule = list.dataset.rule, outcome = list.dataset.outcome;
  const dot = $("#live");
  const source = new EventSource("/api/events");
  source.onopen = () => dot.classList.add("on");
  source.onerror = () => dot.classList.remove("on");
  const onEvent = (msg) => {
    const ev = JSON.parse(msg.data);
    if (!ev.job_id || (rule && ev.rule !== rule)) return;
    let item = $(`[data-job="${ev.job_id}"]`, list);
    if (!item) {
      if (outcome && FINAL[ev.type] !== outcome) return;
      if (ev.type === "job_skipped" && ev.reason === "duplicate") return;
      item = jobItem(ev);
      list.prepend(item);
      $("#empty")?.remove();
      while (list.children.length > 200) list.lastElementChild.remove();
    }
    updateItem(item, ev);
  };
  for (const type of Object.keys(FINAL)) source.addEventListener(type, onEvent);
  setInterval(async () => {
    try {
      const { data } = await api("GET", "/api/health");
      $("#queue-depth").textContent = data.queue_depth;
      $("#running").textContent = data.running;
    } catch (e) { /* the next round tries again */ }
  }, 5000);
}

// -- Job: run again, copy as a command --------------------------------------------------------

function startJob() {
  const copy = $("#copy-try");
  copy?.addEventListener("click", async () => {
    const command = copy.dataset.command;
    try {
      await navigator.clipboard.writeText(command);
      copy.textContent = "Copied";
    } catch (e) {
      window.prompt("Copy this command:", command);
    }
  });
  const again = $("#run-again");
  again?.addEventListener("click", async () => {
    const status = $("#run-status");
    again.disabled = true;
    status.hidden = false;
    status.textContent = "Running…";
    try {
      const form = new FormData();
      if (again.dataset.image === "yes") {
        const picture = await fetch(`/api/jobs/${again.dataset.job}/image?original=1`);
        form.append("image", await picture.blob(), "image");
      }
      if (again.dataset.text) form.append("text", again.dataset.text);
      const { data } = await api("POST", `/api/rules/${again.dataset.rule}/run?wait=60`, form);
      status.replaceChildren(`New job ${data.state}: `, el("a", { href: `/jobs/${data.job_id}` }, data.job_id));
    } catch (e) {
      status.textContent = e.message;
    } finally {
      again.disabled = false;
    }
  });
}

// -- Try -------------------------------------------------------------------------------------

function startTry() {
  const form = $("#try-form");
  const rule = $("#try-rule"), prompt = $("#try-prompt"), model = $("#try-model"), image = $("#try-image");
  const preview = $("#try-preview");
  api("GET", "/api/models").then(({ data }) => {
    $("#models").replaceChildren(...data.items.map((m) => el("option", { value: m })));
  }).catch(() => {});
  const fill = () => {
    const chosen = rule.selectedOptions[0];
    prompt.placeholder = chosen.dataset.prompt || "What is in this picture?";
    model.placeholder = chosen.dataset.model || "e.g. qwen2.5vl:3b";
  };
  rule.addEventListener("change", fill);
  fill();
  const show = () => {
    const file = image.files[0];
    preview.hidden = !file;
    if (file) preview.src = URL.createObjectURL(file);
  };
  image.addEventListener("change", show);
  document.addEventListener("paste", (e) => {
    const file = Array.from(e.clipboardData?.files || []).find((f) => f.type.startsWith("image/"));
    if (!file) return;
    const transfer = new DataTransfer();
    transfer.items.add(file);
    image.files = transfer.files;
    show();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const go = $("#try-go");
    go.disabled = true;
    go.textContent = "Asking…";
    const out = $("#try-result");
    try {
      const data = new FormData(form);
      if (!image.files.length) data.delete("image");
      let answer;
      if ($("#try-publish").checked && rule.value) {
        const job = new FormData();
        if (image.files.length) job.append("image", image.files[0]);
        if (data.get("text")) job.append("text", data.get("text"));
        const { data: ran } = await api("POST", `/api/rules/${rule.value}/run?wait=60`, job);
        answer = { result: ran.result || { state: ran.state, error: ran.error }, job_id: ran.job_id };
      } else {
        answer = (await api("POST", "/api/try", data)).data;
      }
      const r = answer.result || {};
      $("#try-answer").textContent = r.state ?? r.label ?? r.description ?? JSON.stringify(r.data ?? r.answer ?? "");
      const t = r.timings || {};
      $("#try-timings").textContent = `model ${answer.model || r.model || ""} · ${ms(t.llm)} (load ${ms(t.load)})` +
        (answer.job_id ? ` · job ${answer.job_id}` : "");
      $("#try-json").textContent = JSON.stringify(answer, null, 2);
    } catch (err) {
      $("#try-answer").textContent = "";
      $("#try-timings").textContent = "";
      $("#try-json").textContent = err.message;
    } finally {
      out.hidden = false;
      go.disabled = false;
      go.textContent = "Ask";
    }
  });
}

// -- Todo ------------------------------------------------------------------------------------

function startTodo() {
  const tasks = $("#tasks"), history = $("#history"), showDone = $("#todo-done");
  const patch = (uid, body) => api("PATCH", `/api/todo/tasks/${uid}`, body).then(load).catch((e) => alert(e.message));
  const field = (task, name, attrs) => el("input", {
    ...attrs, value: task[name] || "", "aria-label": name, "data-field": name,
    onchange: (e) => {
      if (name === "title" && !e.target.value.trim()) { e.target.value = task.title; return; }
      patch(task.uid, { [name]: e.target.value || null });
    },
  });
  async function load() {
    const status = showDone.checked ? "" : "?status=needs_action";
    const [{ data: list }, { data: changes }] = await Promise.all([
      api("GET", `/api/todo/tasks${status}`), api("GET", "/api/todo/history?limit=50")]);
    tasks.replaceChildren(...list.items.map((t) => el("li", { class: t.status, "data-uid": t.uid },
      el("button", { title: "complete", "data-complete": t.uid, disabled: t.status === "completed",
        onclick: () => api("POST", `/api/todo/tasks/${t.uid}/complete`).then(load) }, "✓"),
      field(t, "title", { class: "title", maxlength: 200 }),
      field(t, "genre", { maxlength: 50, placeholder: "genre" }),
      field(t, "due", { type: "date" }),
      t.needs_confirmation ? el("span", { class: "genre" }, "to confirm") : null)));
    if (!list.items.length) tasks.replaceChildren(el("li", { class: "meta" }, "Nothing to do."));
    history.replaceChildren(...changes.items.map((c) => el("li", { "data-change": c.id },
      el("b", {}, c.action), " ",
      el("span", {}, c.before?.title && c.after?.title && c.before.title !== c.after.title
        ? `${c.before.title} → ${c.after.title}` : (c.after || c.before || {}).title || c.uid),
      el("span", { class: "meta" }, `${c.source} · ${when(c.ts)}`),
      c.undone_by ? el("span", { class: "meta" }, "undone")
        : el("button", { "data-undo": c.id, onclick: () => api("POST", `/api/todo/history/${c.id}/undo`).then(load).catch((e) => alert(e.message)) }, "Undo"),
      c.note ? el("span", { class: "why" }, `note: ${c.note}`) : null)));
  }
  showDone.addEventListener("change", load);
  $("#todo-new").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const body = { title: f.get("title") };
    if (f.get("genre")) body.genre = f.get("genre");
    if (f.get("due")) body.due = f.get("due");
    try {
      await api("POST", "/api/todo/tasks", body);
      e.target.reset();
      load();
    } catch (err) { alert(err.message); }
  });
  load().catch((e) => tasks.replaceChildren(el("li", { class: "err" }, e.message)));
}

// -- API docs, drawn from /openapi.json -------------------------------------------------------

async function startDocs() {
  const root = $("#api-docs");
  const spec = (await api("GET", "/openapi.json")).data;
  const cards = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const params = (op.parameters || []).map((p) => el("li", {}, el("code", {}, p.name), ` (${p.in}${p.required ? ", required" : ""}) `,
        el("span", { class: "meta" }, p.description || p.schema?.type || "")));
      const bodies = Object.keys(op.requestBody?.content || {});
      cards.push(el("section", { class: "card endpoint" },
        el("h2", {}, el("span", { class: "method" }, method.toUpperCase()), el("code", {}, path)),
        el("p", {}, op.summary || ""), op.description ? el("p", { class: "meta" }, op.description) : null,
        params.length ? el("ul", {}, params) : null,
        bodies.length ? el("p", { class: "meta" }, `Body: ${bodies.join(", ")}`) : null,
        el("p", { class: "meta" }, `Answers: ${Object.keys(op.responses || {}).join(", ")}`)));
    }
  }
  root.replaceChildren(...cards);
}

const starts = { live: startLive, job: startJob, try: startTry, todo: startTodo, docs: startDocs };
starts[document.body.dataset.page]?.();
