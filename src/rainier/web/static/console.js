// The console's own behaviour beyond htmx: following a rank's log, and the chat playground.
// Whatever comes from the server is inserted as text (textContent), never as markup.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function followLogs(pre) {
  const status = document.getElementById("log-status");
  let offset = 0;
  let generation = 0;

  async function poll(mine) {
    while (mine === generation) {
      let chunk;
      try {
        const url = `/jobs/${encodeURIComponent(pre.dataset.job)}/logs?rank=${pre.dataset.rank}&offset=${offset}`;
        const response = await fetch(url, { credentials: "same-origin" });
        chunk = await response.json();
        if (!response.ok) {
          status.textContent = chunk.message || `error ${response.status}`;
          return;
        }
      } catch (err) {
        status.textContent = "reconnecting…";
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      if (mine !== generation) return;
      if (chunk.data) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(document.createTextNode(chunk.data));
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      offset = chunk.offset;
      if (chunk.done) {
        status.textContent = "ended";
        pre.dataset.done = "true";
        return;
      }
      status.textContent = "following";
      if (!chunk.data) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  function start(rank) {
    generation += 1;
    offset = 0;
    pre.textContent = "";
    pre.dataset.rank = rank;
    delete pre.dataset.done;
    poll(generation);
  }

  document.querySelectorAll("button.rank").forEach((button) => {
    button.addEventListener("click", () => {
      document.querySelectorAll("button.rank").forEach((b) => b.classList.remove("here"));
      button.classList.add("here");
      start(button.dataset.rank);
    });
  });
  start(pre.dataset.rank || "0");
}

function playground(section) {
  const form = document.getElementById("chat-form");
  const prompt = document.getElementById("prompt");
  const transcript = document.getElementById("transcript");
  const status = document.getElementById("chat-status");
  const messages = [];

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    div.textContent = text;
    transcript.append(div);
    return div;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) return;
    messages.push({ role: "user", content: text });
    bubble("user", text);
    prompt.value = "";
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    status.textContent = "waiting for the first token…";
    const started = performance.now();
    let firstAt = null;
    let chunks = 0;
    let reply = "";
    try {
      const response = await fetch(section.dataset.endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrfToken() },
        body: JSON.stringify({ messages, max_tokens: Number(document.getElementById("max-tokens").value) || 32 }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.message || `error ${response.status}`);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const parsed = JSON.parse(data);
            if (parsed.error) throw new Error(parsed.error.message || "the gateway failed");
            const delta = parsed.choices && parsed.choices[0] && parsed.choices[0].delta;
            if (delta && delta.content) {
              if (firstAt === null) firstAt = performance.now();
              chunks += 1;
              reply += delta.content;
              answer.textContent = reply;
              answer.dataset.chunks = String(chunks);
            }
          }
        }
      }
      messages.push({ role: "assistant", content: reply });
      const total = (performance.now() - started) / 1000;
      const ttft = firstAt === null ? "-" : ((firstAt - started) / 1000).toFixed(2);
      status.textContent = `${chunks} chunks; first token ${ttft} s, total ${total.toFixed(2)} s`;
    } catch (err) {
      answer.classList.add("failed");
      status.textContent = String(err.message || err);
      messages.pop();
    } finally {
      answer.classList.remove("streaming");
      answer.dataset.finished = "true";
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const pre = document.getElementById("log");
  if (pre) followLogs(pre);
  const section = document.getElementById("playground");
  if (section) playground(section);
});
