"""The discrete-event loop: one server, one batch queue, virtual time, compiled with numba.

Batch forming is not written here: ``admit``, ``ready_time`` and ``padded_size``
are ``harness.scheduler``'s own functions, compiled by numba from the same source the reference
server runs. This module only moves time forward and keeps the books.

Model of the server (see docs/simulator.md):

- ``cores`` CPUs shared fairly (processor sharing) by every running batch and by the front end.
- The front end (gRPC/REST decode, predict path, response encode) is one FIFO worker: the
  reference server's request path holds Python's GIL, so request handling is serial. When it
  competes with running batches for a core it weighs ``fe_weight`` batches: besides the thread
  holding the GIL, gRPC's own threads (polling, HTTP/2) are runnable, and the OS shares the core
  per runnable thread. Each request
  costs ``o_in`` seconds of CPU before it reaches the queue and ``o_out`` after its batch ran; a
  rejected one costs ``o_rej`` after ``o_in``. Work that comes while the front end has nothing
  to do costs ``o_wake`` more: its threads were asleep (a futex wake-up, an epoll return, the
  GIL taken back) and wake for it alone. Work that queues while it is busy is taken in the same
  waking, so requests that come in bursts (a closed loop's answers to a big batch) share one.
- A batch of padded size ``b`` costs ``exec_table[b]`` seconds of CPU (times a noise factor),
  on one of ``threads`` batch threads; more running batches than cores stretch each other.
- Python's full garbage collection: the reference server is a Python process holding all of
  TensorFlow's objects, and a full collection walks them all (~0.2 s here) with the GIL held.
  Each answer adds the number of requests inside the server to a garbage count (a refused one
  ``GC_REJECT_WEIGHT`` of that); at ``gc_every`` the request path does ``gc_s`` of work (0 for a server without one, e.g. tensorflow_model_server).
- A finished batch's answers leave the request path in a random order (its handler threads
  wake together and take the GIL in no set order).
- The client adds ``rtt`` seconds to every answer (loopback, waiting). A closed-loop client is
  one FIFO worker on its own core (Locust: one gevent process) spending ``c_cli`` seconds per
  request; a user sends its next request as soon as the client has read the answer. An open-loop
  client sends on schedule and only adds ``rtt + c_cli``.
"""

from __future__ import annotations

import math

import numpy as np

from harness import scheduler as policy

try:
    import numba

    def _jit(fn):
        return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - the same code runs, only slower

    def _jit(fn):
        return fn

    HAVE_NUMBA = False

_admit = _jit(policy.admit)
_ready_time = _jit(policy.ready_time)
_padded_size = _jit(policy.padded_size)

ADMIT_OK = policy.ADMIT_OK
ADMIT_OVERSIZE = policy.ADMIT_OVERSIZE

# counters[] slots
C_OK, C_ITEMS, C_OVERSIZE, C_QUEUE_FULL, C_SENT, C_BATCHES, C_TRUNCATED, C_INCOMPLETE = range(8)
N_COUNTERS = 8

# latency histogram: a float64's bits shifted right by this keep 7 mantissa bits (0.5% bins)
HIST_SHIFT = 45

# front-end work kinds
_INGRESS, _EGRESS_OK, _EGRESS_REJ, _GC = 0, 1, 2, 3
GC_REJECT_WEIGHT = 0.35  # a refused request leaves about a third of a served one's garbage


