"""A model of the ping-pong decode kernels' protocol (mla_decode_wgmma_pp.cuh and
mla_decode_f8pp.cuh, both orders of each): each warpgroup as a list of named-barrier operations
and reads and writes of the stages and P buffers, run in random interleavings for 0-13 tiles. It
reports a deadlock, an arrival left over at the end, a read of a buffer that holds another tile, and a write over a
buffer before every read of its previous tile (both warpgroups' P V, the owner's S) was issued
and had completed (a read completes at its warpgroup's next wgmma wait). Keep it in step with the
kernels when their schedule changes: python3 kernels/dev/pingpong_protocol.py (no GPU).
"""

import random

def pp(WG, n, s_first=False):
    L, PM, PO, FM, FO = 1 + WG, 3 + WG, 3 + (1 - WG), 5 + WG, 5 + (1 - WG)
    ops = []
    def follow(t):
        ops.extend([('wait0',), ('read', ('stage', t % 2), t, f'PV{WG}')])
    for u in range(WG, n, 2):
        if u >= 2:
            ops += [('wait0',), ('sync', FM, 256), ('write', ('stage', u % 2), u)]
        if not s_first and u >= 1:
            ops.append(('sync', PO, 256)); follow(u - 1); ops.append(('wait0',))
            if u + 1 < n: ops.append(('arrive', FO, 256))
        ops += [('sync', L, 128), ('read', ('stage', u % 2), u, 'S'), ('wait0',)]
        if s_first and u >= 1:
            ops.append(('sync', PO, 256)); follow(u - 1)
        ops += [('writeP', ('stage', u % 2), u), ('arrive', PM, 256)]
        if s_first:
            ops.append(('wait0',))
            if u >= 1 and u + 1 < n: ops.append(('arrive', FO, 256))
        ops.append(('read', ('stage', u % 2), u, f'PV{WG}'))
    if n > 0 and (n - 1) % 2 != WG:
        ops.append(('sync', PO, 256)); follow(n - 1)
    ops.append(('wait0',))
    return ops

def f8pp(WG, n, s_first=False):
    L, PM, PO, FM, FO = 1 + WG, 3 + WG, 3 + (1 - WG), 5 + WG, 5 + (1 - WG)
    ops = []
    # prologue loads by the owner: tile WG, and tile 2 by WG0
    if WG < n: ops.append(('write', ('stage', WG % 3), WG))
    if WG == 0 and n > 2: ops.append(('write', ('stage', 2), 2))
    def pv(t):  # synchronous: reads stage t%3 and P' buffer t&1
        ops.extend([('read', ('stage', t % 3), t, f'PV{WG}'), ('read', ('P', t & 1), t, f'PV{WG}'), ('wait0',)])
    def refill(u):
        if u + 2 < n and u + 2 >= 3:
            ops.extend([('sync', FM, 256), ('write', ('stage', (u + 2) % 3), u + 2)])
    for u in range(WG, n, 2):
        if u >= 1 and not s_first:
            ops.append(('sync', PO, 256)); pv(u - 1)
        ops.append(('sync', L, 128))
        if not s_first:
            refill(u)
        ops += [('read', ('stage', u % 3), u, 'S'), ('wait0',)]
        if s_first:
            if u >= 1:
                ops.append(('sync', PO, 256)); pv(u - 1)
            ops.append(('sync', L, 128))
            refill(u)
        ops += [('write', ('P', u & 1), u), ('sync', L, 128), ('arrive', PM, 256)]
        pv(u)
        if u + 3 < n: ops.append(('arrive', FO, 256))
    if n > 0 and (n - 1) % 2 != WG:
        ops.append(('sync', PO, 256)); pv(n - 1)
    return ops

def run(progs, seed, n, writes_before):
    rng = random.Random(seed)
    pc = [0, 0]; count = {}; phase = {}; waiting = [None, None]
    occupant = {}            # buffer -> tile
    issued = {}              # (buffer, tile) -> set of reader names issued
    outstanding = [set(), set()]  # per WG: (buffer, tile, name)
    completed = {}           # (buffer, tile) -> set of names completed
    for buf, t in writes_before: occupant[buf] = t
    def need(buf, t):        # readers a buffer's contents must see before being overwritten
        return {'S', 'PV0', 'PV1'} if buf[0] == 'stage' else {'PV0', 'PV1'}
    while True:
        for w in (0, 1):
            if waiting[w] and phase.get(waiting[w][0], 0) > waiting[w][1]: waiting[w] = None
        ready = [w for w in (0, 1) if waiting[w] is None and pc[w] < len(progs[w])]
        if not ready:
            if any(waiting): return f'deadlock {waiting}'
            left = {b: c for b, c in count.items() if c}
            return f'arrivals left over: {left}' if left else None
        w = rng.choice(ready)
        op = progs[w][pc[w]]; pc[w] += 1
        k = op[0]
        if k in ('sync', 'arrive'):
            _, b, cnt = op
            count[b] = count.get(b, 0) + 128
            ph = phase.get(b, 0)
            if count[b] >= cnt: count[b] = 0; phase[b] = ph + 1
            elif k == 'sync': waiting[w] = (b, ph)
        elif k == 'wait0':
            for (buf, t, name) in outstanding[w]: completed.setdefault((buf, t), set()).add(name)
            outstanding[w] = set()
        elif k == 'read':
            _, buf, t, name = op
            if occupant.get(buf) != t: return f'WG{w} {name} reads tile {t} from {buf} holding {occupant.get(buf)}'
            outstanding[w].add((buf, t, name))
        elif k in ('write', 'writeP'):
            _, buf, t = op
            if k == 'writeP':   # P over the rope chunk of its own stage: S of t done, the previous P's readers done
                prev = t - 2
                if prev >= 0 and not {'PV0', 'PV1'} <= completed.get((buf, prev), set()):
                    return f'P of {t} over {buf} before the P V of {prev} finished'
                continue
            prev = occupant.get(buf)
            if prev is not None and prev >= 0:
                want = need(buf, prev)
                if buf[0] == 'stage' and prev >= n: want = set()
                got = completed.get((buf, prev), set())
                if not want <= got: return f'WG{w} writes tile {t} into {buf} before {sorted(want - got)} of tile {prev} completed'
            occupant[buf] = t

bad = 0
for name, mk, pre in [('pp', lambda w, n: pp(w, n), lambda n: [(('stage', t), t) for t in range(min(n, 2))]),
                      ('pp S_FIRST', lambda w, n: pp(w, n, True), lambda n: [(('stage', t), t) for t in range(min(n, 2))]),
                      ('f8pp', f8pp, lambda n: []),
                      ('f8pp S_FIRST', lambda w, n: f8pp(w, n, True), lambda n: [])]:
    for n in range(0, 14):
        for seed in range(400):
            r = run([mk(0, n), mk(1, n)], seed, n, pre(n))
            if r:
                print(name, 'ntiles', n, 'seed', seed, r); bad += 1; break
print('problems:', bad)
