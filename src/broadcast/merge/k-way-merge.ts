/**
 * Merges k sorted sequences into one sorted sequence with a binary heap of their heads:
 * O(n log k) comparisons, and only the heads are held. Ties go to the lower source index, so
 * the merge is stable with respect to the shard order.
 */

interface Head<T> {
  value: T;
  source: number;
}

class HeadHeap<T> {
  readonly #items: Head<T>[] = [];
  readonly #compare: (a: T, b: T) => number;

  constructor(compare: (a: T, b: T) => number) {
    this.#compare = compare;
  }

  get size(): number {
    return this.#items.length;
  }

  #less(a: Head<T>, b: Head<T>): boolean {
    const order = this.#compare(a.value, b.value);
    return order < 0 || (order === 0 && a.source < b.source);
  }

  push(head: Head<T>): void {
    const items = this.#items;
    items.push(head);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  /** Removes and returns the smallest head. */
  pop(): Head<T> | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < items.length && this.#less(items[left]!, items[smallest]!)) smallest = left;
        if (right < items.length && this.#less(items[right]!, items[smallest]!)) smallest = right;
        if (smallest === i) break;
        [items[i], items[smallest]] = [items[smallest]!, items[i]!];
        i = smallest;
      }
    }
    return top;
  }
}

/** Merges sorted arrays; stops after `limit` items when given. */
export function mergeSorted<T>(sources: readonly (readonly T[])[], compare: (a: T, b: T) => number, limit = Infinity): T[] {
  const heap = new HeadHeap<T>(compare);
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
 * Merges sorted batch sources lazily: holds at most one batch per source, and fetches a
 * source's next batch only when its last buffered item has been emitted.
 */
export async function* mergeSortedBatches<T>(sources: readonly BatchSource<T>[], compare: (a: T, b: T) => number): AsyncGenerator<T[]> {
  const buffers: (readonly T[])[] = await Promise.all(sources.map((source) => source.next()));
  const positions = sources.map(() => 0);
  const heap = new HeadHeap<T>(compare);
  buffers.forEach((buffer, i) => {
    if (buffer.length > 0) heap.push({ value: buffer[0]!, source: i });
  });
  let out: T[] = [];
  while (heap.size > 0) {
    const head = heap.pop()!;
    out.push(head.value);
    const i = head.source;
    let position = ++positions[i]!;
    if (position >= buffers[i]!.length) {
      // Hand over what is merged so far before waiting on the network.
      if (out.length > 0) {
        yield out;
        out = [];
      }
      buffers[i] = await sources[i]!.next();
      positions[i] = position = 0;
    }
    if (position < buffers[i]!.length) heap.push({ value: buffers[i]![position]!, source: i });
  }
  if (out.length > 0) yield out;
}
