"""The discrete-event loop: one server, one batch queue, virtual time, compiled with numba.

Batch forming is not written here: admitting a task (``admit``), cutting it into pieces
(``open_share``, ``next_piece``), when the front batch is ready (``ready_time``), when an idle
thread takes it (``take_at``), the deadline rule (``batch_expired``) and padding
(``padded_size``) are ``harness.scheduler``'s own functions, compiled by numba from the same
source the reference server runs. This module only moves time forward and keeps the books.

What it cannot model it does not pretend to: it has one batch queue (one model version and
signature, as every experiment serves), so the server's round-robin across queues
(``pick_queue``) never comes into play, and ``harness.sim.model`` refuses a load that reaches
several queues. Deadlines are modelled: a request's deadline is its send time plus
``deadline_s`` (``math.inf``: none, what the simulated load has unless told otherwise).

``run`` takes three records: ``PARAMS`` (the config, the server model and the workload as plain
numbers, one structured numpy record), ``Buffers`` (the arrays: inputs, outputs and the
caller's workspace) and ``STATE`` (the loop's own scalars, so that each event handler is a
function of its own). A structured record rather than a jitclass: numba's cache cannot serve a
jitclass to a new process (every ``harness`` command would compile the kernel again), and it is
no faster (benchmarks/kernel_records.py).

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
from typing import NamedTuple

import numpy as np

from harness import scheduler as policy

try:
    import numba

    # ``_nrt=False``: no reference counting. The event handlers pass the Buffers and Views
    # (tuples of arrays) to one another, and numba increments and decrements every array's count
    # at each such call, atomics that made the loop ~20x slower than its own work (25 ms per
    # config instead of 1.3 ms, benchmarks/simulator_speed.py's configs). The kernel allocates
    # nothing (the caller owns every array), so it needs no counting; the option is numba's own
    # (CPUTargetOptions._nrt), used by its test suite.
    _OPTIONS = dict(cache=True, nogil=True, error_model="numpy", _nrt=False)

    def _jit(fn):
        return numba.njit(**_OPTIONS)(fn)

    def _handler(fn):
        # inlined into ``run`` where numba builds its IR, so that LLVM sees one loop
        return numba.njit(inline="always", **_OPTIONS)(fn)

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - the same code runs, only slower

    def _jit(fn):
        return fn

    _handler = _jit
    HAVE_NUMBA = False

_admit = _jit(policy.admit)
_open_share = _jit(policy.open_share)
_next_piece = _jit(policy.next_piece)
_ready_time = _jit(policy.ready_time)
_take_at = _jit(policy.take_at)
_batch_expired = _jit(policy.batch_expired)
_padded_size = _jit(policy.padded_size)

ADMIT_OK = policy.ADMIT_OK
ADMIT_OVERSIZE = policy.ADMIT_OVERSIZE
V_EXPIRED = 3  # trace verdict after ADMIT_OK/OVERSIZE/QUEUE_FULL: RESOURCE_EXHAUSTED in queue

# counters[] slots
(
    C_OK,
    C_ITEMS,
    C_OVERSIZE,
    C_QUEUE_FULL,
    C_SENT,
    C_BATCHES,
    C_TRUNCATED,
    C_INCOMPLETE,
    C_EXPIRED,
    C_WAKES,  # work in the window that found the front end idle and woke it (paid o_wake)
) = range(10)
N_COUNTERS = 10

# latency histogram: a float64's bits shifted right by this keep 7 mantissa bits (0.5% bins)
HIST_SHIFT = 45

# front-end work kinds
_INGRESS, _EGRESS_OK, _EGRESS_REJ, _GC = 0, 1, 2, 3
GC_REJECT_WEIGHT = 0.35  # a refused request leaves about a third of a served one's garbage

_I, _F = np.int64, np.float64
PARAMS = np.dtype(
    [
        # the batching config (TF Serving's meaning, defaults filled in)
        ("max_input", _I),  # max_batch_size
        ("max_exec", _I),  # max_execution_batch_size
        ("max_enqueued", _I),
        ("splitting", _I),  # enable_large_batch_splitting, 0 or 1
        ("timeout_s", _F),  # batch_timeout_micros / 1e6
        ("threads", _I),  # num_batch_threads
        # the server model (seconds of CPU; see the module docstring)
        ("cores", _F),
        ("o_in", _F),
        ("o_out", _F),
        ("o_rej", _F),
        ("o_wake", _F),
        ("rtt", _F),
        ("c_cli", _F),
        ("gc_every", _F),
        ("gc_s", _F),
        ("fe_weight", _F),
        # the workload
        ("closed", _I),  # 1: closed loop of ``users``; 0: open loop at ``arrivals``
        ("users", _I),
        ("deadline_s", _F),  # each request's deadline after its send time (inf: none)
        ("t0", _F),  # figures count requests sent in [t0, t1)
        ("t1", _F),
        ("t_end", _F),  # simulate until then
        ("n_cap", _I),  # request slots in the workspace
        ("hist_key0", _I),  # the latency histogram's first bin key
        ("trace", _I),  # 1: fill the trace arrays (tests; the figures do not need them)
    ]
)

STATE = np.dtype(
    [
        ("fe_idle_at", _F),  # when the front end last ran out of work
        ("cli_free", _F),  # closed loop: when the client is free to read the next answer
        ("garbage", _F),  # garbage promoted since the last full collection
        ("n_tasks", _I),
        ("ai", _I),  # open loop: the next arrival
        ("p_head", _I),  # closed loop: users ready to send, in time order, p_head..p_tail-1
        ("p_tail", _I),
        ("fe_head", _I),  # the front end's FIFO of answers and collections
        ("fe_tail", _I),
        ("cur_kind", _I),
        ("cur_task", _I),
        ("n_gc", _I),
        ("n_live", _I),  # requests inside the server (taken by the front end, not answered)
        ("shuffle", _I),  # the state of the answer-order shuffle (the same for every config)
        ("q_head", _I),  # the batch queue (only grows; q_head..q_tail-1 wait, the last is open)
        ("q_tail", _I),
        ("n_started", _I),
        ("n_traced", _I),
    ]
)


class Buffers(NamedTuple):
    """The kernel's arrays: inputs, outputs (zeroed by the caller) and workspace."""

    allowed: np.ndarray  # allowed_batch_sizes, ascending (empty: no padding)
    exec_table: np.ndarray  # padded batch size -> seconds of CPU
    exec_noise: np.ndarray  # factors, one per batch run, cycled
    arrivals: np.ndarray  # open loop: send times, ascending
    sizes: np.ndarray  # request sizes, cycled
    lat_hist: np.ndarray  # out: latency histogram of answered requests
    batch_hist: np.ndarray  # out: padded size -> batches started in the window
    counters: np.ndarray  # out: the C_ slots
    wf: np.ndarray  # float64 workspace (``workspace_size``)
    wi: np.ndarray  # int64 workspace
    trace_f: np.ndarray  # out with trace: per batch taken, its start time
    trace_i: np.ndarray  # out with trace: per batch taken, (size, padded, first, last, expired)
    trace_v: np.ndarray  # out with trace: per request, its verdict (ADMIT_*, V_EXPIRED; -1 none)
    r_batch: np.ndarray  # ``threads`` long: the running batches (workspace)
    r_fin: np.ndarray  # ``threads`` long: when each finishes, in virtual time (workspace)
    hist_f: np.ndarray  # one float64 and its int64 view: a latency's bits for its histogram bin
    hist_i: np.ndarray


