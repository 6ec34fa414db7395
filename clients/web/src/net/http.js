// The web client's one way to ask the server for JSON over HTTP (the page, the chat panel's
// image upload, the dashboard's admin API): fetchJson sends a request and reads the answer's
// body as JSON, or null when the body is empty, is not JSON or breaks off; getJson is a GET
// that wants a JSON answer and rejects otherwise.
//
// Must not: decide what an HTTP error status means (the caller turns status and body into
// its own error and text), add headers the caller did not give, retry, or touch the DOM.
// `fetch` can be replaced (the admin client's node tests pass their own).

/** An answer: the response, its status, and its body parsed as JSON (null when it has none
 * that parses).
 * @typedef {{ res: Response, ok: boolean, status: number, body: any }} JsonAnswer */

/** The fetch used here: the global one, or a stand-in with the same signature.
 * @typedef {(input: string, init?: RequestInit) => Promise<Response>} FetchFn */

/**
 * The answer's body as JSON, or null when it is empty, not JSON, or cannot be read (the
 * connection broke off mid-body).
 * @param {Response} res
 * @returns {Promise<any>}
 */
export async function jsonBody(res) {
  try {
    return await res.json();
  } catch {
    return null;
  }
}

/**
 * One request and its answer's JSON body, whatever the status (`ok`/`status` say it).
 * Rejects only when no answer came (the fetch itself failed: the server is down, the
 * network failed), with the fetch's own error.
 * @param {string} url
 * @param {RequestInit} [init] as for fetch; sent as given (ask for JSON with an Accept header)
 * @param {FetchFn} [fetchFn] defaults to the global fetch
 * @returns {Promise<JsonAnswer>}
 */
export async function fetchJson(url, init = {}, fetchFn = globalThis.fetch.bind(globalThis)) {
  const res = await fetchFn(url, init);
  return { res, ok: res.ok, status: res.status, body: await jsonBody(res) };
}

/**
 * GET `url` with `Accept: application/json`; resolves with the JSON body. Rejects with an
 * Error "`url`: HTTP `status`" for an error status, and "`url`: the answer is not JSON" when
 * the body does not parse (or is the JSON `null`), as the fetch does when no answer came.
 * @param {string} url
 * @param {FetchFn} [fetchFn] defaults to the global fetch
 * @returns {Promise<any>}
 */
export async function getJson(url, fetchFn) {
  const { ok, status, body } = await fetchJson(url, { headers: { Accept: "application/json" } }, fetchFn);
  if (!ok) throw new Error(`${url}: HTTP ${status}`);
  if (body === null) throw new Error(`${url}: the answer is not JSON`);
  return body;
}
