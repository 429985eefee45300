import { describe, expect, it } from 'vitest';
import { HandOffQueue } from '../../src/pool/hand-off.js';

describe('HandOffQueue', () => {
  it('hands items to waiters first come first served, and says when nobody waits', async () => {
    const queue = new HandOffQueue<string>(60_000, () => new Error('timeout'));
    expect(queue.give('x')).toBe(false);
    const first = queue.wait();
    const second = queue.wait();
    expect(queue.length).toBe(2);
    expect(queue.give('a')).toBe(true);
    expect(queue.give('b')).toBe(true);
    expect(await first).toBe('a');
    expect(await second).toBe('b');
    expect(queue.length).toBe(0);
  });

  it('rejects a waiter nobody served within the timeout, and only the expired ones', async () => {
    const queue = new HandOffQueue<string>(30, () => new Error('timeout'));
    const early = queue.wait().catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const late = queue.wait();
    expect(await early).toMatchObject({ message: 'timeout' });
    expect(queue.give('for late')).toBe(true);
    expect(await late).toBe('for late');
  });

  it('fails every waiter at once', async () => {
    const queue = new HandOffQueue<string>(60_000, () => new Error('timeout'));
    const waiting = [queue.wait(), queue.wait()];
    queue.failAll(new Error('closed'));
    for (const w of waiting) await expect(w).rejects.toThrow('closed');
    expect(queue.length).toBe(0);
  });
});
