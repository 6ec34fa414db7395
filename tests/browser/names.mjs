// A name belongs to the browser that took it (driven by tests/test_browser.py):
// 1. window A joins as a fresh name; the secret of that join is in localStorage;
// 2. window B of the same browser joins as the same name: it presents the secret, gets the
//    name, and A's avatar and chat are ended ("replaced", "signed in elsewhere"), not
//    reconnected; the world holds one avatar of that name;
// 3. another browser (its own profile, no secret) is refused the name;
// 4. B reloads: the name comes back (secret again), and the join form was filled in with it;
// 5. the operator kicks B with a reason and a ban (the admin API, as `worldserver kick`, with
//    --token): B's session and chat end as "kicked" with the server's text -- who, why, for
//    how long -- shown in its notice, not "signed in elsewhere", and neither reconnects.
// Prints one JSON object (see launch.mjs).

import { joinGallery, launch, runScript, waitFor } from "./launch.mjs";

const snapshot = () => {
  const t = window.worldserverTest;
  const st = t.stats();
  return {
    session: st.state, error: st.error || "", chat: t.chat ? t.chat.state : null, chat_error: t.chat ? t.chat.stats().error || "" : "",
    notice: t.notice, reconnects: st.reconnects, self_id: t.selfId, name: t.name,
  };
};

runScript(async (args, state) => {
  const browser = await launch();
  state.browser = browser;
  const name = `keeper-${Date.now() % 100000}`;
  const a = await joinGallery(browser, args.url, name, { label: "A" });
  await waitFor(a, () => window.worldserverTest.chat && window.worldserverTest.chat.ready, { what: "A's chat" });
  const stored = await a.evaluate(() => JSON.parse(localStorage.getItem("worldserver.names") || "{}"));
  const entry = Object.values(stored.names || {})[0] || {};
  if (entry.name !== name) throw new Error(`no secret stored for ${name}: ${JSON.stringify(stored)}`);

  const b = await joinGallery(browser, args.url, name, { label: "B" });
  await waitFor(b, () => window.worldserverTest.chat && window.worldserverTest.chat.ready, { what: "B's chat" });
  await waitFor(a, () => window.worldserverTest.stats().state === "replaced", { what: "A's session to be replaced" });
  await waitFor(a, () => window.worldserverTest.chat.state === "replaced", { what: "A's chat to be closed" });
  const first = await a.evaluate(snapshot);
  const second = await b.evaluate(snapshot);
  const players = await b.evaluate(async () => (await (await fetch("/api/players")).json()).players);
  const avatarsNamed = players.filter((p) => p.name === name).length;

  // Someone else: a second browser with its own (empty) storage.
  const other = await launch();
  let strangerError = "";
  try {
    const c = await other.newPage("C");
    await c.goto(args.url, { waitUntil: "load" });
    await c.waitForSelector("#join-name:not([disabled])");
    await c.fill("#join-name", name);
    await c.click("#join-button");
    await waitFor(c, () => document.getElementById("join-error").textContent.length > 0, {
      timeout: 10000,
      what: "an error for the stranger",
    });
    strangerError = await c.evaluate(() => document.getElementById("join-error").textContent);
  } finally {
    await other.close();
  }

  // B reloads: the form is filled in with the last name, and joining gets it back.
  await b.reload({ waitUntil: "load" });
  await b.waitForSelector("#join-name:not([disabled])");
  const prefilled = await b.inputValue("#join-name");
  await b.click("#join-button");
  await waitFor(b, () => window.worldserverTest && window.worldserverTest.ready, { what: "B to be back" });
  const reloaded = await b.evaluate(snapshot);

  // The operator kicks B.
  await waitFor(b, () => window.worldserverTest.chat && window.worldserverTest.chat.ready, { what: "B's chat after the reload" });
  const res = await fetch(`${args.url}/admin/api/players/${encodeURIComponent(name)}/kick`, {
    method: "POST",
    headers: { Authorization: `Bearer ${args.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ reason: "testing the kick", ban: 120 }),
  });
  if (!res.ok) throw new Error(`kick: HTTP ${res.status} ${await res.text()}`);
  await waitFor(b, () => window.worldserverTest.stats().state === "kicked", { what: "B's session to be kicked" });
  await waitFor(b, () => window.worldserverTest.chat.state === "kicked", { what: "B's chat to be closed by the kick" });
  const kicked = await b.evaluate(snapshot);
  const left = (await (await fetch(`${args.url}/api/players`)).json()).players.filter((p) => p.name === name).length;
  return {
    name,
    secret_length: String(entry.secret || "").length,
    first,
    second,
    avatars_named: avatarsNamed,
    stranger_error: strangerError,
    prefilled,
    reloaded,
    kicked,
    avatars_named_after_kick: left,
  };
});
