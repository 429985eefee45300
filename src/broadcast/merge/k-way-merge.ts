/**
 * Merges k sorted sequences into one sorted sequence with a binary heap of their heads:
 * O(n log k) comparisons, and only the heads are held. Ties go to the lower source index, so
 * the merge is stable with respect to the shard order.
 */

interface Head<T> {
  value: T;
  source: number;
}

/** Merges sorted arrays; stops after `limit` items when given. */
export function mergeSorted<T>(sources: readonly (readonly T[])[], compare: (a: T, b: T) => number, limit = Infinity): T[] {
  const heap = new MinHeap<Head<T>>((a, b) => {
    const order = compare(a.value, b.value);
    return order < 0 || (order === 0 && a.source < b.source);
  });
  const positions = sources.map(() => 0);
  sources.forEach((source, i) => {
    if (source.length > 0) heap.push({ value: source[0]!, source: i });
  });
  const out: T[] = [];
  while (heap.size > 0 && out.length < limit) {
    const head = heap.pop()!;
    out.push(head.value);
    const next = ++positions[head.source]!;
    const source = sources[head.source]!;
    if (next < source.length) heap.push({ value: source[next]!, source: head.source });
  }
  return out;
}

/** A sorted source read in batches (a shard cursor): an empty batch means it is exhausted. */
export interface BatchSource<T> {
  next(): Promise<readonly T[]>;
}

/**
 * Merges sorted batch sources lazily, a batch at a time: a heap of source indices (no object
 * per row), and from the smallest source a whole run of rows is taken while they come before the
 * runner-up's head, one comparison per row. Holds one batch per source (plus what the sources
 * read ahead); fetches a source's next batch when its buffer is used up. Ties go to the lower
 * source index, as in mergeSorted.
 */
export async function* mergeSortedBatches<T>(sources: readonly BatchSource<T>[], compare: (a: T, b: T) => number): AsyncGenerator<T[]> {
  const buffers: (readonly T[])[] = await Promise.all(sources.map((source) => source.next()));
  const positions = sources.map(() => 0);
  const heap = new MinHeap<number>((a, b) => {
    const order = compare(buffers[a]![positions[a]!]!, buffers[b]![positions[b]!]!);
    return order < 0 || (order === 0 && a < b);
  });
  buffers.forEach((buffer, i) => {
    if (buffer.length > 0) heap.push(i);
  });
  let out: T[] = [];
  while (heap.size > 0) {
    const top = heap.top;
    const runnerSlot = heap.runnerUpSlot();
    const runner = runnerSlot < 0 ? undefined : heap.at(runnerSlot);
    const buffer = buffers[top]!;
    let position = positions[top]!;
    out.push(buffer[position++]!);
    const bound = runner === undefined ? undefined : buffers[runner]![positions[runner]!]!;
    let passedRunner = false;
    while (position < buffer.length) {
      if (bound !== undefined) {
        const order = compare(buffer[position]!, bound);
        passedRunner = order > 0 || (order === 0 && top > runner!);
        if (passedRunner) break;
      }
      out.push(buffer[position++]!);
    }
    positions[top] = position;
    if (position >= buffer.length) {
      // Hand over what is merged so far before waiting on the network.
      if (out.length > 0) {
        yield out;
        out = [];
      }
      buffers[top] = await sources[top]!.next();
      positions[top] = 0;
      if (buffers[top]!.length === 0) {
        heap.removeTop();
        continue;
      }
      heap.siftTop();
      continue;
    }
    // The top's next row comes after the runner-up's head (just compared): the runner-up rises.
    if (passedRunner) heap.sinkTopBelow(runnerSlot);
    else heap.siftTop();
  }
  if (out.length > 0) yield out;
}

/**
 * Batches from several sources in the order they arrive (for a SELECT without ORDER BY, whose
 * row order is unspecified): every source is read at once, none waits for another. Asks a source
 * for its next batch only once the caller has taken its last one.
 */
export async function* arrivalOrder<T>(sources: readonly BatchSource<T>[]): AsyncGenerator<readonly T[]> {
  const pending = new Map<number, Promise<readonly [number, readonly T[]]>>();
  const ask = (i: number) => {
    const next = sources[i]!.next().then((batch) => [i, batch] as const);
    // Raced below; one that settles after the caller stopped must not count as unhandled.
    next.catch(() => undefined);
    pending.set(i, next);
  };
  for (let i = 0; i < sources.length; i++) ask(i);
  while (pending.size > 0) {
    const [i, batch] = await Promise.race(pending.values());
    if (batch.length === 0) {
      pending.delete(i);
      continue;
    }
    pending.delete(i);
    yield batch;
    ask(i);
  }
}

/** A binary min-heap ordered by `less`; `less` must break ties (by source index) for a stable merge. */
class MinHeap<T> {
  readonly #items: T[] = [];
  readonly #less: (a: T, b: T) => boolean;

  constructor(less: (a: T, b: T) => boolean) {
    this.#less = less;
  }

  get size(): number {
    return this.#items.length;
  }

  get top(): T {
    return this.#items[0]!;
  }

  at(slot: number): T {
    return this.#items[slot]!;
  }

  /** Where the second smallest is (the smaller child of the top), or -1 when the top is alone. */
  runnerUpSlot(): number {
    const items = this.#items;
    if (items.length < 3) return items.length - 2 < 0 ? -1 : 1;
    return this.#less(items[2]!, items[1]!) ? 2 : 1;
  }

  /**
   * Restores the heap when the top is known to come after the item in `slot` (the runner-up):
   * the two swap without comparing them again, and the old top sinks on from there.
   */
  sinkTopBelow(slot: number): void {
    this.#swap(0, slot);
    this.#siftDown(slot);
  }

  push(item: T): void {
    const items = this.#items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(items[i]!, items[parent]!)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  /** Removes and returns the smallest item. */
  pop(): T | undefined {
    const top = this.#items[0];
    this.removeTop();
    return top;
  }

  removeTop(): void {
    const last = this.#items.pop();
    if (this.#items.length === 0 || last === undefined) return;
    this.#items[0] = last;
    this.siftTop();
  }

  /** Restores the heap after the top item's key changed (or was replaced). */
  siftTop(): void {
    this.#siftDown(0);
  }

  #siftDown(from: number): void {
    const items = this.#items;
    let i = from;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < items.length && this.#less(items[left]!, items[smallest]!)) smallest = left;
      if (right < items.length && this.#less(items[right]!, items[smallest]!)) smallest = right;
      if (smallest === i) return;
      this.#swap(i, smallest);
      i = smallest;
    }
  }

  #swap(i: number, j: number): void {
    const items = this.#items;
    const item = items[i]!;
    items[i] = items[j]!;
    items[j] = item;
  }
}
