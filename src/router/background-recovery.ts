import type { ResolvedConfig } from '../config.js';
import { ShardRouterError } from '../errors.js';
import type { Observer } from '../observe/observer.js';
import { recover } from '../twopc/recovery.js';
import type { RecoveryContext, RecoveryReport } from '../twopc/recovery.js';

/**
 * A router's recovery passes (docs/twopc.md): one at connect, one every
 * `recovery.intervalMillis`, one soon after a coordinator left gids unfinished, and the ones the
 * caller asks for. One background pass runs at a time; the newest outcome is kept for status().
 */
export class BackgroundRecovery {
  readonly #context: RecoveryContext;
  readonly #settings: ResolvedConfig['recovery'];
  readonly #observer: Observer | undefined;
  readonly #timer: NodeJS.Timeout | undefined;
  #soon: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #closed = false;
  /** The newest finished pass, background or explicit. */
  last: RecoveryReport | undefined;
  /** Why the newest background pass failed, if it did. */
  lastError: string | undefined;

  constructor(context: RecoveryContext, settings: ResolvedConfig['recovery'], observer?: Observer) {
    this.#context = context;
    this.#settings = settings;
    this.#observer = observer;
    if (settings.atConnect) this.soon(0);
    if (settings.intervalMillis > 0) {
      this.#timer = setInterval(() => this.#inBackground(), settings.intervalMillis);
      this.#timer.unref();
    }
  }

  /** A pass now, with `graceMillis` (default: the config's); its report is kept. */
  async run(graceMillis: number = this.#settings.graceMillis): Promise<RecoveryReport> {
    if (!Number.isSafeInteger(graceMillis) || graceMillis < 0)
      throw new ShardRouterError('INVALID_ARGUMENT', 'graceMillis must be a non-negative integer');
    const report = await recover(this.#context, { graceMillis });
    this.last = report;
    this.#observer?.recovered(report);
    return report;
  }

  /** A background pass once the gids just left behind are past the grace age. */
  soon(delayMillis = this.#settings.graceMillis + 100): void {
    // intervalMillis 0 turns background recovery off entirely (the passes at connect aside).
    if (delayMillis > 0 && this.#settings.intervalMillis === 0) return;
    if (this.#soon !== undefined || this.#closed) return;
    this.#soon = setTimeout(() => {
      this.#soon = undefined;
      this.#inBackground();
    }, delayMillis);
    this.#soon.unref();
  }

  /** Stops the timers and waits for a pass under way. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#soon);
    await this.#running;
  }

  #inBackground(): void {
    if (this.#running || this.#closed) return;
    this.#running = recover(this.#context, { graceMillis: this.#settings.graceMillis })
      .then(
        (report) => {
          this.last = report;
          this.lastError = undefined;
          this.#observer?.recovered(report);
          if (report.inDoubt.length > 0) this.soon(Math.max(1_000, this.#settings.graceMillis));
        },
        (error: unknown) => {
          this.lastError = error instanceof Error ? error.message : String(error);
          this.#observer?.recoveryFailed(error);
        },
      )
      .finally(() => {
        this.#running = undefined;
      });
  }
}
