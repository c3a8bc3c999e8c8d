/**
 * Round-robin over the streams that have something to send. Each turn takes
 * at most one frame (bounded by the frame size) from one stream and sends the
 * stream to the back of the line, so a bulk transfer shares the link evenly
 * with everything else instead of starving it.
 */

export class RoundRobin<T> {
  // A Set iterates in insertion order and deletes in O(1): a ready-made ring.
  private readonly ready = new Set<T>();

  get size(): number {
    return this.ready.size;
  }

  add(item: T): void {
    this.ready.add(item);
  }

  delete(item: T): void {
    this.ready.delete(item);
  }

  /** The item whose turn it is, left in place. */
  peek(): T | undefined {
    for (const item of this.ready) return item;
    return undefined;
  }

  /** Removes and returns the item whose turn it is; re-add it to keep it in the ring. */
  next(): T | undefined {
    for (const item of this.ready) {
      this.ready.delete(item);
      return item;
    }
    return undefined;
  }

  /** Removes and returns the first of the next `limit` items that satisfies `test`. */
  takeFirst(test: (item: T) => boolean, limit: number): T | undefined {
    let seen = 0;
    for (const item of this.ready) {
      if (seen++ >= limit) break;
      if (test(item)) {
        this.ready.delete(item);
        return item;
      }
    }
    return undefined;
  }

  clear(): void {
    this.ready.clear();
  }
}
