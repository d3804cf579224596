#!/usr/bin/env python3
"""How well placement can do on a trace with expandable segments: a model of the allocator.

Replays a trace (dcmem JSON Lines or RMM's logging CSV) through a model of one reserved range:
blocks cut to the request in 512-byte steps, placed by a policy, merged with free neighbours when
freed; a granule counts as mapped while any block touches it (no idle cache). Prints peak live
bytes, peak mapped bytes and efficiency (peak live / peak mapped) for each policy and granule.

    python3 scripts/fragmentation-model.py benches/traces/random.csv
    python3 scripts/fragmentation-model.py benches/traces/random.csv --granule 65536

Policies: `best` (smallest free block that holds the request, lowest offset first: the Arena),
`first` (lowest offset), `fewest-granules` (fewest newly mapped granules, then best fit), and
`tlsf` (the segregated fit of pool/segregated_fit.rs: the newest of the first 4 blocks of the
request's own list that holds it, else the newest block of the first list whose blocks all do).

`clairvoyant` knows when every block will be freed, which no allocator does: of the placements at
either end of each free block that holds the request, it takes the one mapping fewest new granules,
then the one whose live neighbour is freed closest in time to the new block (so their space
merges when both are gone), then best fit. It shows what knowing lifetimes could add.

`pytorch` is no placement in the range but a model of PyTorch's CUDA caching allocator without
expandable segments, to compare with: requests rounded up to 512 bytes; up to 1 MiB from 2 MiB
segments, up to 10 MiB from 20 MiB segments, larger in segments of their own rounded up to 2 MiB;
the smallest free block of the pool that holds the request (then lowest segment and offset),
split when at least 512 bytes (small) or more than 1 MiB (large) are left; freed blocks merge
with free neighbours; segments are kept (no `empty_cache`), so peak mapped is all segments made.

`stitch` models sub-granule stitching, which needs one physical granule mapped at several
addresses: a block is the smallest free stretch inside one mapped granule that holds it, else the
free end of one granule followed by the free start of another (the pair that wastes least), each
mapped anew side by side, else a free end and new granules. It bounds what aliasing could add.
"""
import argparse
import bisect
import json
from collections import defaultdict

UNIT = 512
POLICIES = ["best", "first", "fewest-granules", "tlsf", "clairvoyant", "stitch", "pytorch"]


def load(path):
    """(kind, id, bytes) events, kind 'a' or 'f'; RMM pointers become ids."""
    events = []
    with open(path) as f:
        first = f.readline()
        if first.startswith("Thread,"):
            live, next_id = {}, 0
            for line in f:
                if not line.strip():
                    continue
                _, _, action, pointer, size, _ = line.strip().split(",")
                if action == "allocate":
                    next_id += 1
                    live[pointer] = next_id
                    events.append(("a", next_id, int(size)))
                elif pointer in live:
                    events.append(("f", live.pop(pointer), 0))
        else:
            for line in [first] + f.readlines():
                if line.strip():
                    e = json.loads(line)
                    events.append(("a" if e["op"] == "alloc" else "f", e["id"], e.get("bytes", 0)))
    return events


def tlsf_list(units, bits=5):
    if units < (1 << bits):
        return (0, units)
    top = units.bit_length() - 1
    return (top - bits + 1, (units >> (top - bits)) - (1 << bits))


