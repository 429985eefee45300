import { expect, it } from 'vitest';
import { orderViolations } from '../support/outbox-order.js';

const calls = (key: string, seqs: number[]) => seqs.map((seq) => ({ key, seq }));

it('accepts per-key runs in order and redeliveries back to the start of the interrupted run', () => {
  expect(orderViolations(calls('a', [1, 2, 3, 4]))).toEqual([]);
  // A run 3..5 interrupted, redelivered from 3; then a careful run interrupted at 6, redelivered from 6.
  expect(orderViolations(calls('a', [1, 2, 3, 4, 5, 3, 4, 5, 6, 6, 7]))).toEqual([]);
  expect(orderViolations([...calls('a', [1, 2]), ...calls('b', [1]), ...calls('a', [3])])).toEqual([]);
});

it('flags a skip ahead and a redelivery that goes back past the interrupted run', () => {
  expect(orderViolations(calls('a', [1, 3]))).toEqual(['a: seq 3 before 2']);
  expect(orderViolations(calls('a', [1, 2, 3, 4, 2, 3]))).toEqual([]);
  expect(orderViolations(calls('a', [1, 2, 3, 1]))).toEqual([]);
  // Runs 1..3 then 5..6 after a redelivery from 4: going back to 3 reaches past the run that started at 4.
  expect(orderViolations(calls('a', [1, 2, 3, 4, 5, 4, 5, 6, 3]))).toEqual(["a: seq 3 redelivered from before its run's start 4"]);
});
