# cython: language_level=3
"""Compiled mailbox of the in-memory loopback transport (same API as
:mod:`qkdpp.protocol._loopback_ref`): a deque plus a POSIX semaphore counting the items the
receiver has been told about.

Why: two threads of one process exchanging a request and its reply pay for each message a wake-up
of the receiver, which then usually waits a second time, for the GIL the sender still holds.
``put_deferred`` appends without waking; the wake-up is posted by the sender's next ``get`` (or
``put``, ``flush``) *after it has released the GIL* to wait for the answer, so the receiver
wakes once and finds the GIL free. PeerLink defers only the request of
:meth:`~qkdpp.protocol.link.PeerScope.request`, which is always followed by that wait, and flushes
if the wait is never reached (an exception). Order is the deque's: deferral delays the wake-up, it
never reorders or drops messages.

Timeouts use ``CLOCK_MONOTONIC`` (``sem_clockwait``); a wait interrupted by a signal runs the
Python signal handlers (which may raise, e.g. KeyboardInterrupt) and resumes.
"""

import queue
from collections import deque

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, ETIMEDOUT, errno
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef extern from "<semaphore.h>" nogil:
    ctypedef struct sem_t:
        pass
    int sem_init(sem_t* sem, int pshared, unsigned int value)
    int sem_destroy(sem_t* sem)
    int sem_post(sem_t* sem)
    int sem_wait(sem_t* sem)
    int sem_trywait(sem_t* sem)
    int sem_clockwait(sem_t* sem, int clockid, const timespec* abstime)


cdef class Mailbox:
    """FIFO of messages between two threads; ``get`` raises ``queue.Empty`` on timeout."""

    cdef object _items
    cdef sem_t _sem
    cdef Py_ssize_t _pending  # items appended whose wake-up is not posted yet
    cdef bint _ready

    def __cinit__(self):
        self._items = deque()
        self._pending = 0
        self._ready = False
        if sem_init(&self._sem, 0, 0) != 0:
            raise OSError(errno, "sem_init failed")
        self._ready = True

    def __dealloc__(self):
        if self._ready:
            sem_destroy(&self._sem)

    def put(self, item):
        """Append ``item`` and wake the receiver (with any deferred wake-ups)."""
        self._items.append(item)
        self._pending += 1
        self._post()

    def put_deferred(self, item):
        """Append ``item``; the receiver is woken by the next ``get(flush=self)``, ``put`` or
        ``flush``."""
        self._items.append(item)
        self._pending += 1

    def flush(self):
        """Post the deferred wake-ups now."""
        self._post()

    cdef void _post(self) noexcept:
        cdef Py_ssize_t n = self._pending
        self._pending = 0
        while n > 0:
            sem_post(&self._sem)
            n -= 1

    def get(self, timeout, Mailbox flush=None):
        """Next item, waiting up to ``timeout`` s (None: forever); ``queue.Empty`` after that.

        ``flush`` (the caller's outgoing mailbox) has its deferred wake-ups posted once the GIL is
        released, just before waiting.
        """
        cdef Py_ssize_t n = 0
        cdef sem_t* other = NULL
        cdef bint forever = timeout is None
        cdef double t = 0.0 if forever else timeout
        cdef timespec deadline
        cdef int rc, err
        if flush is not None and flush._pending:
            n = flush._pending
            flush._pending = 0
            other = &flush._sem
        elif sem_trywait(&self._sem) == 0:  # already there: no GIL release needed
            return self._items.popleft()
        if not forever:
            if t != t:
                raise ValueError("timeout is NaN")
            if t > 1e9:  # ~32 years: wait forever (and keep the deadline arithmetic in range)
                forever = True
            elif t < 0.0:
                t = 0.0
        if not forever:
            clock_gettime(CLOCK_MONOTONIC, &deadline)
            deadline.tv_sec += <long>t
            deadline.tv_nsec += <long>((t - <long>t) * 1e9)
            if deadline.tv_nsec >= 1000000000:
                deadline.tv_sec += 1
                deadline.tv_nsec -= 1000000000
        while True:
            with nogil:
                while n > 0:
                    sem_post(other)
                    n -= 1
                if forever:
                    rc = sem_wait(&self._sem)
                else:
                    rc = sem_clockwait(&self._sem, CLOCK_MONOTONIC, &deadline)
                err = errno if rc != 0 else 0
            if rc == 0:
                return self._items.popleft()
            if err == EINTR:
                PyErr_CheckSignals()  # run the handlers (may raise); then wait on
                continue
            if err == ETIMEDOUT:
                raise queue.Empty
            raise OSError(err, "waiting on the loopback semaphore failed")
