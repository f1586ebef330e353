import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImageConfig } from './config.js';
import { deadline } from './deadline.js';
import { DockerLauncher } from './docker.js';
import { OutputTail } from './output.js';

/** One running instance of an image model, however it was started (SPEC §8.2). */
export interface LaunchedInstance {
  /** Where it answers; a start-up check may move it to one of `otherHosts`. */
  host: string;
  port: number;
  /** Other addresses its server may have taken the port on, tried when `host` refuses at start-up. */
  readonly otherHosts?: readonly string[];
  /** Resolves, saying how, when the instance stops by itself; never for instances someone else runs. */
  readonly exited: Promise<string>;
  /** The instance's recent output (stdout and stderr). */
  logs(): string;
  /** Runs a health command where the instance runs; resolves with its exit code. */
  exec(command: string[], timeoutMs: number): Promise<number>;
  /** Stops it: SIGTERM (or the engine's stop), then a kill after `graceMs`. */
  stop(graceMs: number): Promise<void>;
}

export interface Launcher {
  readonly kind: 'process' | 'docker' | 'static';
  /** Whether a failed instance can be replaced by launching another (not so for static endpoints). */
  readonly restartable: boolean;
  /** How many instances it runs: static runs one per endpoint, whatever `instances` says. */
  count(instances: number): number;
  launch(index: number): Promise<LaunchedInstance>;
}

export interface LaunchContext {
  label: string;
  /** Names the instance in the engine (docker container names). */
  name: string;
  /** The gateway that runs it (its data dir's id): containers carry it so a later start can reap them. */
  owner: string;
  packageDir: string;
  image: ImageConfig;
  env: Record<string, string>;
}

export function launcherFor(ctx: LaunchContext): Launcher {
  switch (ctx.image.launcher) {
    case 'process': return new ProcessLauncher(ctx);
    case 'static': return new StaticLauncher(ctx);
    case 'docker': return new DockerLauncher(ctx);
  }
}

/** How long after its start an instance is given before a SIGTERM is sent to it (see stop()). */
const STARTUP_SIGNAL_MS = 250;

/** Processes still running, killed if the gateway exits without stopping them. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) killGroup(c, 'SIGKILL');
});

function killGroup(c: ChildProcess, signal: NodeJS.Signals): void {
  try {
    // Each instance leads its own process group, so a shell's children stop with it.
    process.kill(-c.pid!, signal);
  } catch {
    c.kill(signal);
  }
}

/**
 * Runs "$@" under a watchdog so that the group dies with the gateway even when the gateway
 * cannot stop it (SIGKILL, a crash, the OOM killer): fd 3 is a socket whose other end only the
 * gateway holds, so reading it ends when the gateway is gone, and then the group gets SIGTERM,
 * then SIGKILL 5 s later. The command runs in the foreground (so it does not start with SIGINT
 * and SIGQUIT ignored, as a background job would) with its own stderr on fd 4, while the shell's
 * own messages ("Terminated") go nowhere. A stop meant for the group waits for the command, one
 * that came before it started skips it, and the shell leaves the way the command left: its exit
 * code, or the same signal when that signal ends a process (no core of its own); an exit code
 * that only looks like a signal the shell could not die of (a stop, a real-time one) stays a
 * code. With the gateway alive the watcher is stopped and reaped; with it gone, the watcher
 * finishes its work.
 */
const WATCHDOG = [
  'unset INFERGATE_WATCHDOG ig_stop',
  'exec 4>&2 2>/dev/null',
  "trap 'ig_stop=1' HUP INT TERM",
  "(trap '' HUP INT TERM; read -r _ <&3; kill -TERM 0; sleep 5; kill -KILL 0) 4>&- &",
  'ig_watcher=$!',
  // In a subshell that execs it: dash applies a simple command's redirections in the shell itself.
  'if [ -z "$ig_stop" ]; then (exec "$@" 2>&4 3<&- 4>&-); ig_code=$?; else ig_code=143; fi',
  'if kill -0 "$PPID"; then kill -KILL "$ig_watcher"; wait "$ig_watcher"; fi',
  'if [ "$ig_code" -gt 128 ]; then case $(kill -l "$ig_code") in',
  '  HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|STKFLT|XCPU|XFSZ|VTALRM|PROF|IO|PWR|SYS)',
  '    ig_sig=$(kill -l "$ig_code"); ulimit -c 0; trap - "$ig_sig"; kill -s "$ig_sig" $$;;',
  'esac; fi',
  'exit "$ig_code"',
].join('\n');

/**
 * The file exec would run for argv0 (PATH, or a path from cwd), or null. The watchdog is given
 * the path, so a name the shell has a builtin of (echo, test, kill) still runs the program.
 */
function executable(argv0: string, cwd: string, env: NodeJS.ProcessEnv): string | null {
  const candidates = argv0.includes('/') ? [path.resolve(cwd, argv0)] : (env['PATH'] ?? '').split(':').map((dir) => path.resolve(cwd, dir || '.', argv0));
  return candidates.find((file) => {
    try {
      accessSync(file, constants.X_OK);
      return statSync(file).isFile();
    } catch {
      return false;
    }
  }) ?? null;
}

/**
 * Starts argv as the leader of a new process group that does not outlive the gateway; stdout
 * and stderr as asked. Without a POSIX shell (Windows) the watchdog is left out, and so it is
 * for a command that cannot run, so that the spawn error names it as Node reports it.
 */
