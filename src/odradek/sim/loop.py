"""An asyncio event loop on one thread with virtual time and no real I/O.

:class:`SimLoop` is asyncio's own ``BaseEventLoop`` (so ready callbacks run in FIFO order and
timers in order of their deadline, ties in the order they were scheduled) with three changes:

- **Time is virtual.** ``loop.time()`` reads a number that moves only when nothing is runnable:
  where a real loop would block in ``select`` until the next timer, this one jumps to it. A
  broker's 30-second timeout costs nothing but the callbacks it runs. When nothing is runnable
  and no timer is set, every task waits on something that will never come: :class:`Stalled`.
- **Sockets are simulated.** ``create_server`` and ``create_connection`` (and so
  ``asyncio.open_connection``) go to the :class:`~odradek.sim.network.SimNetwork`, which carries
  bytes between in-memory transports with the delays and faults its seed chooses.
- **Processes can be stopped** (SIGSTOP): :meth:`SimLoop.pause` holds every callback that
  would run in the process's context (its tasks' steps and timers, the bytes arriving on its
  connections) until :meth:`SimLoop.resume`.
- **No threads.** ``run_in_executor`` (and so ``asyncio.to_thread``) runs the function inline
  and returns a finished future; ``sendfile`` is unsupported, so a broker sends file slices as
  bytes (its fallback for in-memory transports).

Which simulated process a task belongs to is the :data:`current_node` context variable: a task
inherits its creator's context, so every task a broker starts belongs to that broker's
:class:`Incarnation`, which is what a crash cancels and what the network and the store refuse
once it is dead.

Owned by the thread that runs it; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from odradek.sim.network import SimNetwork

__all__ = ["Incarnation", "SimLoop", "Stalled", "current_node"]

_T = TypeVar("_T")

#: Where the virtual clock starts (seconds): far from zero, as a real monotonic clock is.
START_TIME_S = 10_000.0


class Stalled(RuntimeError):
    """Nothing can ever run again: no ready callback, no timer."""


@dataclass(eq=False)
class Incarnation:
    """One life of a simulated process (a broker between its start and its crash, a client).
    ``alive`` turns false at a crash; whatever its leftover tasks still try to send or ask the
    store is then refused."""

    node: str
    generation: int = 0
    alive: bool = True
    tasks: dict[int, asyncio.Task[Any]] = field(default_factory=dict)
    #: Stopped (SIGSTOP): its callbacks are held, in order, until :meth:`SimLoop.resume`.
    paused: bool = False
    held: list[asyncio.Handle] = field(default_factory=list)

    def __repr__(self) -> str:
        state = "" if self.alive else " dead"
        return f"<{self.node}#{self.generation}{state}{' paused' if self.paused else ''}>"


#: The simulated process the running code belongs to (None: the simulation itself).
current_node: contextvars.ContextVar[Incarnation | None] = contextvars.ContextVar(
    "odradek_sim_node", default=None
)


class _VirtualSelector:
    """What BaseEventLoop polls for I/O: there is none, so a poll with a timeout is a jump of the
    virtual clock to the next timer."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Stalled("nothing is runnable and no timer is set")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class SimLoop(asyncio.BaseEventLoop):
    """See the module docstring. ``network`` is attached by the simulation after creation."""

    def __init__(self) -> None:
        super().__init__()
        self._now = START_TIME_S
        self._selector = _VirtualSelector(self)
        self.network: SimNetwork | None = None
        self.set_task_factory(_track_task)  # type: ignore[arg-type]

    # -- time -----------------------------------------------------------------------------------

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    # -- what BaseEventLoop leaves to its subclasses ----------------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # one thread: nobody needs waking

    def close(self) -> None:
        super().close()
        self._selector.close()

    # -- no threads -----------------------------------------------------------------------------

    # -- stopped processes (SIGSTOP) ------------------------------------------------------------
    #
    # Every callback runs through _gate, which holds it when the process whose context it runs
    # in is paused: a task's steps, its timers, the bytes arriving on its connections, the
    # futures it waits for. Resuming puts the held callbacks back in the order they came.

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = super().call_soon(_gate, context=context)  # type: ignore[arg-type]
        handle._args = (handle, callback, args)  # type: ignore[attr-defined]
        return handle

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, _gate, context=context)  # type: ignore[arg-type]
        handle._args = (handle, callback, args)  # type: ignore[attr-defined]
        return handle

    def pause(self, incarnation: Incarnation) -> None:
        """Stop ``incarnation``: nothing of it runs until :meth:`resume`."""
        incarnation.paused = True

    def resume(self, incarnation: Incarnation) -> None:
        """Let ``incarnation`` run again: what it was held from runs next, in order (unless
        cancelled meanwhile)."""
        incarnation.paused = False
        held, incarnation.held = incarnation.held, []
        self._ready.extend(h for h in held if not h.cancelled())  # type: ignore[attr-defined]

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        future: asyncio.Future[_T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as e:  # handed to the awaiting task, as an executor would
            future.set_exception(e)
        return future

    def set_default_executor(self, executor: concurrent.futures.Executor) -> None:
        raise RuntimeError("the simulation runs no threads")

    async def sendfile(self, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        raise RuntimeError("simulated transports do not sendfile")

    # -- the simulated network ------------------------------------------------------------------

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
        port: Any = None, *, start_serving: bool = True, **_: Any,
    ) -> asyncio.AbstractServer:
        assert self.network is not None, "no simulated network attached"
        return self.network.listen(protocol_factory, host, port, start_serving=start_serving)

    async def create_connection(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: Any = None,
        port: Any = None, **_: Any,
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        assert self.network is not None, "no simulated network attached"
        return await self.network.connect(protocol_factory, str(host), int(port))

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the simulation resolves no names")

    def run(self, main: Coroutine[Any, Any, _T]) -> _T:
        """Run ``main`` to completion, then cancel whatever is left and close the loop."""
        asyncio.set_event_loop(self)
        try:
            return self.run_until_complete(main)
        finally:
            try:
                leftover = [t for t in asyncio.all_tasks(self) if not t.done()]
                leftover.sort(key=lambda t: t.get_name())
                for task in leftover:
                    task.cancel()
                if leftover:
                    self.run_until_complete(
                        asyncio.gather(*leftover, return_exceptions=True)
                    )
                self.run_until_complete(self.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                self.close()


def _gate(handle: asyncio.Handle, callback: Callable[..., object], args: tuple[Any, ...]
          ) -> None:
    """Run a callback, or hold it while its process is paused (see ``SimLoop.call_soon``)."""
    node = current_node.get()
    if node is not None and node.paused:
        node.held.append(handle)
        return
    callback(*args)


def _track_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context | None = None,
) -> asyncio.Task[Any]:
    """The loop's task factory: a task joins the incarnation of the context it runs in."""
    task = asyncio.Task(coro, loop=loop, context=context)
    owner = context.get(current_node) if context is not None else current_node.get()
    if owner is not None:
        if not owner.alive:
            # A dead process starts nothing: the task is cancelled before its first step.
            task.cancel()
        key = id(task)
        owner.tasks[key] = task
        task.add_done_callback(lambda _t: owner.tasks.pop(key, None))
    return task
