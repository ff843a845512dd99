// Child-process bookkeeping shared by the bench: every process we start is tracked so that a
// failure, Ctrl-C or normal exit never leaves a proxy, origin or squid running.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';

const children = new Set();

/** Kills every tracked child by pid; safe to call from an 'exit' handler (synchronous). */
export function killAll(signal = 'SIGKILL') {
  for (const c of children) {
    try { process.kill(c.pid, signal); } catch { /* already gone */ }
  }
  children.clear();
}

let hooked = false;
function hookExit() {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => killAll());
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping children\n`);
      killAll();
      process.exit(130);
    });
  }
}

/**
 * Starts a long-lived child. `fdLimit` runs it through `bash -c 'ulimit -n N && exec ...'`, so
 * the pid we hold is the real process (needed to read its RSS). stdout/stderr go to files
 * (or /dev/null): a terminal would throttle the proxy's per-request access log.
 */
export function start(cmd, args, { fdLimit, stdout = '/dev/null', stderr = '/dev/null', stdin = 'ignore', env } = {}) {
  hookExit();
  const quoted = [cmd, ...args].map((a) => `'${String(a).replaceAll("'", "'\\''")}'`).join(' ');
  const [file, argv] = fdLimit ? ['bash', ['-c', `ulimit -n ${fdLimit} && exec ${quoted}`]] : [cmd, args];
  const out = stdout === 'pipe' ? 'pipe' : openSync(stdout, 'a');
  const err = stderr === 'pipe' ? 'pipe' : openSync(stderr, 'a');
  const child = spawn(file, argv, { stdio: [stdin, out, err], env: env ?? cleanEnv() });
  for (const fd of [out, err]) if (typeof fd === 'number') closeSync(fd); // the child has its own copy
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.exited = new Promise((r) => child.once('exit', (code, sig) => r({ code, sig })));
  return child;
}

/** Stops a child politely (SIGTERM), then SIGKILL after `graceMs`. */
export async function stop(child, graceMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await child.exited;
  clearTimeout(t);
}

/** Runs a short command to completion with a hard time limit; resolves {code, stdout, stderr}. */
export function run(cmd, args, { timeoutMs = 60_000 } = {}) {
  hookExit();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { stderr += String(e); });
    child.on('close', (code, sig) => {
      clearTimeout(t);
      children.delete(child);
      resolve({ code: code ?? (sig ? 128 : 1), stdout, stderr });
    });
  });
}

/** The environment without *_proxy variables, so curl and friends never pick a proxy by accident. */
export function cleanEnv() {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/_proxy$/i.test(k)) delete env[k];
  return env;
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once host:port accepts a TCP connection; throws after `timeoutMs` or if `child` dies. */
export async function waitListening(host, port, { timeoutMs = 15_000, child } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) throw new Error(`process exited (code ${child.exitCode}) before listening on ${host}:${port}`);
    const ok = await new Promise((r) => {
      const s = net.connect({ host, port });
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
}

/** Resident set size of a process in KiB (VmRSS), or undefined if it is gone. */
export function rssKB(pid) {
  try {
    let total = 0;
    for (const p of [pid, ...childPids(pid)]) {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      total += m ? Number(m[1]) : 0;
    }
    return total;
  } catch {
    return undefined;
  }
}

/** Reads newline-delimited JSON messages from a child's stdout. */
export function jsonLines(child, onMessage) {
  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try { onMessage(JSON.parse(line)); } catch { /* not ours */ }
    }
  });
}

/** Waits for the first message matching `pred`, or throws after `timeoutMs`. */
export function nextMessage(child, pred, timeoutMs) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no message from pid ${child.pid} within ${timeoutMs} ms`)), timeoutMs);
    child.messages ??= [];
    const check = () => {
      const i = child.messages.findIndex(pred);
      if (i === -1) return false;
      clearTimeout(t);
      resolve(child.messages.splice(i, 1)[0]);
      return true;
    };
    if (check()) return;
    (child.waiters ??= []).push(check);
    child.exited.then(() => { clearTimeout(t); if (!check()) reject(new Error(`pid ${child.pid} exited`)); });
  });
}

/** Starts collecting a child's JSON stdout so nextMessage() can wait on it. */
export function collectMessages(child) {
  child.messages ??= [];
  child.waiters ??= [];
  jsonLines(child, (m) => {
    child.messages.push(m);
    child.waiters = child.waiters.filter((w) => !w());
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** CPU time (user + system) a process has used so far, in ms; tells whether a single-threaded proxy was saturated. */
export function cpuMs(pid) {
  try {
    let total = 0;
    // A proxy with workers is a process tree: count every process in it.
    for (const p of [pid, ...childPids(pid)]) {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in USER_HZ (100 on Linux)
    }
    return total;
  } catch {
    return undefined;
  }
}

/** Direct children of `pid` (workers of a supervisor), from /proc. */
export function childPids(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
