// Shared helpers for tests driving matrix-js-sdk against a Hearth node:
// quiet SDK logging kept for failures, and registration through the
// m.login.dummy user-interactive auth flow.
import * as sdk from 'matrix-js-sdk';
import { logger as sdkLogger } from 'matrix-js-sdk/lib/logger.js';

// The SDK logs a lot (every sync at debug, its own default push rules at
// warn). Keep warnings and errors, from its global logger and from each
// client's, and print them only if a test fails.
export const sdkLog = [];
const fmt = (m) => (m instanceof Error ? m.stack : typeof m === 'object' ? JSON.stringify(m) : String(m));
function keep(tag) {
  return (...m) => sdkLog.push(`[${tag}] ${m.map(fmt).join(' ')}`);
}
sdkLogger.methodFactory = (level) => (level === 'warn' || level === 'error' ? keep(`sdk ${level}`) : () => {});
sdkLogger.rebuild();

/** A logger for one client: warnings and errors go to sdkLog, tagged. */
export function clientLogger(tag) {
  const noop = () => {};
  return {
    trace: noop, debug: noop, info: noop, log: noop,
    warn: keep(`${tag} warn`),
    error: keep(`${tag} error`),
    getChild: (ns) => clientLogger(`${tag}:${ns}`),
  };
}

/** Registers a user with m.login.dummy, doing the user-interactive auth
 * dance if the server asks for a session first. */
export async function register(baseUrl, name) {
  const tmp = sdk.createClient({ baseUrl, logger: clientLogger(name) });
  const req = { username: name, password: `pw-${name}-secret`, auth: { type: 'm.login.dummy' } };
  try {
    return await tmp.registerRequest(req);
  } catch (e) {
    const session = e?.data?.session;
    if (e?.httpStatus !== 401 || !session) throw e;
    return await tmp.registerRequest({ ...req, auth: { type: 'm.login.dummy', session } });
  }
}
