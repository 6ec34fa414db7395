// Builds the web client into dist/: src/main.js bundled with esbuild (three.js and
// @geckos.io/client included) as dist/app.js, the dashboard src/admin/main.js as
// dist/admin.js, plus index.html, styles.css, admin.html and admin.css copied.
// `node build.mjs` (or `npm run build`); `--dev` keeps it unminified.

import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const dev = process.argv.includes("--dev");

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await build({
  entryPoints: { app: join(root, "src", "main.js"), admin: join(root, "src", "admin", "main.js") },
  outdir: dist,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  minify: !dev,
  sourcemap: true,
  legalComments: "linked",
  logLevel: "warning",
});
for (const f of ["index.html", "styles.css", "admin.html", "admin.css"]) copyFileSync(join(root, f), join(dist, f));
console.log(`built ${dist}`);