@_jit
def workspace_size(n_cap, users, max_input, max_exec, splitting):
    """(float64, int64) workspace lengths ``run`` needs."""
    fe_cap = 2 * n_cap + 1025
    b_cap = n_cap * (2 + (max_input // max_exec if splitting else 0)) + 1
    return 2 * n_cap + users + b_cap + fe_cap, 2 * n_cap + 2 * fe_cap + 3 * b_cap


@_jit
def run(
    max_input,
    max_exec,
    max_enqueued,
    splitting,
    timeout_s,
    threads,
    allowed,
    cores,
    exec_table,
    exec_noise,
    o_in,
    o_out,
    o_rej,
    o_wake,
    rtt,
    c_cli,
    gc_every,
    gc_s,
    fe_weight,
    closed,
    users,
    arrivals,
    sizes,
    t0,
    t1,
    t_end,
    n_cap,
    lat_hist,
    hist_key0,
    batch_hist,
    counters,
    wf,
    wi,
):
    """Simulate until ``t_end``; figures count requests sent in ``[t0, t1)``."""
    inf = math.inf
    # every array lives in the caller's workspace (reused across configs: no allocation here)
    fe_cap = 2 * n_cap + 1025
    max_pieces = 2 + (max_input // max_exec if splitting else 0)
    b_cap = n_cap * max_pieces + 1
    t_send = wf[:n_cap]
    p_time = wf[n_cap : 2 * n_cap + users]
    b_first = wf[2 * n_cap + users : 2 * n_cap + users + b_cap]
    fe_time = wf[2 * n_cap + users + b_cap : 2 * n_cap + users + b_cap + fe_cap]
    t_size = wi[:n_cap]
    t_pieces = wi[n_cap : 2 * n_cap]  # >0: pieces still to run; -1: refused; -2: answered
    fe_kind = wi[2 * n_cap : 2 * n_cap + fe_cap]
    fe_task = wi[2 * n_cap + fe_cap : 2 * n_cap + 2 * fe_cap]
    o = 2 * n_cap + 2 * fe_cap
    b_size = wi[o : o + b_cap]
    b_lo = wi[o + b_cap : o + 2 * b_cap]
    b_hi = wi[o + 2 * b_cap : o + 3 * b_cap]
    n_tasks = 0
    # arrivals, in time order: the given times (open loop) or users ready to send (closed loop)
    p_head = 0
    p_tail = 0
    if closed:
        for _ in range(users):
            p_time[p_tail] = 0.0
            p_tail += 1
    cli_free = 0.0
    ai = 0
    n_arr = arrivals.shape[0]
    n_sizes = sizes.shape[0]
    # The front end serves, oldest first, two streams: arrivals (read straight from the arrival
    # times, so an arrival is an event only when the front end is idle) and the answers and
    # collections queued in the FIFO below, each with the time it was queued.
    fe_head = 0
    fe_tail = 0
    fe_busy = False
    fe_idle_at = -1.0  # when the front end last ran out of work
    cur_kind = 0
    cur_task = 0
    garbage = 0.0  # garbage promoted since the last full collection (see below)
    n_gc = 0
    n_live = 0  # requests inside the server (taken by the front end, not yet answered)
    shuffle = 20261123  # the state of the answer-order shuffle (the same for every config)
    # processor sharing in virtual time: every busy participant (running batches, the front end)
    # advances at the same rate, so ``vt`` grows by dt * rate and each finishes at a fixed vt
    vt = 0.0
    fv = 0.0  # the front end's own virtual time (its share differs from a batch's)
    fe_fin = 0.0
    # the batch queue (only grows; q_head..q_tail-1 are waiting, the last one is open)
    q_head = 0
    q_tail = 0
    # batch threads
    r_batch = np.empty(threads, np.int64)  # the running batches, packed in [0, n_run)
    r_fin = np.empty(threads)
    n_run = 0
    n_started = 0
    n_noise = exec_noise.shape[0]
    n_lat = lat_hist.shape[0]
    # latency histogram bins: the float's exponent and top mantissa bits (log-spaced, no log())
    fbuf = np.empty(1)
    ibuf = fbuf.view(np.int64)
    n_bh = batch_hist.shape[0]
    now = 0.0
    while True:
        # hand ready batches to idle threads (TF: a free thread takes the front batch when due)
        due_next = inf  # when the front batch comes due, if a thread is idle to take it
        while n_run < threads and q_head < q_tail:
            due = _ready_time(q_tail - q_head, b_size[q_head], b_first[q_head], max_exec, timeout_s)
            if due > now:
                due_next = due
                break
            padded = _padded_size(b_size[q_head], allowed)
            r_batch[n_run] = q_head
            r_fin[n_run] = vt + exec_table[padded] * exec_noise[n_started % n_noise]
            n_started += 1
            n_run += 1
            if t0 <= now < t1:
                counters[C_BATCHES] += 1
                batch_hist[min(padded, n_bh - 1)] += 1
            q_head += 1
        # an idle front end takes the oldest waiting work
        if not fe_busy:
            t_arr = inf
            if closed:
                if p_head < p_tail:
                    t_arr = p_time[p_head]
            elif ai < n_arr:
                t_arr = arrivals[ai]
            t_q = fe_time[fe_head] if fe_head < fe_tail else inf
            if t_q <= now and t_q <= t_arr:
                cur_kind = fe_kind[fe_head]
                cur_task = fe_task[fe_head]
                fe_head += 1
                fe_busy = True
                if cur_kind == _EGRESS_OK:
                    fe_fin = fv + o_out
                elif cur_kind == _EGRESS_REJ:
                    fe_fin = fv + o_rej
                else:
                    fe_fin = fv + gc_s
                if t_q > fe_idle_at:  # it came while the front end slept: wake it first
                    fe_fin += o_wake
            elif t_arr <= now:
                if n_tasks >= n_cap:
                    counters[C_TRUNCATED] = 1
                    break
                i = n_tasks
                n_tasks += 1
                t_send[i] = t_arr
                t_size[i] = sizes[i % n_sizes]
                t_pieces[i] = 0
                n_live += 1
                if closed:
                    p_head += 1
                else:
                    ai += 1
                if t0 <= t_arr < t1:
                    counters[C_SENT] += 1
                cur_kind = _INGRESS
                cur_task = i
                fe_busy = True
                fe_fin = fv + o_in
                if t_arr > fe_idle_at:
                    fe_fin += o_wake
        # the next event
        # shares of the cores: each running batch weighs 1, a busy front end ``fe_weight``
        rate = 1.0
        rate_fe = 1.0
        if n_run + (1 if fe_busy else 0) > cores:
            if fe_busy:
                rate = cores / (n_run + fe_weight)
                rate_fe = fe_weight * rate
                if rate_fe > 1.0:
                    rate_fe = 1.0
                    rate = (cores - 1.0) / n_run
            else:
                rate = cores / n_run
        t_next = inf
        what = -1
        if fe_busy:
            t_next = now + (fe_fin - fv) / rate_fe
            what = 1
        else:  # idle: it wakes for the next arrival (queued answers come with batch events)
            if closed:
                if p_head < p_tail:
                    t_next = p_time[p_head]
                    what = 0
            elif ai < n_arr:
                t_next = arrivals[ai]
                what = 0
        kb = -1
        for k in range(n_run):
            t = now + (r_fin[k] - vt) / rate
            if t < t_next:
                t_next = t
                what = 2
                kb = k
        if due_next < t_next:
            t_next = due_next
            what = 3
        if what < 0 or t_next > t_end:
            break
        dt = t_next - now
        if dt > 0.0:
            vt += dt * rate
            fv += dt * rate_fe
            now = t_next
        if what == 1:  # the front end finished its piece of work
            fe_busy = False
            fe_idle_at = now
            kind = cur_kind
            i = cur_task
            if kind == _INGRESS:
                size = t_size[i]
                has_open = q_head < q_tail
                open_size = b_size[q_tail - 1] if has_open else 0
                verdict, new_batches, room = _admit(
                    size,
                    open_size,
                    has_open,
                    q_tail - q_head,
                    max_input,
                    max_exec,
                    max_enqueued,
                    splitting,
                )
                if verdict != ADMIT_OK:
                    t_pieces[i] = -1
                    if t0 <= t_send[i] < t1:
                        if verdict == ADMIT_OVERSIZE:
                            counters[C_OVERSIZE] += 1
                        else:
                            counters[C_QUEUE_FULL] += 1
                    # the refusal is answered at once, before anything queued
                    cur_kind = _EGRESS_REJ
                    fe_busy = True
                    fe_fin = fv + o_rej
                elif new_batches == 0:
                    b_size[q_tail - 1] += size
                    b_hi[q_tail - 1] = i
                    t_pieces[i] = 1
                else:
                    rest = size
                    pieces = 0
                    if splitting and room > 0:
                        b_size[q_tail - 1] += room
                        b_hi[q_tail - 1] = i
                        rest -= room
                        pieces = 1
                    while rest > 0:
                        rows = min(max_exec, rest) if splitting else rest
                        b_size[q_tail] = rows
                        b_first[q_tail] = now
                        b_lo[q_tail] = i
                        b_hi[q_tail] = i
                        q_tail += 1
                        rest -= rows
                        pieces += 1
                    t_pieces[i] = pieces
            elif kind != _GC:
                # Python's full garbage collection: with TensorFlow loaded it walks every object
                # (~0.2 s here) holding the GIL, so the request path stalls for that long. What
                # reaches the oldest generation is what the younger collections find alive: the
                # objects of the requests inside the server, so each answer adds n_live.
                if gc_every > 0.0:
                    garbage += n_live * (1.0 if kind == _EGRESS_OK else GC_REJECT_WEIGHT)
                    if garbage >= gc_every and n_gc < 1024:
                        garbage -= gc_every
                        n_gc += 1
                        fe_kind[fe_tail] = _GC
                        fe_task[fe_tail] = -1
                        fe_time[fe_tail] = now
                        fe_tail += 1
                n_live -= 1
                if closed:  # the client reads the answer when it is free, then sends again
                    read = now + rtt
                    if cli_free > read:
                        read = cli_free
                    read += c_cli
                    cli_free = read
                    p_time[p_tail] = read
                    p_tail += 1
                else:
                    read = now + rtt + c_cli
                if kind == _EGRESS_OK:
                    t_pieces[i] = -2  # answered
                    if t0 <= t_send[i] < t1:
                        counters[C_OK] += 1
                        counters[C_ITEMS] += t_size[i]
                        fbuf[0] = read - t_send[i]
                        b = (ibuf[0] >> HIST_SHIFT) - hist_key0
                        lat_hist[min(max(b, 0), n_lat - 1)] += 1
        elif what == 2:  # a batch finished: its finished requests queue for their answers
            bi = r_batch[kb]
            n_run -= 1
            r_batch[kb] = r_batch[n_run]
            r_fin[kb] = r_fin[n_run]
            first = fe_tail
            for i in range(b_lo[bi], b_hi[bi] + 1):
                if t_pieces[i] > 0:
                    t_pieces[i] -= 1
                    if t_pieces[i] == 0:
                        fe_kind[fe_tail] = _EGRESS_OK
                        fe_task[fe_tail] = i
                        fe_time[fe_tail] = now
                        fe_tail += 1
            # The batch's handler threads wake together and take the GIL in no set order, so
            # its answers leave in a random order (a FIFO here would keep a closed loop in
            # lockstep, every user at the same place in every batch, and its latencies equal).
            for k in range(fe_tail - 1, first, -1):
                shuffle = (shuffle * 1103515245 + 12345) & 0x7FFFFFFF
                j = first + shuffle % (k - first + 1)
                tmp = fe_task[k]
                fe_task[k] = fe_task[j]
                fe_task[j] = tmp
        # what == 0: the idle front end takes the arrival at the top of the loop
        # what == 3: a batch came due; the dispatch loop at the top takes it
    for i in range(n_tasks):
        if t0 <= t_send[i] < t1 and t_pieces[i] >= 0:
            counters[C_INCOMPLETE] += 1
    return n_tasks