class Views(NamedTuple):
    """Named slices of the workspace (see ``_views``)."""

    t_send: np.ndarray
    p_time: np.ndarray
    b_first: np.ndarray
    fe_time: np.ndarray
    t_size: np.ndarray
    t_pieces: np.ndarray  # >0: pieces still to run; -1: refused; -2: answered
    fe_kind: np.ndarray
    fe_task: np.ndarray
    b_size: np.ndarray
    b_lo: np.ndarray  # a batch's first and last request
    b_hi: np.ndarray


def new_state() -> np.ndarray:
    """A zeroed ``STATE`` record (a one-element array: ``run`` works on its element)."""
    return np.zeros(1, STATE)


@_handler
def _caps(n_cap, max_input, max_exec, splitting):
    """The front end's FIFO and the batch queue's lengths."""
    return 2 * n_cap + 1025, n_cap * (2 + (max_input // max_exec if splitting else 0)) + 1


@_jit
def workspace_size(n_cap, users, max_input, max_exec, splitting):
    """(float64, int64) workspace lengths ``run`` needs, and the most batches it can form."""
    fe_cap, b_cap = _caps(n_cap, max_input, max_exec, splitting)
    return 2 * n_cap + users + b_cap + fe_cap, 2 * n_cap + 2 * fe_cap + 3 * b_cap, b_cap


@_handler
def _views(p, b):
    """Every array lives in the caller's workspace (reused across configs: no allocation)."""
    n_cap, users = p.n_cap, p.users
    fe_cap, b_cap = _caps(n_cap, p.max_input, p.max_exec, p.splitting)
    wf, wi = b.wf, b.wi
    o = 2 * n_cap + 2 * fe_cap
    return Views(
        wf[:n_cap],
        wf[n_cap : 2 * n_cap + users],
        wf[2 * n_cap + users : 2 * n_cap + users + b_cap],
        wf[2 * n_cap + users + b_cap : 2 * n_cap + users + b_cap + fe_cap],
        wi[:n_cap],
        wi[n_cap : 2 * n_cap],
        wi[2 * n_cap : 2 * n_cap + fe_cap],
        wi[2 * n_cap + fe_cap : 2 * n_cap + 2 * fe_cap],
        wi[o : o + b_cap],
        wi[o + b_cap : o + 2 * b_cap],
        wi[o + 2 * b_cap : o + 3 * b_cap],
    )


@_jit
def run(params, b, state):
    """Simulate until ``t_end``; figures count requests sent in ``[t0, t1)``.

    ``params`` is a ``PARAMS`` record, ``b`` the ``Buffers``, ``state`` a zeroed ``STATE``
    record. Returns the number of requests simulated.
    """
    p = params[0]
    s = state[0]
    v = _views(p, b)
    _start(p, v, s)
    # What every event reads (time, the running batches, the front end's current work) stays
    # in locals handed to and returned by the handlers; the rest lives in ``s``. Kept in the
    # record, these made the loop 2-4% slower (benchmarks/kernel_records.py shows the kind: a
    # record field is memory that every array store may alias). Processor sharing in virtual
    # time: every busy participant (running batches, the front end) advances at the same rate,
    # so ``vt`` grows by dt * rate and each finishes at a fixed vt; ``fv`` is the front end's
    # own (its share differs from a batch's).
    now = 0.0
    vt = 0.0
    fv = 0.0
    n_run = 0  # running batches, packed in r_batch[0:n_run]
    fe_busy = 0
    fe_fin = 0.0  # the virtual time at which the front end's current work is done
    while True:
        n_run, due_next = _dispatch(p, b, v, s, now, vt, n_run)
        if fe_busy == 0:
            fe_busy, fe_fin = _front_end_pick(p, b, v, s, now, fv)
            if fe_busy < 0:
                b.counters[C_TRUNCATED] = 1
                break
        t_next, what, kb, rate, rate_fe = _next_event(
            p, b, v, s, now, vt, fv, due_next, n_run, fe_busy, fe_fin
        )
        if what < 0 or t_next > p.t_end:
            break
        dt = t_next - now
        if dt > 0.0:
            vt += dt * rate
            fv += dt * rate_fe
            now = t_next
        if what == 1:
            fe_busy, fe_fin = _front_end_done(p, b, v, s, now, fv)
        elif what == 2:
            n_run = _batch_done(b, v, s, kb, now, n_run)
        # what == 0: the idle front end takes the arrival at the top of the loop
        # what == 3: a batch came due; _dispatch at the top takes it
    for i in range(s.n_tasks):
        if p.t0 <= v.t_send[i] < p.t1 and v.t_pieces[i] >= 0:
            b.counters[C_INCOMPLETE] += 1
    return s.n_tasks


@_handler
def _start(p, v, s):
    """Time 0: a closed loop's users are all ready to send; nothing else has happened."""
    if p.closed:
        for _ in range(p.users):
            v.p_time[s.p_tail] = 0.0
            s.p_tail += 1
    s.fe_idle_at = -1.0
    s.shuffle = 20261123


@_handler
def _dispatch(p, b, v, s, now, vt, n_run):
    """Idle threads take ready batches (``take_at``); returns the running batches and when the
    next one comes due (``inf``: none, or no idle thread)."""
    while True:
        ready = math.inf
        if s.q_head < s.q_tail:
            qh = s.q_head
            ready = _ready_time(s.q_tail - qh, v.b_size[qh], v.b_first[qh], p.max_exec, p.timeout_s)
        at = _take_at(p.threads - n_run, ready, now)
        if at != now:
            return n_run, at
        bi = s.q_head
        s.q_head += 1
        padded = _padded_size(v.b_size[bi], b.allowed)
        expired = False
        if p.deadline_s != math.inf:
            # send times only grow with the request index: the batch's last request is the
            # one with the latest deadline
            expired = _batch_expired(v.t_send[v.b_hi[bi]] + p.deadline_s, now)
        if p.trace:
            _trace_batch(b, v, s, bi, padded, expired, now)
        if expired:
            _expire(p, b, v, s, bi, now)
            continue
        k = n_run
        b.r_batch[k] = bi
        b.r_fin[k] = vt + b.exec_table[padded] * b.exec_noise[s.n_started % len(b.exec_noise)]
        s.n_started += 1
        n_run += 1
        if p.t0 <= now < p.t1:
            b.counters[C_BATCHES] += 1
            b.batch_hist[min(padded, len(b.batch_hist) - 1)] += 1


@_handler
def _trace_batch(b, v, s, bi, padded, expired, now):
    k = s.n_traced
    s.n_traced += 1
    b.trace_f[k] = now
    b.trace_i[k, 0] = v.b_size[bi]
    b.trace_i[k, 1] = padded
    b.trace_i[k, 2] = v.b_lo[bi]
    b.trace_i[k, 3] = v.b_hi[bi]
    b.trace_i[k, 4] = 1 if expired else 0


@_handler
def _expire(p, b, v, s, bi, now):
    """Every request in the batch is past its deadline: each is answered RESOURCE_EXHAUSTED
    (queued for the front end) and the batch never runs."""
    for i in range(v.b_lo[bi], v.b_hi[bi] + 1):
        if v.t_pieces[i] > 0:
            v.t_pieces[i] = -1
            if p.t0 <= v.t_send[i] < p.t1:
                b.counters[C_EXPIRED] += 1
            if p.trace:
                b.trace_v[i] = V_EXPIRED
            _fe_queue(v, s, _EGRESS_REJ, i, now)


@_handler
def _fe_queue(v, s, kind, i, now):
    """Queue work for the front end, stamped with the time it was queued."""
    k = s.fe_tail
    v.fe_kind[k] = kind
    v.fe_task[k] = i
    v.fe_time[k] = now
    s.fe_tail += 1


@_handler
def _front_end_pick(p, b, v, s, now, fv):
    """The idle front end takes the oldest waiting work: an arrival (read straight from the
    arrival times, so an arrival is an event only when the front end is idle) or what its FIFO
    holds (answers and collections, each with the time it was queued). Returns (busy, when its
    work is done in its virtual time); busy -1: out of request slots."""
    t_arr = math.inf
    if p.closed:
        if s.p_head < s.p_tail:
            t_arr = v.p_time[s.p_head]
    elif s.ai < len(b.arrivals):
        t_arr = b.arrivals[s.ai]
    t_q = v.fe_time[s.fe_head] if s.fe_head < s.fe_tail else math.inf
    if t_q <= now and t_q <= t_arr:
        kind = v.fe_kind[s.fe_head]
        s.cur_kind = kind
        s.cur_task = v.fe_task[s.fe_head]
        s.fe_head += 1
        if kind == _EGRESS_OK:
            fin = fv + p.o_out
        elif kind == _EGRESS_REJ:
            fin = fv + p.o_rej
        else:
            fin = fv + p.gc_s
        if t_q > s.fe_idle_at:  # it came while the front end slept: wake it first
            fin += p.o_wake
            if p.t0 <= now < p.t1:
                b.counters[C_WAKES] += 1
        return 1, fin
    if t_arr <= now:
        if s.n_tasks >= p.n_cap:
            return -1, 0.0
        return 1, _take_arrival(p, b, v, s, t_arr, fv)
    return 0, 0.0


@_handler
def _take_arrival(p, b, v, s, t_arr, fv):
    i = s.n_tasks
    s.n_tasks += 1
    v.t_send[i] = t_arr
    v.t_size[i] = b.sizes[i % len(b.sizes)]
    v.t_pieces[i] = 0
    s.n_live += 1
    if p.closed:
        s.p_head += 1
    else:
        s.ai += 1
    if p.t0 <= t_arr < p.t1:
        b.counters[C_SENT] += 1
    s.cur_kind = _INGRESS
    s.cur_task = i
    fin = fv + p.o_in
    if t_arr > s.fe_idle_at:
        fin += p.o_wake
        if p.t0 <= t_arr < p.t1:
            b.counters[C_WAKES] += 1
    return fin


@_handler
def _next_event(p, b, v, s, now, vt, fv, due_next, n_run, fe_busy, fe_fin):
    """The next event: (time, what, running batch, rate of a batch, rate of the front end).

    what: 0 an arrival for the idle front end, 1 the front end's work is done, 2 running batch
    ``kb`` is done, 3 a batch comes due, -1 nothing will happen. The cores are shared: each
    running batch weighs 1, a busy front end ``fe_weight``.
    """
    cores = p.cores
    rate = 1.0
    rate_fe = 1.0
    if n_run + (1 if fe_busy else 0) > cores:
        if fe_busy:
            rate = cores / (n_run + p.fe_weight)
            rate_fe = p.fe_weight * rate
            if rate_fe > 1.0:
                rate_fe = 1.0
                rate = (cores - 1.0) / n_run
        else:
            rate = cores / n_run
    t_next = math.inf
    what = -1
    if fe_busy:
        t_next = now + (fe_fin - fv) / rate_fe
        what = 1
    elif p.closed:  # idle: it wakes for the next arrival (queued answers come with batch events)
        if s.p_head < s.p_tail:
            t_next = v.p_time[s.p_head]
            what = 0
    elif s.ai < len(b.arrivals):
        t_next = b.arrivals[s.ai]
        what = 0
    kb = -1
    for k in range(n_run):
        t = now + (b.r_fin[k] - vt) / rate
        if t < t_next:
            t_next = t
            what = 2
            kb = k
    if due_next < t_next:
        t_next = due_next
        what = 3
    return t_next, what, kb, rate, rate_fe


@_handler
def _front_end_done(p, b, v, s, now, fv):
    """The front end finished its piece of work: (busy, when done) for what it does next (a
    refusal is answered at once)."""
    s.fe_idle_at = now
    kind = s.cur_kind
    if kind == _INGRESS:
        return _ingress(p, b, v, s, s.cur_task, now, fv)
    if kind != _GC:
        _egress(p, b, v, s, kind, s.cur_task, now)
    return 0, 0.0


@_handler
def _ingress(p, b, v, s, i, now, fv):
    """A request reaches the batch queue: refused (answered at once, before anything queued),
    or cut into pieces that join the open batch and new ones."""
    size = v.t_size[i]
    has_open = s.q_head < s.q_tail
    last = s.q_tail - 1
    verdict, _, room = _admit(
        size,
        v.b_size[last] if has_open else 0,
        has_open,
        s.q_tail - s.q_head,
        p.max_input,
        p.max_exec,
        p.max_enqueued,
        p.splitting,
    )
    if p.trace:
        b.trace_v[i] = verdict
    if verdict != ADMIT_OK:
        v.t_pieces[i] = -1
        if p.t0 <= v.t_send[i] < p.t1:
            b.counters[C_OVERSIZE if verdict == ADMIT_OVERSIZE else C_QUEUE_FULL] += 1
        s.cur_kind = _EGRESS_REJ
        return 1, fv + p.o_rej
    share = _open_share(size, room, p.splitting)
    pieces = 0
    if share > 0:
        v.b_size[last] += share
        v.b_hi[last] = i
        pieces = 1
    start = share
    while start < size:
        rows = _next_piece(size - start, p.max_exec, p.splitting)
        q = s.q_tail
        v.b_size[q] = rows
        v.b_first[q] = now
        v.b_lo[q] = i
        v.b_hi[q] = i
        s.q_tail += 1
        start += rows
        pieces += 1
    v.t_pieces[i] = pieces
    return 0, 0.0


@_handler
def _egress(p, b, v, s, kind, i, now):
    """An answer (or a refusal) leaves the server; the client reads it."""
    # Python's full garbage collection: with TensorFlow loaded it walks every object (~0.2 s
    # here) holding the GIL, so the request path stalls for that long. What reaches the oldest
    # generation is what the younger collections find alive: the objects of the requests inside
    # the server, so each answer adds n_live.
    if p.gc_every > 0.0:
        s.garbage += s.n_live * (1.0 if kind == _EGRESS_OK else GC_REJECT_WEIGHT)
        if s.garbage >= p.gc_every and s.n_gc < 1024:
            s.garbage -= p.gc_every
            s.n_gc += 1
            _fe_queue(v, s, _GC, -1, now)
    s.n_live -= 1
    if p.closed:  # the client reads the answer when it is free, then sends again
        read = now + p.rtt
        if s.cli_free > read:
            read = s.cli_free
        read += p.c_cli
        s.cli_free = read
        v.p_time[s.p_tail] = read
        s.p_tail += 1
    else:
        read = now + p.rtt + p.c_cli
    if kind == _EGRESS_OK:
        v.t_pieces[i] = -2  # answered
        if p.t0 <= v.t_send[i] < p.t1:
            b.counters[C_OK] += 1
            b.counters[C_ITEMS] += v.t_size[i]
            b.hist_f[0] = read - v.t_send[i]
            k = (b.hist_i[0] >> HIST_SHIFT) - p.hist_key0
            b.lat_hist[min(max(k, 0), len(b.lat_hist) - 1)] += 1


@_handler
def _batch_done(b, v, s, kb, now, n_run):
    """Running batch ``kb`` finished: the requests it completed queue for their answers.
    Returns the running batches left."""
    bi = b.r_batch[kb]
    n_run -= 1
    b.r_batch[kb] = b.r_batch[n_run]
    b.r_fin[kb] = b.r_fin[n_run]
    first = s.fe_tail
    for i in range(v.b_lo[bi], v.b_hi[bi] + 1):
        if v.t_pieces[i] > 0:
            v.t_pieces[i] -= 1
            if v.t_pieces[i] == 0:
                _fe_queue(v, s, _EGRESS_OK, i, now)
    # The batch's handler threads wake together and take the GIL in no set order, so its
    # answers leave in a random order (a FIFO here would keep a closed loop in lockstep, every
    # user at the same place in every batch, and its latencies equal).
    for k in range(s.fe_tail - 1, first, -1):
        s.shuffle = (s.shuffle * 1103515245 + 12345) & 0x7FFFFFFF
        j = first + s.shuffle % (k - first + 1)
        tmp = v.fe_task[k]
        v.fe_task[k] = v.fe_task[j]
        v.fe_task[j] = tmp
    return n_run
