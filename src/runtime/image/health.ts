import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { HealthConfig } from './config.js';
import { deadline } from './deadline.js';
import type { LaunchedInstance } from './launchers.js';
import { hostPort } from './upstream.js';

/**
 * One health check of an instance per the package's `health` block (ModelArts): HTTP GET of
 * `url` answering 2xx/3xx, an EXEC command exiting 0, or (no block) a TCP connect. Resolves with
 * null when healthy, else with what was wrong.
 */
export function probe(h: HealthConfig, inst: LaunchedInstance): Promise<string | null> {
  const timeoutMs = h.timeout_seconds * 1000;
  switch (h.check_method) {
    case 'HTTP': return httpProbe(h, inst, timeoutMs);
    case 'EXEC': return inst.exec(h.command!, timeoutMs).then(
      (code) => (code === 0 ? null : code === -1 ? `health command did not finish within ${h.timeout_seconds} s` : `health command exited with code ${code}`),
      (err: Error) => `health command could not run: ${err.message}`,
    );
    case 'TCP': return tcpProbe(inst, timeoutMs);
  }
}

function httpProbe(h: HealthConfig, inst: LaunchedInstance, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const mod = h.protocol === 'https' ? https : http;
    const where = `${h.protocol}://${hostPort(inst)}${h.url}`;
    const req = mod.request({ host: inst.host, port: inst.port, path: h.url, method: 'GET', agent: false, rejectUnauthorized: false }, (res) => {
      cancel();
      res.resume();
      const code = res.statusCode ?? 0;
      resolve(code >= 200 && code < 400 ? null : `GET ${where} answered ${code}`);
    });
    const cancel = deadline(timeoutMs, () => req.destroy(new Error(`no answer within ${h.timeout_seconds} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      cancel();
      resolve(`GET ${where} failed: ${err.code ?? err.message}`);
    });
    req.end();
  });
}

/**
 * The check of a starting instance: its probe, and, for an EXEC probe (which can pass before the
 * server listens), its port accepting a connection too, so no request meets a closed port. A
 * port refused on the instance's address is tried on its other addresses (a server told HOST=127.0.0.1
 * that listens on 'localhost', which resolves to ::1 first on many hosts); the one that answers
 * becomes the instance's address.
 */
export async function startupProbe(h: HealthConfig, inst: LaunchedInstance): Promise<string | null> {
  const why = await startupCheck(h, inst);
  if (why === null || !inst.otherHosts || !why.includes('ECONNREFUSED')) return why;
  for (const host of inst.otherHosts) {
    if ((await startupCheck(h, { ...inst, host })) === null) {
      inst.host = host;
      return null;
    }
  }
  return why;
}

async function startupCheck(h: HealthConfig, inst: LaunchedInstance): Promise<string | null> {
  return (await probe(h, inst)) ?? (h.check_method === 'EXEC' ? tcpProbe(inst, h.timeout_seconds * 1000) : null);
}

function tcpProbe(inst: LaunchedInstance, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host: inst.host, port: inst.port });
    const done = (why: string | null): void => {
      cancel();
      s.destroy();
      resolve(why);
    };
    const cancel = deadline(timeoutMs, () => done(`no TCP connection to ${hostPort(inst)} within ${timeoutMs / 1000} s`));
    s.on('connect', () => done(null));
    s.on('error', (err: NodeJS.ErrnoException) => done(`no TCP connection to ${hostPort(inst)}: ${err.code ?? err.message}`));
  });
}