function spawnInstance(argv: string[], cwd: string, env: NodeJS.ProcessEnv, output: 'pipe' | 'ignore'): ChildProcess {
  const file = process.platform === 'win32' ? null : executable(argv[0]!, cwd, env);
  const child = file
    // The script travels in the environment (and leaves it) so that ps shows a short line.
    ? spawn('/bin/sh', ['-c', 'eval "$INFERGATE_WATCHDOG"', 'infergate-instance', file, ...argv.slice(1)], {
      cwd, env: { ...env, INFERGATE_WATCHDOG: WATCHDOG }, stdio: ['ignore', output, output, 'pipe'], detached: true,
    })
    : spawn(argv[0]!, argv.slice(1), { cwd, env, stdio: ['ignore', output, output], detached: true });
  children.add(child);
  child.on('exit', () => {
    children.delete(child);
    // What the command left behind in its group (a daemon, a worker of a pool) goes with it.
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch { /* nothing left */ }
  });
  return child;
}

/** $(VAR), ${VAR} and $VAR in an argv, for the variables the gateway sets (as Kubernetes expands $(VAR)). */
export function expandArgs(args: string[], env: Record<string, string>): string[] {
  return args.map((a) => a.replace(/\$\((\w+)\)|\$\{(\w+)\}|\$(\w+)/g, (m, p1?: string, p2?: string, p3?: string) => {
    const name = (p1 ?? p2 ?? p3)!;
    return env[name] ?? m;
  }));
}

/**
 * A free TCP port on 127.0.0.1, as the kernel hands one out, that is free on ::1 too: an instance
 * may take it there (see `otherHosts`), and must not find another server holding it.
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; ; tries++) {
    const port = await listenFree(0, '127.0.0.1');
    // No IPv6 loopback here, or the port is free there as well: it will do.
    if (tries >= 20 || (await listenFree(port, '::1').then(() => true, (err: NodeJS.ErrnoException) => err.code !== 'EADDRINUSE'))) return port;
  }
}

/** Listens on `port` (0: any) at `host` and closes again; resolves with the port. */
function listenFree(port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen({ port, host, ipv6Only: host === '::1' }, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no free port'))));
    });
  });
}

/** Runs a command to its end, killed after `timeoutMs`; resolves with its exit code (-1: killed or not started). */
export function runCommand(command: string[], cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    const c = spawnInstance(command, cwd, env, 'ignore');
    const cancel = deadline(timeoutMs, () => killGroup(c, 'SIGKILL'));
    c.on('error', () => undefined);
    c.on('close', (code) => {
      cancel();
      resolve(code !== null && code >= 0 ? code : -1);
    });
  });
}

/**
 * `process`: the package's command as a child process with PORT (a free local port) and
 * MODEL_PATH (the package folder, also its working directory): how tests and laptops run
 * "containers".
 */
export class ProcessLauncher implements Launcher {
  readonly kind = 'process';
  readonly restartable = true;

  constructor(private readonly ctx: LaunchContext) {}

  count(instances: number): number {
    return instances;
  }

  async launch(): Promise<LaunchedInstance> {
    const port = await freePort();
    // HOST: where to listen, for servers that read it (a HOST in the gateway's own environment must not open the model to the network).
    const vars = { HOST: '127.0.0.1', ...this.ctx.image.env, ...this.ctx.env, PORT: String(port), MODEL_PATH: this.ctx.packageDir };
    const env = { ...process.env, ...vars };
    const argv = expandArgs(this.ctx.image.command!, vars);
    const output = new OutputTail();
    const spawnedAt = performance.now();
    const child = spawnInstance(argv, this.ctx.packageDir, env, 'pipe');
    child.stdout!.setEncoding('utf8').on('data', (s: string) => output.push(s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => output.push(s));
    let done = false;
    const exited = new Promise<string>((resolve) => {
      child.on('error', (err) => {
        done = true;
        resolve(`could not start \`${argv[0]}\`: ${err.message}`);
      });
      child.on('exit', (code, signal) => {
        done = true;
        resolve(signal ? `was killed by ${signal}` : `exited with code ${code}`);
      });
    });
    const cwd = this.ctx.packageDir;
    return {
      host: '127.0.0.1',
      // HOST says 127.0.0.1, but a server that listens on 'localhost' gets ::1 where the resolver puts it first.
      otherHosts: ['::1'],
      port,
      exited,
      logs: () => output.text(),
      exec: (command, timeoutMs) => runCommand(expandArgs(command, vars), cwd, env, timeoutMs),
      async stop(graceMs) {
        // A SIGTERM in the first moments can reach the watchdog's subshell before it execs the
        // command, and be lost there: a stop that early waits until the command runs.
        const early = STARTUP_SIGNAL_MS - (performance.now() - spawnedAt);
        if (early > 0 && !done) await Promise.race([sleep(early), exited]);
        if (done) return;
        killGroup(child, 'SIGTERM');
        const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      },
    };
  }
}

/** `static`: servers someone else runs (a Kubernetes Service, a fleet behind DNS); one instance per endpoint. */
export class StaticLauncher implements Launcher {
  readonly kind = 'static';
  readonly restartable = false;

  constructor(private readonly ctx: LaunchContext) {}

  count(): number {
    return this.ctx.image.endpoints.length;
  }

  async launch(index: number): Promise<LaunchedInstance> {
    const url = new URL(this.ctx.image.endpoints[index]!);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const cwd = this.ctx.packageDir;
    const vars = { ...this.ctx.image.env, ...this.ctx.env, PORT: url.port || '80', MODEL_PATH: cwd };
    return {
      host,
      port: Number(url.port || 80),
      exited: new Promise<string>(() => undefined),
      logs: () => `instance ${url.origin} runs outside the gateway; its output is not collected here\n`,
      exec: (command, timeoutMs) => runCommand(expandArgs(command, vars), cwd, { ...process.env, ...vars }, timeoutMs),
      stop: async () => undefined,
    };
  }
}
