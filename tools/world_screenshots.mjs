// Screenshots of worlds for the README: opens /w/{id} of a running server in headless chromium
// (tests/browser/launch.mjs), joins, turns the camera a little, waits for the pictures and
// writes one PNG per world.
//
//   node tools/world_screenshots.mjs --url http://127.0.0.1:PORT --worlds gallery,halls --out docs/images
// Prints one JSON object (the files written); exit code 0 when every world was captured.

import { writeFileSync } from "node:fs";
import { join } from "node:path";

import { joinGallery, launch, runScript, waitFor } from "../tests/browser/launch.mjs";

runScript(async (args, state) => {
  if (!args.url || !args.worlds || !args.out) throw new Error("--url, --worlds and --out are required");
  state.browser = await launch({ viewport: { width: 1280, height: 720 } });
  const written = [];
  for (const world of String(args.worlds).split(",")) {
    // full pixel ratio and antialiasing: the software renderer's automatic downscaling is for speed
    const page = await joinGallery(state.browser, `${args.url}/w/${world}?pr=1&aa=1`, `curator-${world}`, { timeout: 60000 });
    await waitFor(page, (id) => window.worldserverTest.world().id === id, { arg: world, what: `the ${world} world` });
    // along the corridor (halls) or toward the north wall (gallery): the camera follows behind
    const [mx, mz] = world === "halls" ? [1, 0] : [0, 1];
    await page.evaluate(([x, z]) => window.worldserverTest.sendMove(x, z, 900), [mx, mz]);
    await page.waitForTimeout(2500); // let the pictures' textures load and the camera settle
    const file = join(args.out, `world-${world}.png`);
    writeFileSync(file, await page.screenshot({ type: "png" }));
    written.push(file);
    await page.close();
  }
  return { ok: true, written };
});
