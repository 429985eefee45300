import os from 'node:os';

/** What the numbers were measured on, to copy into the README next to them. */
export interface MachineInfo {
  readonly node: string;
  readonly v8: string;
  readonly platform: string;
  readonly cpuModel: string;
  readonly cores: number;
  readonly totalMemoryGiB: number;
  /** At the start of the run. */
  readonly loadAverage1m: number;
  readonly loadAverage1mAtEnd?: number;
  readonly date: string;
}

export function describeMachine(): MachineInfo {
  const cpus = os.cpus();
  return {
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    totalMemoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAverage1m: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
    date: new Date().toISOString(),
  };
}

export function formatMachine(info: MachineInfo): string {
  return [
    `node ${info.node} (V8 ${info.v8}), ${info.platform}`,
    `CPU: ${info.cpuModel}, ${info.cores} cores, ${info.totalMemoryGiB} GiB RAM, load avg (1m) ${info.loadAverage1m}`,
    `date: ${info.date}`,
  ].join('\n');
}
