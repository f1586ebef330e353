import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const FILE = 'gateway.pid';

/** Whether a process with this id runs (one we may not signal still runs). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One gateway per data dir: a second one would recover the same services beside the first,
 * start their instances twice and remove the first one's containers as leftovers. The lock is a
 * file holding the owner's pid; one whose process is gone (a gateway killed with kill -9) is
 * taken over. Returns its release.
 */
export function lockDataDir(dataDir: string): () => void {
  const file = path.join(dataDir, FILE);
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
    }
    let owner = NaN;
    try {
      owner = Number(readFileSync(file, 'utf8').trim());
    } catch { /* removed meanwhile: try again */ }
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
      throw new Error(`the data dir ${dataDir} is in use by another gateway (pid ${owner}, in ${file}); stop it first, or give this one its own --data-dir`);
    }
    // Left by a gateway that is gone: taken over.
    try {
      unlinkSync(file);
    } catch { /* removed meanwhile */ }
  }
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    try {
      if (readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file);
    } catch { /* already gone */ }
  };
  process.once('exit', release);
  return release;
}
