/** Where and with what a benchmark ran: printed in its header and stored with --json results. */
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface Environment {
  readonly date: string;
  readonly node: string;
  readonly v8: string;
  readonly platform: string;
  readonly cpu: string;
  readonly cpus: number;
  /** 1-minute load average when the environment was read. */
  readonly loadavg1: number;
  readonly packages: Record<string, string>;
}

const ROOT = new URL('../../', import.meta.url);

/** The installed version of a dependency, or "?" when it cannot be read. */
export function packageVersion(name: string): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL(`node_modules/${name}/package.json`, ROOT), 'utf8')) as { version?: string };
    return pkg.version ?? '?';
  } catch {
    return '?';
  }
}

/** The libsodium commit sodium-native's build fetched (it exposes no version call), or "?". */
export function bundledLibsodium(): string {
  try {
    const cmake = readFileSync(new URL('node_modules/sodium-native/CMakeLists.txt', ROOT), 'utf8');
    return /jedisct1\/libsodium#([0-9a-f]+)/.exec(cmake)?.[1] ?? '?';
  } catch {
    return '?';
  }
}

export function environment(packages: readonly string[]): Environment {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpu: cpus[0]?.model.trim() ?? '?',
    cpus: cpus.length,
    loadavg1: os.loadavg()[0]!,
    packages: Object.fromEntries(packages.map((p) => [p, packageVersion(p)])),
  };
}

export function describeEnvironment(env: Environment): string {
  const pkgs = Object.entries(env.packages).map(([name, version]) => `${name} ${version}`).join(', ');
  return [
    `${env.date}  Node ${env.node} (V8 ${env.v8})  ${env.platform}`,
    `${env.cpus} × ${env.cpu}, load average ${env.loadavg1.toFixed(2)} at start`,
    pkgs,
  ].join('\n');
}
