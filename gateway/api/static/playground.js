// The gateway playground: asks /v1/chat/completions (streamed) and shows, for each answer, the
// gateway's x-cache verdict (hit-exact, hit-semantic with its similarity, miss with the engine)
// and the time to the first token and to the end. Every asset is served by the gateway itself.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "semcache-playground-key";
  const log = $("log");
  const modelSelect = $("model");
  const keyInput = $("key");
  const question = $("question");
  let busy = false;

  keyInput.value = sessionStorage.getItem(KEY_STORE) || "";
  const useKey = () => {
    sessionStorage.setItem(KEY_STORE, keyInput.value.trim());
    loadModels().catch((error) => notice(String(error)));
  };
  keyInput.addEventListener("change", useKey);
  $("settings").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey();
  });

  const headers = (extra = {}) => {
    const h = { ...extra };
    const key = keyInput.value.trim();
    if (key) h.authorization = "Bearer " + key;
    return h;
  };

  const seconds = (ms) => (ms < 1000 ? ms.toFixed(ms < 10 ? 1 : 0) + " ms" : (ms / 1000).toFixed(2) + " s");

  function notice(text) {
    const el = $("notice");
    el.textContent = text || "";
    el.hidden = !text;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return `${response.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
    } catch (e) {
      return `${response.status} ${response.statusText}`;
    }
  }

  async function loadModels() {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) {
      notice(response.status === 401 ? "This gateway needs an API key: type it at the top right." : await errorText(response));
      return;
    }
    notice("");
    const { data } = await response.json();
    const previous = modelSelect.value;
    modelSelect.replaceChildren(...data.map((m) => new Option(m.id, m.id)));
    if (data.some((m) => m.id === previous)) modelSelect.value = previous;
    document.body.dataset.models = String(data.length);
  }

  // One exchange: the question, the streamed answer and where it came from.
  function exchange(text) {
    const node = $("exchange").content.firstElementChild.cloneNode(true);
    node.querySelector(".q").textContent = text;
    node.querySelector(".again").addEventListener("click", () => ask(text, false));
    node.querySelector(".bypass").addEventListener("click", () => ask(text, true));
    $("empty").hidden = true;
    log.append(node);
    return node;
  }

  function describe(node, response, bypass) {
    const cache = response.headers.get("x-cache") || "none";
    const badge = node.querySelector(".badge");
    badge.textContent = cache;
    badge.className = "badge " + cache;
    node.dataset.cache = cache;
    const source = node.querySelector(".source");
    if (cache.startsWith("hit")) {
      const similarity = response.headers.get("x-cache-similarity");
      const age = response.headers.get("age");
      node.dataset.similarity = similarity || "";
      source.textContent =
        (cache === "hit-semantic" ? `similarity ${Number(similarity).toFixed(3)} · ` : "") +
        `from the cache, stored ${age || 0} s ago`;
    } else {
      const backend = response.headers.get("x-gateway-backend") || "";
      node.dataset.backend = backend;
      const shared = response.headers.get("x-gateway-coalesced") ? " · shared an identical request's engine call" : "";
      source.replaceChildren(bypass ? "cache bypassed · " : "", "engine ", Object.assign(document.createElement("code"), { textContent: backend }), shared);
    }
  }

  function timing(node, started, first, done, tokens) {
    const parts = [];
    if (first !== null) parts.push(`first token <b>${seconds(first - started)}</b>`);
    if (done !== null) parts.push(`total <b>${seconds(done - started)}</b>`);
    if (tokens) parts.push(`${tokens} tokens`);
    node.querySelector(".timing").innerHTML = parts.join(" · ");
    if (done !== null) node.dataset.ms = String(Math.round(done - started));
  }

  // Reads an SSE body: calls onEvent with each parsed `data:` payload, stops at [DONE].
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const payload = line.slice(5).trim();
          if (payload === "[DONE]") return true;
          onEvent(JSON.parse(payload));
        }
      }
    }
  }

  async function ask(text, bypass) {
    if (busy || !text.trim()) return;
    if (!modelSelect.value) await loadModels();
    busy = true;
    document.body.classList.add("busy");
    document.querySelectorAll("button").forEach((b) => (b.disabled = true));
    const node = exchange(text);
    node.scrollIntoView({ block: "end" });
    const answer = node.querySelector(".text");
    const started = performance.now();
    let first = null;
    let tokens = 0;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: headers({ "content-type": "application/json", ...(bypass ? { "cache-control": "no-cache" } : {}) }),
        body: JSON.stringify({
          model: modelSelect.value,
          messages: [{ role: "user", content: text }],
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      if (!response.ok) throw new Error(await errorText(response));
      describe(node, response, bypass);
      node.dataset.state = "streaming";
      const finished = await readEvents(response, (chunk) => {
        if (chunk.error) throw new Error(chunk.error.message || "the stream broke off");
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) first = performance.now();
          answer.textContent += delta.content;
          timing(node, started, first, null, 0);
        }
      });
      if (!finished) throw new Error("the stream ended without [DONE]");
      timing(node, started, first, performance.now(), tokens);
      node.dataset.state = "done";
    } catch (error) {
      node.dataset.state = "error";
      if (!node.dataset.cache) {
        node.querySelector(".badge").textContent = "error";
        node.querySelector(".badge").className = "badge error";
      }
      answer.textContent += (answer.textContent ? "\n" : "") + String(error.message || error);
      timing(node, started, first, performance.now(), tokens);
    } finally {
      busy = false;
      document.body.classList.remove("busy");
      document.querySelectorAll("button").forEach((b) => (b.disabled = false));
      document.body.dataset.answers = String(log.querySelectorAll(".exchange[data-state=done], .exchange[data-state=error]").length);
      node.scrollIntoView({ block: "end" });
    }
  }

  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value.trim();
    if (!text) return;
    question.value = "";
    ask(text, false);
  });
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("ask").requestSubmit();
    }
  });

  loadModels().catch((error) => notice(String(error)));
})();
