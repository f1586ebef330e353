import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';

const LOCK = 'gateway.lock';
const OWNER = 'gateway.owner';

/**
 * One gateway per data dir: a second one would recover the same services beside the first,
 * start their instances twice and remove the first one's containers as leftovers. The lock is an
 * exclusive SQLite transaction held on a file of its own for the gateway's life: a kernel file
 * lock, so it holds across processes in other PID namespaces (containers sharing the volume) and
 * goes when its process dies, however it dies. `gateway.owner` only says who holds it. Returns
 * its release.
 */
/** Held locks: referenced here so that no garbage collection can close one (and free the data dir) early. */
const held = new Set<Database.Database>();

export function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, LOCK);
  let db: Database.Database;
  try {
    db = new Database(file);
  } catch (err) {
    throw new Error(`cannot lock the data dir ${dataDir} (${file}): ${(err as Error).message}`);
  }
  try {
    db.pragma('busy_timeout = 0');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code !== 'SQLITE_BUSY') throw new Error(`cannot lock the data dir ${dataDir} (${file}): ${(err as Error).message}`);
    let owner = '';
    try {
      owner = readFileSync(path.join(dataDir, OWNER), 'utf8').trim();
    } catch { /* not written yet */ }
    throw new Error(`the data dir ${dataDir} is in use by another gateway${owner ? ` (${owner})` : ''}; stop it first, or give this one its own --data-dir`);
  }
  held.add(db);
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    held.delete(db);
    db.exec('ROLLBACK');
    db.close();
  };
  try {
    writeFileSync(path.join(dataDir, OWNER), `pid ${process.pid} on ${hostname()} since ${new Date().toISOString()}\n`);
  } catch (err) {
    release();
    throw err;
  }
  return release;
}
