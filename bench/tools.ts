// The external programs the bench drives (wrk, nginx): found on PATH, or installed from Debian
// with apt-get when BENCH_INSTALL=1 and we run as root (never behind the user's back otherwise).
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The executable `cmd` on PATH or in `extraDirs`, else undefined. */
export function onPath(cmd: string, extraDirs: string[] = []): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...extraDirs]) {
    if (!dir) continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Whether BENCH_INSTALL=1 lets us apt-get a missing tool (only as root: no sudo prompts). */
export function mayInstall(): boolean {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  return isRoot && process.env.BENCH_INSTALL === '1';
}

/**
 * `apt-get install -y pkg` (after `apt-get update` if the first try fails: a fresh container has
 * no package lists), when mayInstall(); returns the path of `cmd` afterwards, else undefined.
 */
export function aptInstall(pkg: string, cmd: string, extraDirs: string[] = []): string | undefined {
  if (!mayInstall()) return undefined;
  console.error(`bench: ${cmd} not found; BENCH_INSTALL=1 and root: apt-get install -y ${pkg}`);
  const opts = { stdio: 'inherit' as const, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } };
  let r = spawnSync('apt-get', ['install', '-y', pkg], opts);
  if (r.status !== 0) {
    spawnSync('apt-get', ['update'], opts);
    r = spawnSync('apt-get', ['install', '-y', pkg], opts);
  }
  return r.status === 0 ? onPath(cmd, extraDirs) : undefined;
}
