// The only JavaScript of the app (served as /boot.js: the Content-Security-Policy allows no inline script): load
// Pyodide from our own server, fetch web/py/*.py into its file system and run main.py. Everything else is Python
// (web/py/). A new module in web/py/ must be added to MODULES.
const PYODIDE = "/vendor/pyodide/314.0.7/";
const MODULES = ["contract.py", "sse.py", "store.py", "reconnect.py", "streams.py", "tree.py", "accounts.py", "api.py", "dom.py",
                 "markdown_parts.py", "markdown_code.py", "markdown_append.py", "markdown_inline.py", "markdown_nodes.py", "markdown_render.py", "markdown_html.py", "md_view.py", "message_view.py", "thread_panel.py",
                 "tree_view.py", "merge_view.py", "pin_selection.py", "renderer_install.py", "unsent.py", "draft.py", "heap.py", "view.py", "navigation.py", "modal.py",
                 "signin_view.py", "account_view.py", "users_view.py", "shell.py", "main.py"];
const TIMEOUT_MS = 60000;
const t0 = performance.now();
const root = document.documentElement;
const stepEl = document.getElementById("boot-step");
const step = (text) => { if (root.dataset.appState !== "error") stepEl.textContent = text; };

function fail(message, detail) {
  if (root.dataset.appState === "error") throw new Error(message);  // keep the first, most precise explanation
  root.dataset.appState = "error";
  stepEl.textContent = message;
  const pre = document.getElementById("boot-error");
  pre.textContent = detail || "";
  pre.hidden = !detail;
  document.getElementById("boot").classList.add("boot-failed");
  throw new Error(message + (detail ? "\n" + detail : ""));
}

// Pre-checks: loadPyodide hangs for ever on a .wasm with the wrong MIME type and fails cryptically on a missing
// lock file, so look at both ourselves and say what is wrong.
async function expectFile(name, type) {
  let resp;
  // One byte of the file, from a distinct URL so that it does not collide with the <link rel=preload> GET.
  try {
    resp = await fetch(PYODIDE + name + "?check", {headers: {Range: "bytes=0-0"}, cache: "no-store"});
    await resp.arrayBuffer();
  }
  catch (e) { fail("Cannot reach the server.", `${PYODIDE}${name}: ${e}`); }
  if (!resp.ok) fail(`The Python runtime is not installed on the server (${name}: HTTP ${resp.status}).`,
                     "Run scripts/vendor_pyodide.sh (or `just setup`) on the server, then reload.");
  const got = (resp.headers.get("content-type") || "").split(";")[0].trim();
  if (type && got !== type) fail(`The server sends ${name} as "${got}", expected "${type}".`,
                                 "Pyodide cannot start with this content type; fix the server or proxy MIME types.");
}

async function lockFile() {
  let resp;
  try { resp = await fetch(PYODIDE + "pyodide-lock.json", {credentials: "same-origin"}); }
  catch (e) { fail("Cannot reach the server.", String(e)); }
  if (!resp.ok) fail(`The Python runtime is incomplete: pyodide-lock.json is missing (HTTP ${resp.status}).`,
                     "Run scripts/vendor_pyodide.sh (or `just setup`) on the server, then reload.");
  return resp.json();
}

async function appSource(name) {
  let resp;
  try { resp = await fetch("/py/" + name, {cache: "no-cache"}); }
  catch (e) { fail("Cannot reach the server.", String(e)); }
  if (!resp.ok) fail(`Cannot load the app module ${name} (HTTP ${resp.status}).`);
  return [name, await resp.text()];
}

// The Markdown renderer's pure-Python wheels (markdown-it-py, Pygments, latex2mathml...), vendored by
// scripts/vendor_wheels.sh: fetched (and checked) with the rest, but unpacked and imported only once the page is
// usable (installRenderer): answers show as plain text for that moment, the composer ~0.8 s sooner.
const WHEELS = "/vendor/wheels/";
async function wheelFiles() {
  let resp;
  try { resp = await fetch(WHEELS + "manifest.json", {cache: "no-cache"}); }
  catch (e) { fail("Cannot reach the server.", String(e)); }
  if (!resp.ok) fail(`The Markdown renderer is not installed on the server (manifest.json: HTTP ${resp.status}).`,
                     "Run scripts/vendor_wheels.sh (or `just setup`) on the server, then reload.");
  const names = (await resp.json()).wheels || [];
  return Promise.all(names.map(async (name) => {
    let wheel;
    try { wheel = await fetch(WHEELS + name); }
    catch (e) { fail("Cannot reach the server.", String(e)); }
    if (!wheel.ok) fail(`The Markdown renderer is incomplete: ${name} is missing (HTTP ${wheel.status}).`,
                        "Run scripts/vendor_wheels.sh (or `just setup`) on the server, then reload.");
    return [name, await wheel.arrayBuffer()];
  }));
}

async function boot() {
  const lock = lockFile();
  const sources = Promise.all(MODULES.map(appSource));
  const wheels = wheelFiles();
  const checks = Promise.all([expectFile("pyodide.asm.wasm", "application/wasm"),
                              expectFile("python_stdlib.zip", null)]);
  const { loadPyodide } = await import(PYODIDE + "pyodide.mjs").catch(
    (e) => fail("Cannot load the Python runtime (pyodide.mjs).", String(e)));
  step("Loading Python… (the first visit downloads it, about 14 MB; later visits take it from the cache)");
  const pyodide = await Promise.all([loadPyodide({indexURL: PYODIDE, lockFileContents: lock}), checks])
    .then(([py]) => py, (e) => fail("The Python runtime failed to start.", String(e)));
  root.dataset.pyodideMs = String(Math.round(performance.now() - t0));
  globalThis.pinchat = {pyodide};  // a handle for the console and the browser tests
  step("Starting the app…");
  const dir = "/home/pyodide/app";
  pyodide.FS.mkdirTree(dir);
  for (const [name, text] of await sources) pyodide.FS.writeFile(`${dir}/${name}`, text);
  const rendererWheels = await wheels;
  // Shown (under the boot screen, which covers the page) before Python starts it: a hidden element cannot take
  // the focus, and the app focuses its composer (or the sign-in form) as it starts.
  document.getElementById("app").hidden = false;
  try {
    await pyodide.runPythonAsync(`import sys\nsys.path.insert(0, "${dir}")\nimport main\nawait main.start()`);
  } catch (e) {
    fail("The app crashed while starting.", String(e));
  }
  document.getElementById("boot").remove();
  root.dataset.readyMs = String(Math.round(performance.now() - t0));
  root.dataset.appState = "ready";
  return [pyodide, rendererWheels];
}

// After the page is usable: a failure here leaves answers as plain text (said on the console), not a dead page.
async function installRenderer([pyodide, wheels]) {
  try {
    for (const [name, buf] of wheels) {
      await new Promise((resolve) => setTimeout(resolve, 0));  // one wheel per task: input and frames go between
      pyodide.unpackArchive(buf, "wheel");
    }
    await pyodide.runPythonAsync("import main\nawait main.install_renderer()");
  } catch (e) {
    root.dataset.renderer = "failed";
    console.error("pinchat: the Markdown renderer could not be installed; answers stay plain text.", e);
  }
}

const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), TIMEOUT_MS));
Promise.race([boot(), timeout]).then(installRenderer, (e) => {
  if (e && e.message === "timeout") {
    fail(`The Python runtime did not start within ${TIMEOUT_MS / 1000} s.`,
         "Check the browser console; a .wasm served with the wrong MIME type makes loading hang.");
  }
  fail("Loading failed.", String(e && e.stack || e));
}).catch((e) => console.error(e));
