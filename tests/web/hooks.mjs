// Module hooks for the web tests: the front end's /scripts/app.js and /scripts/api.js resolve to
// stubs, and the extension's .js files load as ES modules (the browser treats them so).
const STUBS = {
  "/scripts/app.js": new URL("./stubs/app.mjs", import.meta.url).href,
  "/scripts/api.js": new URL("./stubs/api.mjs", import.meta.url).href,
};
const WEB_DIR = new URL("../../web/", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  for (const [suffix, url] of Object.entries(STUBS)) {
    if (specifier.startsWith(".") && specifier.endsWith(suffix)) return { url, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}

export async function load(url, context, nextLoad) {
  if (url.startsWith(WEB_DIR) && url.endsWith(".js")) return nextLoad(url, { ...context, format: "module" });
  return nextLoad(url, context);
}