def replay(events, policy, granule, reserved=1 << 34):
    freed_at = {ident: i for i, (kind, ident, _) in enumerate(events) if kind == "f"}
    never = len(events)
    starting, ending = {}, {}  # live blocks' start and end -> the event that frees them
    free = {0: reserved}  # offset -> size
    ends = {reserved: 0}  # end -> offset
    by_size = [(reserved, 0)]
    lists = defaultdict(list)  # tlsf list -> offsets, newest last
    lists[tlsf_list(reserved // UNIT)].append(0)
    blocks, users = {}, defaultdict(int)
    live = peak_live = peak_mapped = 0

    def remove(offset):
        size = free.pop(offset)
        del ends[offset + size]
        by_size.pop(bisect.bisect_left(by_size, (size, offset)))
        lists[tlsf_list(size // UNIT)].remove(offset)
        return size

    def add(offset, size):
        free[offset] = size
        ends[offset + size] = offset
        bisect.insort(by_size, (size, offset))
        lists[tlsf_list(size // UNIT)].append(offset)

    def granules(offset, size):
        return range(offset // granule, (offset + size - 1) // granule + 1)

    for kind, ident, nbytes in events:
        if kind == "a":
            size = max(1, -(-nbytes // UNIT)) * UNIT
            fits = by_size[bisect.bisect_left(by_size, (size, -1)):]
            if policy == "best":
                offset = fits[0][1]
            elif policy == "first":
                offset = min(o for _, o in fits)
            elif policy == "fewest-granules":
                offset = min(fits, key=lambda h: (sum(users[g] == 0 for g in granules(h[1], size)), h))[1]
            elif policy == "clairvoyant":
                death = freed_at.get(ident, never)

                def score(hole, at):
                    neighbour = ending.get(at) if at == hole[1] else starting.get(at + size)
                    apart = abs(neighbour - death) if neighbour is not None else never
                    return (sum(users[g] == 0 for g in granules(at, size)), apart, hole[0], at)

                at = min((score(h, a), a, h[1]) for h in fits for a in {h[1], h[1] + h[0] - size})
                offset, placed = at[2], at[1]
            else:
                own = [o for o in reversed(lists[tlsf_list(size // UNIT)][-4:]) if free[o] >= size]
                if own:
                    offset = own[0]
                else:
                    units = size // UNIT
                    rounded = units if units < 32 else units + (1 << (units.bit_length() - 6)) - 1
                    start = tlsf_list(rounded)
                    offset = lists[min(k for k, v in lists.items() if v and k >= start)][-1]
            hole = remove(offset)
            if policy != "clairvoyant":
                placed = offset
            if placed > offset:
                add(offset, placed - offset)
            if placed + size < offset + hole:
                add(placed + size, offset + hole - placed - size)
            offset = placed
            starting[offset] = ending[offset + size] = freed_at.get(ident, never)
            blocks[ident] = (offset, size, nbytes)
            for g in granules(offset, size):
                users[g] += 1
            live += nbytes
            peak_live = max(peak_live, live)
            peak_mapped = max(peak_mapped, sum(1 for u in users.values() if u) * granule)
        elif ident in blocks:
            offset, size, nbytes = blocks.pop(ident)
            del starting[offset], ending[offset + size]
            live -= nbytes
            for g in granules(offset, size):
                users[g] -= 1
                if not users[g]:
                    del users[g]
            start, end = offset, offset + size
            if end in free:
                end += remove(end)
            if start in ends:
                start = ends[start]
                remove(start)
            add(start, end - start)
    return peak_live, peak_mapped


def replay_stitched(events, granule):
    """Peak live and peak mapped bytes when blocks may be stitched from pieces of granules."""
    used = {}  # granule -> sorted (start, end) of the pieces blocks use
    blocks, next_granule = {}, 0
    live = peak_live = peak_mapped = 0

    def holes(g):
        prev, out = 0, []
        for start, end in used[g]:
            if start > prev:
                out.append((prev, start))
            prev = end
        return out + [(prev, granule)] if prev < granule else out

    def new_granule():
        nonlocal next_granule
        next_granule += 1
        used[next_granule] = []
        return next_granule

    for kind, ident, nbytes in events:
        if kind == "f":
            if ident in blocks:
                pieces, nbytes = blocks.pop(ident)
                live -= nbytes
                for g, start, end in pieces:
                    used[g].remove((start, end))
                    if not used[g]:
                        del used[g]
            continue
        size = max(1, -(-nbytes // UNIT)) * UNIT
        inside, ends, starts = None, [], []
        for g in used:
            hs = holes(g)
            for start, end in hs:
                if size <= end - start and (inside is None or end - start < inside[0]):
                    inside = (end - start, g, start)
            if hs and hs[-1][1] == granule:
                ends.append((granule - hs[-1][0], g))
            if hs and hs[0][0] == 0:
                starts.append((hs[0][1], g))
        if inside and size <= granule:
            pieces = [(inside[1], inside[2], inside[2] + size)]
        else:
            starts.sort()
            pair = None
            for tail, g in ends if size < 2 * granule else []:
                i = bisect.bisect_left(starts, (size - tail, -1))
                while i < len(starts) and starts[i][1] == g:
                    i += 1
                if i < len(starts) and (pair is None or tail + starts[i][0] < pair[0]):
                    pair = (tail + starts[i][0], g, tail, starts[i][1])
            if pair:
                _, a, tail, b = pair
                pieces = [(a, granule - tail, granule), (b, 0, size - tail)]
            else:
                tail, a = max(ends, default=(0, None))
                pieces = [(a, granule - tail, granule)] if a is not None and tail else []
                rest = size - (tail if pieces else 0)
                while rest > 0:
                    pieces.append((new_granule(), 0, min(rest, granule)))
                    rest -= granule
        for g, start, end in pieces:
            bisect.insort(used[g], (start, end))
        blocks[ident] = (pieces, nbytes)
        live += nbytes
        peak_live = max(peak_live, live)
        peak_mapped = max(peak_mapped, len(used) * granule)
    return peak_live, peak_mapped


def replay_pytorch(events):
    """Peak live and peak reserved bytes of the model of PyTorch's allocator in the module docs."""
    free = {True: [], False: []}  # small pool? -> sorted (size, segment, offset) of free blocks
    segments = {}  # segment -> {offset: (size, free)}
    blocks = {}
    live = peak_live = reserved = 0
    for kind, ident, nbytes in events:
        if kind == "f":
            if ident not in blocks:
                continue
            small, seg, offset, size, nbytes = blocks.pop(ident)
            live -= nbytes
            parts, pool = segments[seg], free[small]
            del parts[offset]
            following = parts.get(offset + size)
            if following and following[1]:
                pool.remove((following[0], seg, offset + size))
                del parts[offset + size]
                size += following[0]
            before = next((o for o, (n, f) in parts.items() if f and o + n == offset), None)
            if before is not None:
                n = parts.pop(before)[0]
                pool.remove((n, seg, before))
                offset, size = before, size + n
            parts[offset] = (size, True)
            bisect.insort(pool, (size, seg, offset))
            continue
        size = max(512, -(-nbytes // 512) * 512)
        small = size <= 1 << 20
        pool = free[small]
        i = bisect.bisect_left(pool, (size, -1, -1))
        if i < len(pool):
            hole, seg, offset = pool.pop(i)
        else:
            hole = 2 << 20 if small else 20 << 20 if size < 10 << 20 else -(-size // (2 << 20)) * (2 << 20)
            seg, offset = len(segments), 0
            segments[seg] = {}
            reserved += hole
        if hole - size >= (512 if small else (1 << 20) + 1):
            segments[seg][offset + size] = (hole - size, True)
            bisect.insort(pool, (hole - size, seg, offset + size))
        else:
            size = hole
        segments[seg][offset] = (size, False)
        blocks[ident] = (small, seg, offset, size, nbytes)
        live += nbytes
        peak_live = max(peak_live, live)
    return peak_live, reserved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--granule", type=int, default=2 << 20, help="bytes (default 2 MiB)")
    parser.add_argument("--policy", action="append", choices=POLICIES)
    args = parser.parse_args()
    events = load(args.trace)
    for policy in args.policy or POLICIES:
        if policy == "stitch":
            live, mapped = replay_stitched(events, args.granule)
        elif policy == "pytorch":
            live, mapped = replay_pytorch(events)
        else:
            live, mapped = replay(events, policy, args.granule)
        print(f"{policy:16} granule {args.granule:>8}  peak live {live / 2**20:8.1f} MiB  "
              f"peak mapped {mapped / 2**20:8.1f} MiB  efficiency {live / mapped:.3f}")


if __name__ == "__main__":
    main()
