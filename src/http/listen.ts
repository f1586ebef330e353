import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';

/** uWebSockets.js' LIBUS_LISTEN_EXCLUSIVE_PORT (its typings give the option only without a host). */
const EXCLUSIVE_PORT = 1;

type ListenWithOptions = (host: string, port: number, options: number, cb: (socket: us_listen_socket | false) => void) => TemplatedApp;

/**
 * Listens without SO_REUSEPORT, which uWebSockets.js sets by default: with it, a second gateway
 * started on a port in use would share it silently with the first, each taking some of the
 * connections, instead of failing to start.
 */
export function listenExclusive(app: TemplatedApp, host: string, port: number, cb: (socket: us_listen_socket | false) => void): void {
  (app.listen as unknown as ListenWithOptions).call(app, host, port, EXCLUSIVE_PORT, cb);
}
