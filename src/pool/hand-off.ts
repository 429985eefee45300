interface Waiter<T> {
  readonly resolve: (item: T) => void;
  readonly reject: (reason: unknown) => void;
  readonly deadline: number;
}

/**
 * Callers waiting for a connection that another caller is about to give back, served first come
 * first served. Under contention (more callers than connections) a released connection goes
 * straight to the oldest waiter: no trip through generic-pool's queue, dispatch and promises,
 * and no timer per wait. One timer watches the oldest waiter's deadline (all share one
 * timeout, so the oldest is always the first to expire) and is re-armed as it fires.
 */
export class HandOffQueue<T> {
  readonly #waiters: (Waiter<T> | undefined)[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly #timeoutMillis: number;
  readonly #timeoutError: () => unknown;

  constructor(timeoutMillis: number, timeoutError: () => unknown) {
    this.#timeoutMillis = timeoutMillis;
    this.#timeoutError = timeoutError;
  }

  get length(): number {
    return this.#waiters.length - this.#head;
  }

  wait(): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#waiters.push({ resolve, reject, deadline: performance.now() + this.#timeoutMillis });
      this.#timer ??= setTimeout(() => this.#expire(), this.#timeoutMillis);
    });
  }

  /** Hands `item` to the oldest waiter; false when nobody waits. */
  give(item: T): boolean {
    const waiter = this.take();
    if (!waiter) return false;
    waiter.resolve(item);
    return true;
  }

  /** The oldest waiter, taken off the queue (the caller settles it). */
  take(): Pick<Waiter<T>, 'resolve' | 'reject'> | undefined {
    if (this.#head === this.#waiters.length) return undefined;
    const waiter = this.#waiters[this.#head];
    this.#waiters[this.#head++] = undefined;
    if (this.#head === this.#waiters.length) {
      this.#waiters.length = 0;
      this.#head = 0;
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    return waiter;
  }

  failAll(reason: unknown): void {
    for (let waiter = this.take(); waiter; waiter = this.take()) waiter.reject(reason);
  }

  #expire(): void {
    this.#timer = undefined;
    const now = performance.now();
    while (this.#head < this.#waiters.length && this.#waiters[this.#head]!.deadline <= now) this.take()!.reject(this.#timeoutError());
    const oldest = this.#waiters[this.#head];
    if (oldest) this.#timer = setTimeout(() => this.#expire(), Math.max(1, oldest.deadline - now));
  }
}
