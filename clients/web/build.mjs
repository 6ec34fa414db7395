// Builds the web client into dist/: src/main.js bundled with esbuild (three.js and
// @geckos.io/client included) as dist/app.js, plus index.html and styles.css copied.
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
  entryPoints: [join(root, "src", "main.js")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  minify: !dev,
  sourcemap: true,
  legalComments: "linked",
  logLevel: "warning",
});
for (const f of ["index.html", "styles.css"]) copyFileSync(join(root, f), join(dist, f));
console.log(`built ${dist}`);
