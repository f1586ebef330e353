import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const FILE = 'gateway-id';

/**
 * This gateway's identity, stable across restarts of the same data dir: what it labels the
 * things it creates outside itself (Docker containers) with, so that a later start can find and
 * remove those a killed run left, and never touches another gateway's.
 */
export function gatewayId(dataDir: string): string {
  const file = path.join(dataDir, FILE);
  try {
    const id = readFileSync(file, 'utf8').trim();
    if (id) return id;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const id = randomUUID();
  // 'wx': if another process wrote it first, its id wins (read it back).
  try {
    writeFileSync(file, `${id}\n`, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return readFileSync(file, 'utf8').trim();
  }
  return id;
}
