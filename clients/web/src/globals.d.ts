// Globals of the page for the type checker (tsconfig.json); nothing here is bundled.

interface Window {
  /** The test hook main.js installs (README "Test hook"); the browser tests read it. */
  worldserverTest?: Record<string, unknown>;
  /** The dashboard's test hook (src/admin/main.js); tests/browser/admin.mjs reads it. */
  worldserverAdmin?: Record<string, unknown>;
}
