// Following a job: its event stream (Server-Sent Events read through fetch, so the API key can be sent as a
// Bearer header, which EventSource cannot), or polling GET /v1/jobs/{id} every second where there is none.

import { api, authHeaders, openApiDocument } from "./api.js";

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const POLL_MS = 1000;
const EVENTS_PATH = /^\/v1\/jobs\/\{[^}]+\}\/events$/;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Whether the API documents an events route (so no 404 is ever requested); unknown counts as yes. */
async function hasEventStream() {
  try {
    const document_ = await openApiDocument();
    return Object.keys(document_.paths || {}).some((path) => EVENTS_PATH.test(path));
  } catch {
    return true;
  }
}

/** Split an SSE text stream into events: {event, data, id}. `feed` returns the complete events so far. */
export function sseParser() {
  let buffer = "";
  return function feed(chunk) {
    buffer += chunk;
    const events = [];
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer[end] === "\r" ? 4 : 2));
      const message = { event: "message", data: [], id: null };
      for (const line of block.split(/\r?\n/)) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") message.event = value;
        else if (field === "data") message.data.push(value);
        else if (field === "id") message.id = value;
      }
      if (message.data.length) events.push({ ...message, data: message.data.join("\n") });
    }
    return events;
  };
}

/** Read the job's event stream; resolves true after `end`, false when there is no usable stream. */
async function stream(jobId, handlers, signal) {
  let response;
  try {
    response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
      headers: authHeaders({ Accept: "text/event-stream" }),
      signal,
    });
  } catch {
    return false;
  }
  const type = response.headers.get("content-type") || "";
  if (!response.ok || !type.startsWith("text/event-stream") || !response.body) return false;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const feed = sseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false; // closed without `end`: polling picks up the final state
      for (const message of feed(value)) {
        const data = JSON.parse(message.data);
        if (message.event === "progress") handlers.onProgress(data);
        else if (message.event === "status") handlers.onStatus(data);
        else if (message.event === "end") {
          handlers.onJob(data);
          return true;
        }
      }
    }
  } catch (error) {
    if (signal.aborted) return true;
    return false;
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function poll(jobId, handlers, signal) {
  handlers.onMode?.("polling");
  while (!signal.aborted) {
    const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { signal });
    handlers.onJob(job);
    if (TERMINAL.has(job.status)) return;
    await sleep(POLL_MS, signal);
  }
}

/** Follow a job until it ends or `signal` aborts: handlers onJob(record), onProgress(p), onStatus(s), onMode(m). */
export async function follow(jobId, handlers, signal) {
  if (await hasEventStream()) {
    handlers.onMode?.("events");
    if (await stream(jobId, handlers, signal)) return;
  }
  await poll(jobId, handlers, signal);
}
