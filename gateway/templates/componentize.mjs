// Builds a wasi:http component from a JavaScript file with componentize-js
// (the StarlingMonkey engine). Usage: node componentize.mjs ENTRY.js OUT.wasm
//
// The engine in the componentize-js package carries the WIT it implements
// (wasi:http@0.2.10 and its dependencies) in its `component-type:bindings`
// custom section; that becomes the WIT dependency of a one-line world that
// exports wasi:http/incoming-handler, so the project ships no WIT files.
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const [entry, out] = process.argv.slice(2);
if (!entry || !out) {
  throw new Error("usage: node componentize.mjs ENTRY.js OUT.wasm");
}
const engine = fileURLToPath(
  new URL(
    "../lib/starlingmonkey_embedding.wasm",
    import.meta.resolve("@bytecodealliance/componentize-js"),
  ),
);
// Compiling only reads the sections (V8 compiles function bodies lazily).
const module = await WebAssembly.compile(await readFile(engine));
const [bindings] = WebAssembly.Module.customSections(module, "component-type:bindings");
if (!bindings) {
  throw new Error(`${engine} carries no component-type:bindings section`);
}
const wit = await mkdtemp(join(tmpdir(), "componentize-wit-"));
try {
  await mkdir(join(wit, "deps"));
  await writeFile(join(wit, "deps", "starlingmonkey.wasm"), new Uint8Array(bindings));
  await writeFile(
    join(wit, "app.wit"),
    "package local:app;\nworld app { export wasi:http/incoming-handler@0.2.10; }\n",
  );
  const { component } = await componentize({ sourcePath: entry, witPath: wit, worldName: "app" });
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, component);
  console.log(`wrote ${out} (${component.length} bytes)`);
} finally {
  await rm(wit, { recursive: true, force: true });
}
