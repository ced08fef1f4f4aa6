// The {{name}} component: answers every request with a greeting.
//
// StarlingMonkey (componentize-js) turns each wasi:http request into a
// service-worker style "fetch" event. An instance answers one request
// (wasmgate makes a fresh one per request; do not turn on `reuse`).

// lib "WebWorker" declares FetchEvent, but no global "fetch" listener.
declare global {
  interface DedicatedWorkerGlobalScopeEventMap {
    fetch: FetchEvent;
  }
}

addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  event.respondWith(
    new Response(`Hello from {{name}}! You asked for ${url.pathname}${url.search}\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    }),
  );
});

export {};
